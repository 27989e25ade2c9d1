"""Inference from Python and the command line (mm_jax/inference/,
launch/predict.py) on a small randomly initialised model saved with the
training Checkpointer: shapes, types, bucketing, errors; not quality."""

import json
import logging
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mm_jax
from mm_jax import config as base
from mm_jax.eval import decode
from mm_jax import sharding
from mm_jax.data.tiny import vision
from mm_jax.data import vocab as vocab_lib
from mm_jax.inference import inputs as inputs_lib
from mm_jax.inference import loading
from mm_jax.train import checkpoint
from mm_jax.train import optim
from mm_jax.train import state as state_lib
from test_checkpoint import asyncio_noise  # pylint: disable=unused-import
from test_checkpoint import DAMAGE_KINDS
from test_checkpoint import damage_checkpoint
from test_checkpoint import damage_warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREES = ['(S (NP XX XX /NP (VP XX (NP XX XX /NP /VP XX /S',
         '(S (NP XX /NP (VP XX /VP XX /S']
WORDS = ('the red cat sees a big dog on the mat . die rote Katze sieht '
         'einen großen Hund auf der Matte . le chat rouge voit un grand '
         'chien sur le tapis').split()


def _train_vocab(path, seed=0):
  rng = np.random.default_rng(seed)
  corpus = [' '.join(rng.choice(WORDS, int(rng.integers(3, 12))))
            for _ in range(300)] + TREES * 20
  symbols = sorted(set().union(*map(vocab_lib.tree_symbols, TREES)))
  proto = vocab_lib.train(corpus, 120, symbols + vocab_lib.task_tokens())
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(proto)
  return vocab_lib.Vocabulary.load(path)


def small_config(vocab_size):
  """d 32, one two-step ConvBlock per side, 4 experts, 32-pixel images."""
  config = base.get_config('tiny')
  m = config.model
  m.encoder_conv = m.decoder_conv = ((3, 1), (7, 1))
  m.d_model, m.vocab_size, m.num_heads = 32, vocab_size, 4
  m.moe.num_experts, m.moe.hidden = 4, 64
  m.num_encoder_blocks_before_moe, m.num_encoder_blocks_after_moe = 1, 0
  m.num_decoder_blocks_before_moe, m.num_decoder_blocks_after_moe = 1, 0
  m.image_entry_filters = (8, 16, 32, 32)
  d = config.data
  d.image_size = 32
  d.length_buckets, d.max_input_length, d.max_target_length = (8, 16), 16, 16
  d.audio_frame_buckets, d.audio_max_frames = (32, 64), 64
  config.eval.max_decode_length = 6
  config.eval.batch_size = 8
  return config


def random_state(config, model, seed):
  """A TrainState with random parameters (no compilation: a fast fixture;
  ``test_real_train_state_roundtrip`` covers create_train_state)."""
  abstract = nn.unbox(mm_jax.abstract_variables(model)['params'])
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda a: jnp.asarray(
      rng.normal(0.0, 0.2, a.shape), a.dtype), abstract)
  tx = optim.make_optimizer(config.train, config.model.d_model)[0]
  return state_lib.TrainState(
      step=jnp.int32(seed), params=params, opt_state=tx.init(params),
      rng=jax.random.key_data(jax.random.key(seed)))


