"""The per-task evaluation runner: padding ignored, decoded metrics exact,
teacher-forced ratios, samples, aggregation over tasks, sample files."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mm_jax
from mm_jax import config as base
from mm_jax import contract
from mm_jax.data import registry
from mm_jax.eval import decode
from mm_jax.eval import evaluate
from mm_jax.eval import metrics

V = 64


class WordVocab:
  """Id i <-> word 'w<i>'; decode stops at EOS and skips padding."""

  def decode(self, ids):
    out = []
    for i in np.asarray(ids).ravel().tolist():
      if i == contract.EOS_ID:
        break
      if i:
        out.append(f'w{i}')
    return ' '.join(out)


def _no_data(split, data_cfg):
  raise AssertionError('evaluation must not read the registry sources')


def _task(name, output='text', metric_names=None, input_modality='text'):
  if metric_names is None:
    metric_names = (('token_accuracy', 'log_ppl', 'bleu', 'wer',
                     'sequence_accuracy') if output == 'text'
                    else ('top1', 'top5', 'log_ppl'))
  return registry.Task(
      name=name, input_modality=input_modality, output_modality=output,
      target_space='en' if output == 'text' else None,
      sources={'tiny': _no_data}, metrics=metric_names)


def _eval_cfg(**overrides):
  cfg = base.eval_config('tiny')
  cfg.update(dict(beam_size=2, max_decode_length=8, num_samples=4,
                  max_batches=0) | overrides)
  return cfg


def _text_batch(rs, real, size, garbage=True, length=6):
  """A text batch with ``real`` examples then padding slots."""
  inputs = rs.randint(2, V, (size, length)).astype(np.int32)
  targets = rs.randint(2, V, (size, length)).astype(np.int32)
  targets[:, -1] = contract.EOS_ID
  mask = np.arange(size) < real
  if not garbage:                      # the pipeline's padding: all zeros
    inputs[~mask], targets[~mask] = 0, 0
  vocab = WordVocab()
  return {'inputs': inputs, 'targets': targets,
          'target_space': np.ones((size,), np.int32), 'example_mask': mask,
          'references': [[vocab.decode(t)] if m else []
                         for t, m in zip(targets, mask)]}


# --------------------------------------------- runner with fake functions --


def _fake_step(params, batch):
  """Sums like eval_step: masked, one mistake per real example."""
  assert 'references' not in batch        # host keys stay on the host
  real = np.asarray(batch['example_mask'])
  tokens = ((np.asarray(batch['targets']) != 0) & real[:, None]).sum()
  return {'loss_sum': 0.5 * tokens, 'token_correct': tokens - real.sum(),
          'tokens': tokens, 'examples': real.sum(),
          'sequence_correct': 0.0}


def _fake_decode(params, batch, wrong=(0,)):
  """Best beam = the targets on real rows (but row ``wrong``: one word
  changed); junk on padding rows and on the second beam."""
  targets = np.asarray(batch['targets'])
  junk = np.full_like(targets, 7)
  best = np.where(np.asarray(batch['example_mask'])[:, None], targets, junk)
  best = best.copy()
  for j in wrong:
    best[j, 0] = 3 if best[j, 0] != 3 else 4
  ids = np.stack([best, junk], axis=1)                       # [B, 2, T]
  return ids, np.tile([[-0.5, -3.0]], (len(targets), 1))


def test_padding_is_ignored_and_decoded_metrics_are_exact():
  rs = np.random.RandomState(0)
  batches = [_text_batch(rs, 3, 3), _text_batch(rs, 2, 3)]
  values, samples = evaluate.evaluate_task(
      None, None, _task('fake_text'), batches, WordVocab(), _eval_cfg(),
      _fake_step, decode_fn=_fake_decode)
  vocab = WordVocab()
  hyps, refs = [], []
  for batch in batches:
    ids, _ = _fake_decode(None, batch)
    for j in np.flatnonzero(batch['example_mask']):
      hyps.append(vocab.decode(ids[j, 0]))
      refs.append(batch['references'][j])
  assert len(hyps) == 5
  assert values['examples'] == 5
  assert values['bleu'] == pytest.approx(metrics.bleu(hyps, refs))
  # Rows 0 of each batch have one substituted word out of 5 + 5 real ones.
  words = sum(len(r[0].split()) for r in refs)
  assert values['wer'] == pytest.approx(2 / words)
  assert values['sequence_accuracy'] == pytest.approx(3 / 5)
  assert values['sequence_accuracy_tf'] == 0.0
  assert values['token_accuracy'] == pytest.approx((words + 5 - 5) /
                                                   (words + 5))
  assert values['log_ppl'] == pytest.approx(0.5)
  assert len(samples) == 4
  assert samples[0]['hypothesis'] == hyps[0]
  assert samples[3]['references'] == refs[3]
  assert samples[3]['beams'][1] == 'w7 w7 w7 w7 w7 w7'
  assert samples[0]['input'] == vocab.decode(batches[0]['inputs'][0])
  assert samples[0]['score'] == -0.5


def test_max_batches_and_zero_samples():
  rs = np.random.RandomState(1)
  batches = [_text_batch(rs, 3, 3), _text_batch(rs, 3, 3)]
  values, samples = evaluate.evaluate_task(
      None, None, _task('fake_text'), batches, WordVocab(),
      _eval_cfg(max_batches=1, num_samples=0), _fake_step,
      decode_fn=_fake_decode)
  assert values['examples'] == 3 and samples == []


def test_teacher_forced_only_task_does_not_decode():
  def fail(params, batch):
    raise AssertionError('decoded without a decoded metric or samples')
  rs = np.random.RandomState(2)
  values, _ = evaluate.evaluate_task(
      None, None, _task('tf_only', metric_names=('token_accuracy',)),
      [_text_batch(rs, 2, 3)], WordVocab(), _eval_cfg(num_samples=0),
      _fake_step, decode_fn=fail)
  assert set(values) == {'examples', 'token_accuracy'}


def _class_step(params, batch):
  real = np.asarray(batch['example_mask'])
  return {'loss_sum': 2.0 * real.sum(), 'top1_correct': 1.0,
          'top5_correct': real.sum(), 'examples': real.sum(),
          'tokens': real.sum()}


def _class_decode(params, batch):
  b = len(batch['targets'])
  return np.tile(np.arange(5), (b, 1)), np.full((b, 5), -1.0)


def _image_batch(real, size):
  return {'inputs': np.zeros((size, 8, 8, 3), np.float32),
          'targets': np.arange(size, dtype=np.int32),
          'example_mask': np.arange(size) < real}


def test_class_task_metrics_and_samples():
  task = _task('fake_images', output='class', input_modality='image')
  values, samples = evaluate.evaluate_task(
      None, None, task, [_image_batch(4, 4), _image_batch(1, 4)], WordVocab(),
      _eval_cfg(num_samples=6), _class_step, decode_fn=_class_decode)
  assert values == {'examples': 5, 'top1': pytest.approx(2 / 5),
                    'top5': 1.0, 'log_ppl': pytest.approx(2.0)}
  assert len(samples) == 5
  assert samples[4] == {'index': 4, 'input': 'image 8x8', 'reference': 0,
                        'hypothesis': 0, 'score': -1.0,
                        'top_k': [0, 1, 2, 3, 4]}


def test_bad_task_metrics_are_refused():
  with pytest.raises(ValueError, match='unknown metrics'):
    evaluate.evaluate_task(None, None, _task('x', metric_names=('rouge',)),
                           [], WordVocab(), _eval_cfg(), _fake_step)
  task = _task('y', output='class', input_modality='image',
               metric_names=('bleu',))
  with pytest.raises(ValueError, match='need text output'):
    evaluate.evaluate_task(None, None, task, [], WordVocab(), _eval_cfg(),
                           _class_step)


def test_evaluate_all_prefixes_and_averages():
  rs = np.random.RandomState(3)
  tasks = {'a_text': _task('a_text'),
           'b_images': _task('b_images', output='class',
                             input_modality='image')}
  flat, samples = evaluate.evaluate_all(
      None, None, {'a_text': [_text_batch(rs, 2, 3)],
                   'b_images': [_image_batch(3, 4)]},
      WordVocab(), _eval_cfg(num_samples=1),
      {'a_text': _fake_step, 'b_images': _class_step},
      decode_fns={'a_text': _fake_decode, 'b_images': _class_decode},
      tasks=tasks)
  assert flat['a_text/log_ppl'] == pytest.approx(0.5)
  assert flat['b_images/log_ppl'] == pytest.approx(2.0)
  assert flat['mean/log_ppl'] == pytest.approx(1.25)
  assert flat['mean/bleu'] == flat['a_text/bleu']
  assert flat['b_images/eval_seconds'] >= 0
  assert 'mean/examples' not in flat and 'mean/eval_seconds' not in flat
  assert {t: len(s) for t, s in samples.items()} == {'a_text': 1,
                                                     'b_images': 1}


def test_write_samples_as_json_lines(tmp_path):
  samples = [{'index': 0, 'input': 'Grüße', 'hypothesis': 'ça va'},
             {'index': 1, 'input': 'image 8x8', 'hypothesis': 3}]
  path = evaluate.write_samples(str(tmp_path), 1200, 'translate_de_fr',
                                samples)
  assert path == str(tmp_path / 'samples' / 'step_1200' /
                     'translate_de_fr.jsonl')
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines()
  assert [json.loads(line) for line in lines] == samples
  assert 'Grüße' in lines[0]


# ------------------------------------------------- runner with the model --


@pytest.fixture(scope='module')
def tiny():
  config = base.get_config('tiny')
  m = config.model
  m.d_model, m.vocab_size, m.num_heads = 32, V, 4
  m.encoder_conv = m.decoder_conv = ((3, 1), (7, 1))
  m.moe.num_experts, m.moe.hidden = 4, 64
  m.num_encoder_blocks_before_moe, m.num_encoder_blocks_after_moe = 1, 0
  m.num_decoder_blocks_before_moe, m.num_decoder_blocks_after_moe = 1, 0
  model = mm_jax.create_model(config)
  variables = mm_jax.init_variables(model, jax.random.key(1),
                                    paths=(('text', 'text'),))
  return model, nn.unbox(variables['params'])


@functools.partial(jax.jit, static_argnums=0)
def _model_step(model, params, batch):
  """A local eval step: masked sums without label smoothing."""
  logits, _ = model.apply({'params': params}, batch, input_modality='text',
                          output_modality='text', mutable=['moe'])
  targets, real = batch['targets'], batch['example_mask']
  weights = (targets != 0) & real[:, None]
  logp = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(logits, axis=-1) == targets) & weights
  return {'loss_sum': (nll * weights).sum(), 'token_correct': correct.sum(),
          'tokens': weights.sum(), 'examples': real.sum(),
          'sequence_correct': ((correct | ~weights).all(axis=1) & real).sum()}


def test_model_evaluation_ignores_padding_and_matches_direct_decoding(tiny):
  model, params = tiny
  task, cfg = _task('model_text'), _eval_cfg(num_samples=3)
  step = functools.partial(_model_step, model)

  def run(garbage):
    rs = np.random.RandomState(4)
    batches = [_text_batch(rs, 4, 4), _text_batch(rs, 2, 4, garbage)]
    return batches, evaluate.evaluate_task(model, params, task, batches,
                                           WordVocab(), cfg, step)

  batches, (values, samples) = run(garbage=True)
  _, (clean, _) = run(garbage=False)
  assert values == pytest.approx(clean)
  assert values['examples'] == 6
  assert 0 <= values['token_accuracy'] <= 1 and values['log_ppl'] > 0
  hyps, refs = [], []
  for batch in batches:
    ids, _ = decode.beam_search(model, params, batch, input_modality='text',
                                beam_size=2, length_penalty=0.6,
                                max_length=8)
    for j in np.flatnonzero(batch['example_mask']):
      hyps.append(WordVocab().decode(ids[j, 0]))
      refs.append(batch['references'][j])
  assert values['bleu'] == pytest.approx(metrics.bleu(hyps, refs))
  assert values['wer'] == pytest.approx(
      metrics.wer(hyps, [r[0] for r in refs]))
  assert [s['hypothesis'] for s in samples] == hyps[:3]
  assert len(samples[0]['beams']) == 2