def save(workdir, step, state, config, vocab, meta=None):
  """A checkpoint with ``meta`` (default: the tiny suite's, as training)."""
  meta = meta or checkpoint.make_meta(config, vocab, vision.CLASS_NAMES)
  with checkpoint.Checkpointer(str(workdir), keep=5, every=1) as ckpt:
    assert ckpt.save(step, state, None, meta)
    ckpt.wait()


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A work directory with checkpoints at steps 1 and 2."""
  root = tmp_path_factory.mktemp('predict')
  vocab = _train_vocab(str(root / 'data' / 'spm.model'))
  config = small_config(vocab.size)
  model = mm_jax.create_model(config)
  states = {s: random_state(config, model, s) for s in (1, 2)}
  for step, st in states.items():
    save(root / 'run', step, st, config, vocab)
  return {'workdir': str(root / 'run'), 'root': root, 'config': config,
          'vocab': vocab, 'states': states}


@pytest.fixture(scope='module')
def predictor(run):
  return mm_jax.load(run['workdir'])


def _image(seed, shape=(40, 50, 3)):
  return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


# ------------------------------------------------------------------ load --

def test_load_latest_config_and_vocab(run, predictor):
  assert predictor.step == 2
  assert predictor.vocab.sha256 == run['vocab'].sha256
  assert predictor.config.to_json_best_effort() == (
      run['config'].to_json_best_effort())
  assert predictor.config.model.encoder_conv == ((3, 1), (7, 1))
  assert predictor.config.data.length_buckets == (8, 16)
  want = run['states'][2].params
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b),
               predictor.params, want)
  leaf = jax.tree.leaves(predictor.params)[0]
  assert leaf.sharding.is_fully_replicated and len(leaf.devices()) == 1
  assert predictor.class_names == vision.CLASS_NAMES    # from the meta


def test_checkpoint_without_class_names_numbers_the_classes(run, tmp_path,
                                                            caplog):
  """A checkpoint from before class names were stored loads; its classes
  are 'class_<i>', with one warning."""
  meta = checkpoint.make_meta(run['config'], run['vocab'])
  del meta['class_names']
  save(tmp_path, 1, run['states'][1], run['config'], run['vocab'], meta)
  caplog.set_level(logging.WARNING)
  old = mm_jax.load(str(tmp_path))
  assert old.class_names == tuple(f'class_{i}' for i in range(48))
  (warning,) = [r.getMessage() for r in caplog.records
                if 'class names' in r.getMessage()]
  assert warning.startswith('The checkpoint predates stored class names')


def test_load_chosen_step(run):
  p = mm_jax.load(run['workdir'], step=1)
  assert p.step == 1
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b),
               p.params, run['states'][1].params)


def test_unknown_step_lists_available(run):
  with pytest.raises(ValueError, match=r'step 7.*available steps: \[1, 2\]'):
    mm_jax.load(run['workdir'], step=7)


def test_no_checkpoint_says_where_it_looked(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=f'No finalised checkpoint in {tmp_path}/'
                     'checkpoints'):
    mm_jax.load(str(tmp_path))


def test_missing_vocabulary_names_the_file(run):
  path = run['vocab'].path
  moved = str(run['root'] / 'elsewhere.model')
  shutil.move(path, moved)
  try:
    with pytest.raises(FileNotFoundError, match=f'vocabulary {path} .*does '
                       'not exist'):
      mm_jax.load(run['workdir'])
    p = mm_jax.load(run['workdir'], vocab_path=moved)   # a moved copy works
    assert p.vocab.sha256 == run['vocab'].sha256
  finally:
    shutil.move(moved, path)


def test_vocabulary_with_another_sha_is_refused(run):
  other = _train_vocab(str(run['root'] / 'other' / 'spm.model'), seed=5)
  assert other.sha256 != run['vocab'].sha256
  with pytest.raises(ValueError, match='sha256 .*token ids would not match'):
    mm_jax.load(run['workdir'], vocab_path=other.path)


def test_load_leaves_the_compilation_cache_setting_alone(run):
  before = jax.config.jax_compilation_cache_dir
  config = run['config'].copy_and_resolve_references()
  config.compilation_cache_dir = '/tmp/mm_jax_not_this_cache'
  mm_jax.load(run['workdir'], config=config)
  assert jax.config.jax_compilation_cache_dir == before


@pytest.mark.parametrize('kind', DAMAGE_KINDS)
def test_damaged_newest_checkpoint_loads_the_previous(run, tmp_path, caplog,
                                                       asyncio_noise, kind):
  workdir = str(tmp_path / 'run')
  shutil.copytree(run['workdir'], workdir)
  root = os.path.join(workdir, 'checkpoints')
  damage_checkpoint(os.path.join(root, '2'), kind)
  caplog.set_level(logging.WARNING)
  p = mm_jax.load(workdir)
  assert p.step == 1
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b),
               p.params, run['states'][1].params)
  (warning,) = damage_warnings(caplog)
  assert 'step 2 is damaged' in warning and 'leaving it in place' in warning
  # Loading only reads: the damaged checkpoint stays where it was.
  assert sorted(os.listdir(root)) == ['1', '2']
  assert loading.available_steps(workdir) == [1, 2]
  assert not asyncio_noise()


def test_damaged_chosen_step_fails_naming_the_others_and_all_damaged(
    run, tmp_path, asyncio_noise):
  workdir = str(tmp_path / 'run')
  shutil.copytree(run['workdir'], workdir)
  damage_checkpoint(os.path.join(workdir, 'checkpoints', '2'), 'truncated')
  with pytest.raises(ValueError) as error:
    mm_jax.load(workdir, step=2)
  message = str(error.value)
  assert len(message.splitlines()) == 1 and error.value.__cause__ is None
  assert message.startswith('Checkpoint step 2 in ')
  assert 'is damaged (ValueError: OUT_OF_RANGE' in message
  assert message.endswith('load(workdir, step=...) with one of [1].')
  assert loading.available_steps(workdir) == [1, 2]    # nothing moved
  assert not asyncio_noise()
  damage_checkpoint(os.path.join(workdir, 'checkpoints', '1'), 'garbled_json')
  with pytest.raises(FileNotFoundError, match=r'No loadable checkpoint in '
                     r'.*: every one \(\[1, 2\]\) is damaged'):
    mm_jax.load(workdir)
  assert loading.available_steps(workdir) == [1, 2]    # still nothing moved


def test_config_from_meta_restores_tuples_and_types(run):
  meta = json.loads(json.dumps(checkpoint.make_meta(run['config'],
                                                    run['vocab'])))
  config = loading.config_from_meta(meta['config'])
  assert config.model.decoder_conv == ((3, 1), (7, 1))
  assert isinstance(config.data.audio_frame_buckets, tuple)
  assert config.mesh.rules == ()
  assert config.train.learning_rate == run['config'].train.learning_rate
  with pytest.raises(ValueError, match='holds no config'):
    loading.config_from_meta(None)


# ------------------------------------------------------------ text tasks --

def test_translate_returns_one_string_per_input(predictor):
  out = predictor.translate(['the red cat sees a dog', 'le chat', 'a dog .'],
                            'en', 'de', beam_size=2)
  assert len(out) == 3 and all(isinstance(s, str) for s in out)
  assert len(predictor.translate('the red cat', 'en', 'fr')) == 1


def test_parse_linear_and_bracketed(predictor, monkeypatch):
  out = predictor.parse(['the cat sees a dog .'], beam_size=2)
  assert len(out) == 1 and isinstance(out[0], str)
  # The bracketing comes from trees.delinearize over the input words.
  linear = ['(S (NP XX XX /NP (VP XX (NP XX XX /NP /VP XX /S', '(S XX /S']
  monkeypatch.setattr(predictor, 'predict', lambda *a, **k: linear)
  pairs = predictor.parse(['the cat sees a dog .', 'a b c'], bracketed=True)
  assert pairs[0] == (linear[0], '(S (NP (XX the) (XX cat)) (VP (XX sees) '
                      '(NP (XX a) (XX dog))) (XX .))')
  assert pairs[1] == (linear[1], None)        # 1 POS slot for 3 words


def test_unsupported_pair_lists_supported(predictor):
  pairs = 'de-en, de-fr, en-de, en-fr, fr-en'
  with pytest.raises(ValueError, match=f'supported pairs: {pairs}'):
    predictor.translate(['le chat'], 'fr', 'de')
  with pytest.raises(ValueError, match=r"language 'es'.*\['de', 'en', 'fr'\]"):
    predictor.translate(['the cat'], 'en', 'es')


def test_unknown_task_and_bad_arguments(predictor):
  with pytest.raises(ValueError, match="Unknown task 'nope'.*parse_en"):
    predictor.predict('nope', ['a'])
  with pytest.raises(ValueError, match='beam_size must be a positive'):
    predictor.translate(['the cat'], 'en', 'de', beam_size=0)
  with pytest.raises(ValueError, match='top_k=49 exceeds the 48 classes'):
    predictor.classify(_image(0), top_k=49)


def test_empty_inputs_are_refused(predictor):
  with pytest.raises(ValueError, match='No inputs'):
    predictor.translate([], 'en', 'de')
  with pytest.raises(ValueError, match='Input 1 is an empty string'):
    predictor.translate(['the cat', '  '], 'en', 'de')
  with pytest.raises(ValueError, match='No inputs'):
    predictor.classify([])
  with pytest.raises(ValueError, match='Input 0 is an empty waveform'):
    predictor.transcribe([np.zeros(0, np.float32)], 16000)


# ----------------------------------------------------------- image tasks --

def test_classify_single_image_and_batch(predictor):
  top = predictor.classify(_image(0), top_k=3)
  assert len(top) == 1 and len(top[0]) == 3
  labels, probs = zip(*top[0])
  assert set(labels) <= set(vision.CLASS_NAMES)
  assert all(isinstance(p, float) for p in probs)
  assert list(probs) == sorted(probs, reverse=True) and sum(probs) <= 1.0
  batch = np.stack([_image(1), _image(2)]).astype(np.float32)   # [B, H, W, 3]
  assert [len(t) for t in predictor.classify(batch, top_k=2)] == [2, 2]


def test_classify_reads_images_at_the_class_image_size(run, monkeypatch):
  """Image -> class tasks see config.data.class_image_size, as in training;
  captioning sees image_size."""
  config = run['config'].copy_and_resolve_references()
  config.data.class_image_size = 16
  small = mm_jax.load(run['workdir'], config=config)
  sizes = []
  real = inputs_lib.image_array
  monkeypatch.setattr(inputs_lib, 'image_array',
                      lambda x, i, size, augment: sizes.append(size) or real(
                          x, i, size, augment))
  assert len(small.classify(_image(0), top_k=2)[0]) == 2
  small.caption(_image(0))
  assert sizes == [16, 32]


def test_padding_and_chunks_do_not_change_results(run, predictor):
  images = [_image(i, (32 + 4 * i, 40, 3)) for i in range(3)]
  small = mm_jax.load(run['workdir'], max_batch_size=2)
  together = small.classify(images, top_k=48)         # chunks of 2 and 1
  for image, row in zip(images, together):
    alone = dict(predictor.classify(image, top_k=48)[0])
    np.testing.assert_allclose([p for _, p in row],
                               [alone[label] for label, _ in row], atol=1e-5)


def test_batch_split_over_two_devices(run, predictor):
  two = mm_jax.load(run['workdir'], devices=jax.devices()[:2])
  assert two.mesh.size == 2
  images = [_image(i) for i in range(3)]
  for a, b in zip(two.classify(images, top_k=48),
                  predictor.classify(images, top_k=48)):
    b = dict(b)
    np.testing.assert_allclose([p for _, p in a], [b[k] for k, _ in a],
                               atol=1e-5)


def test_caption(predictor, tmp_path):
  """One caption per image, the same on every call; an image file reads as
  its pixels (a grey PNG as RGB with equal channels)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grey = _image(3)[:, :, 0]
  path = str(tmp_path / 'scene.png')
  Image.fromarray(grey).save(path)
  out = predictor.caption([_image(4), path], beam_size=2)
  assert len(out) == 2 and all(isinstance(s, str) for s in out)
  rgb = np.repeat(grey[:, :, None], 3, axis=-1)
  assert predictor.caption([_image(4), rgb], beam_size=2) == out
  assert predictor.caption([_image(4), path], beam_size=2) == out  # same again


def test_bad_image_shapes_name_the_expected_shape(predictor):
  with pytest.raises(ValueError, match=r'\(32, 32\).*\[H, W, 3\].*Grayscale'):
    predictor.classify(np.zeros((32, 32), np.uint8))
  with pytest.raises(ValueError, match=r'\(2, 32, 32, 4\).*\[B, H, W, 3\]'):
    predictor.caption(np.zeros((2, 32, 32, 4), np.uint8))
  with pytest.raises(ValueError, match=r'Input 1 .*\(8, 8, 4\).*RGBA'):
    predictor.classify([_image(0), np.zeros((8, 8, 4), np.uint8)])


@pytest.mark.parametrize('method', ['classify', 'caption'])
def test_non_finite_and_unit_range_float_images_are_refused(predictor,
                                                            method):
  call = getattr(predictor, method)
  nan = _image(0).astype(np.float32)
  nan[3, 4, 1] = np.nan
  with pytest.raises(ValueError, match='Input 1 has 1 non-finite pixel '
                     r'values \(NaN or inf\)'):
    call([_image(1), nan])
  unit = _image(0).astype(np.float32) / 255.0              # [0, 1]
  with pytest.raises(ValueError, match=r'Input 0 is a float image with values'
                     r' in \[0, 1\]; .*near-black.*x \* 255.*uint8'):
    call(unit)
  with pytest.raises(ValueError, match=r'values in \[-1, 1\]'):
    call(unit * 2 - 1)                                     # [-1, 1]
  with pytest.raises(ValueError, match=r'Input 0 .*\[0, 1020\]; they must '
                     r'be in \[0, 255\]'):
    call(_image(0).astype(np.uint16) * 4)
  assert len(call(unit * 255)) == 1                        # the fix works


# ----------------------------------------------------------------- speech --

def test_transcribe_mixed_lengths_and_rates(predictor):
  rng = np.random.default_rng(0)
  clip_16k = (0.1 * rng.normal(size=4000)).astype(np.float32)
  clip_8k = (3000 * rng.normal(size=3000)).astype(np.int16)
  out = predictor.transcribe([clip_16k, clip_8k], [16000, 8000], beam_size=2)
  assert len(out) == 2 and all(isinstance(s, str) for s in out)


def test_bad_waveforms(predictor):
  with pytest.raises(ValueError, match=r'\(2, 100\).*\[samples\]'):
    predictor.transcribe(np.zeros((2, 100), np.float32), 16000)
  with pytest.raises(ValueError, match='2 sample rates for 1 waveforms'):
    predictor.transcribe([np.zeros(100, np.float32)], [16000, 8000])


# -------------------------------------------------------------- bucketing --

def test_bucket_helpers():
  assert [inputs_lib.batch_bucket(n) for n in (1, 2, 3, 5, 8)] == [
      1, 2, 4, 8, 8]
  assert inputs_lib.batch_bucket(3, multiple=8) == 8
  assert inputs_lib.batch_bucket(9, multiple=6) == 18
  assert inputs_lib.extended_buckets((16, 32, 64), 48, limit=200) == (
      16, 32, 48, 96, 192, 384)


def test_same_bucket_does_not_recompile(predictor):
  texts = ['the red cat', 'a dog', 'le chat rouge', 'die Katze sieht']
  predictor.translate(texts[:3], 'en', 'de', beam_size=2)    # batch 4, len 8
  compiled = decode.cache_size()
  out = predictor.translate(texts, 'en', 'de', beam_size=2)
  assert len(out) == 4
  predictor.parse(texts[1:], beam_size=2)   # same modalities and shapes
  predictor.translate(texts[:3], 'de', 'en', beam_size=2)   # other task token
  assert decode.cache_size() == compiled
  predictor.translate(texts[:3], 'en', 'de', beam_size=3)    # a new beam
  assert decode.cache_size() == compiled + 1


def test_long_input_gets_a_bucket_past_training_max(predictor):
  long_text = ' '.join(['the red cat sees a big dog'] * 6)   # > 16 tokens
  assert len(predictor.vocab.encode(long_text)) + 1 > 16
  assert len(predictor.translate([long_text], 'en', 'de', beam_size=1)) == 1


def test_inputs_longer_than_training_warn_once_per_call(predictor, caplog):
  caplog.set_level(logging.WARNING)
  short = 'the red cat'
  words = ' '.join(['the red cat sees a big dog'] * 15)       # 105 words
  out = predictor.translate([short, words, words + ' .'], 'en', 'de',
                            beam_size=1, max_length=2)
  assert len(out) == 3
  (warning,) = [r.getMessage() for r in caplog.records
                if 'longer than training saw' in r.getMessage()]
  n = len(predictor.vocab.encode(words)) + 1
  assert warning.startswith('2 of 3 inputs are longer than training saw '
                            '(config.data.max_input_length=16 tokens): '
                            f'input 1 has {n}, input 2 has ')
  caplog.clear()
  predictor.translate([short], 'en', 'de', beam_size=1, max_length=2)
  assert not [r for r in caplog.records if 'longer' in r.getMessage()]
  clip = np.zeros(16000 * 3, np.float32)                  # 3 s: ~300 frames
  assert len(predictor.transcribe(clip, 16000, beam_size=1,
                                  max_length=2)) == 1
  (warning,) = [r.getMessage() for r in caplog.records
                if 'longer than training saw' in r.getMessage()]
  assert warning.startswith('1 of 1 inputs are longer than training saw '
                            '(config.data.audio_max_frames=64 frames of 10 '
                            'ms): input 0 has 29')


# ------------------------------------------------------------------- misc --

@pytest.mark.slow
def test_real_train_state_roundtrip(tmp_path):
  """A state from create_train_state (optimiser tree and all) loads."""
  vocab = _train_vocab(str(tmp_path / 'spm.model'))
  config = small_config(vocab.size)
  model = mm_jax.create_model(config)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  state, _ = state_lib.create_train_state(config, model, mesh)
  save(tmp_path / 'run', 3, state, config, vocab)
  p = mm_jax.load(str(tmp_path / 'run'))
  assert p.step == 3
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b),
               p.params, state.params)
  assert len(p.translate(['the cat'], 'en', 'de', beam_size=1)) == 1


@pytest.mark.e2e
def test_cli_translate(run):
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch', 'predict.py'),
       f'--workdir={run["workdir"]}', '--task=translate_en_de',
       '--beam_size=2', 'the red cat sees a dog', 'le chat'],
      capture_output=True, text=True, timeout=300, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(proc.stdout.splitlines()) == 2


@pytest.mark.e2e
def test_cli_errors(run):
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch', 'predict.py'),
       f'--workdir={run["workdir"]}', '--task=translate_xx', 'a'],
      capture_output=True, text=True, timeout=300, cwd=REPO)
  assert proc.returncode != 0
  assert "Unknown --task='translate_xx'" in proc.stderr
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch', 'predict.py'),
       f'--workdir={run["root"]}', '--task=imagenet', 'x.png'],
      capture_output=True, text=True, timeout=300, cwd=REPO)
  assert proc.returncode == 1
  assert 'FileNotFoundError: No finalised checkpoint in' in proc.stderr
