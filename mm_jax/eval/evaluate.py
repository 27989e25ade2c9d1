"""Per-task evaluation: teacher-forced metrics, decoded metrics, samples.

  metrics, samples = evaluate_task(model, params, 'translate_en_de', batches,
                                   vocab, config.eval, step_fn)
  # metrics: {'examples': 200., 'token_accuracy': .., 'log_ppl': .., 'bleu': ..}
  write_samples(workdir, step, 'translate_en_de', samples)

``batches`` is one evaluation pass (``pipeline.make_eval_iterator``): each
batch carries ``example_mask`` [B] (False on padding slots) and, for text
outputs, host-side ``references``. Per batch:

* ``step_fn(params, batch) -> sums`` (``mm_jax.eval.sums.eval_step``,
  already masked and summed over the *global* batch) gives the teacher-forced metrics: token accuracy,
  log-perplexity (natural log, no label smoothing, per target token; per
  example for class outputs), top-1 and top-5.
* ``decode_fn(params, batch)`` (default: ``decode.beam_search`` with the
  beam size, length penalty and decode length of ``config.eval``) runs when
  the task lists a decoded metric (BLEU, WER, sequence accuracy) or samples
  are still wanted. The best beam is detokenised with ``vocab.decode`` and
  scored against the references on the host, real examples only. The
  decoded metrics are summed as sufficient statistics and reduced over
  processes with ``sum_fn`` (default ``process_sum``) before the ratio, so
  corpus BLEU/WER are exact on any number of hosts.

The metrics a task reports are ``task.metrics`` from the registry, plus
``examples`` (real examples seen) and, for tasks with ``sequence_accuracy``,
``sequence_accuracy_tf``: the teacher-forced full-sequence accuracy (every
target token argmax-correct), which is what T2T reported as the parsing
"full-tree accuracy".

Multi-host: pass a ``decode_fn`` that places the process-local batch as a
global array, decodes, and returns this process's rows as numpy; the default
works on one process (any number of local devices).
"""

import json
import logging
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional
from typing import Sequence, Tuple, Union

import jax
from jax.experimental import multihost_utils
import numpy as np

from mm_jax.data import batching
from mm_jax.data import registry
from mm_jax.eval import decode
from mm_jax.eval import metrics as metrics_lib
from mm_jax.eval import sums as sums_lib

StepFn = Callable[[Any, Mapping[str, Any]], Mapping[str, Any]]
# (params, batch) -> text: (ids [B, K, T], scores [B, K]);
#                    class: (classes [B, k], log-probs [B, k]).
DecodeFn = Callable[[Any, Mapping[str, Any]], Tuple[Any, Any]]
SumFn = Callable[[np.ndarray], np.ndarray]

TEACHER_FORCED = sums_lib.TEACHER_FORCED
DECODED = ('bleu', 'wer', 'sequence_accuracy')
KNOWN_METRICS = tuple(TEACHER_FORCED) + DECODED
_NOT_AVERAGED = ('examples', 'eval_seconds')


def process_sum(x: np.ndarray) -> np.ndarray:
  """Element-wise sum of ``x`` over all JAX processes (identity on one)."""
  if jax.process_count() == 1:
    return x
  gathered = np.asarray(multihost_utils.process_allgather(x))  # [P, ...]
  return gathered.sum(axis=0)


def default_decode_fn(model, task, eval_cfg) -> DecodeFn:
  """Beam search (text outputs; greedy search when ``eval_cfg.beam_size`` is
  1) or top-5 classes (class outputs). Text results are ``[B, K, T]``."""
  if task.output_modality == 'text' and int(eval_cfg.beam_size) == 1:
    def decode_greedy(params, batch):
      ids, scores = decode.greedy_decode(
          model, params, batch, input_modality=task.input_modality,
          max_length=int(eval_cfg.max_decode_length),
          length_penalty=float(eval_cfg.length_penalty))
      return ids[:, None], scores[:, None]
    return decode_greedy
  if task.output_modality == 'text':
    def decode_text(params, batch):
      return decode.beam_search(
          model, params, batch, input_modality=task.input_modality,
          beam_size=int(eval_cfg.beam_size),
          length_penalty=float(eval_cfg.length_penalty),
          max_length=int(eval_cfg.max_decode_length))
    return decode_text

  def decode_class(params, batch):
    return decode.top_classes(model, params, batch,
                              top_k=min(5, int(model.cfg.num_classes)))
  return decode_class


def _check_task(task) -> None:
  unknown = sorted(set(task.metrics) - set(KNOWN_METRICS))
  if unknown:
    raise ValueError(f'Task {task.name} lists unknown metrics {unknown}; '
                     f'known: {KNOWN_METRICS}.')
  decoded = set(task.metrics) & set(DECODED)
  if decoded and task.output_modality != 'text':
    raise ValueError(f'Task {task.name}: {sorted(decoded)} need text '
                     f'output, the task writes {task.output_modality!r}.')


def _references(batch, j: int, vocab) -> List[str]:
  """All references of example j; the detokenised target when absent."""
  refs = batch.get('references')
  if refs is not None and len(refs[j]):
    return [str(r) for r in refs[j]]
  return [vocab.decode(np.asarray(batch['targets'][j]))]


def describe_input(batch, j: int, input_modality: str, vocab) -> str:
  """A short text for example j's input (sample decodes)."""
  x = np.asarray(batch['inputs'][j])
  if input_modality == 'text':
    return vocab.decode(x)
  if input_modality == 'image':
    return f'image {x.shape[0]}x{x.shape[1]}'
  mask = batch.get('inputs_mask')
  n = int(np.asarray(mask[j]).sum()) if mask is not None else x.shape[0]
  return f'audio, {n} {"frames" if x.ndim > 1 else "samples"}'


def _ratio(sums, num: str, den: str, task_name: str) -> float:
  for key in (num, den):
    if key not in sums:
      raise KeyError(f'Task {task_name}: the eval step returned no {key!r} '
                     f'(it returned {sums.names()}); see mm_jax/eval/sums.py'
                     ' (SUMS, TEACHER_FORCED) for the sums it expects.')
  den_value = float(sums[den])
  return float(sums[num]) / den_value if den_value else float('nan')


def _finalise(task, tf_sums, host_sums) -> Dict[str, float]:
  """Ratios of the summed statistics, named as ``task.metrics``."""
  out = {'examples': float(host_sums['examples'])}
  if not out['examples']:
    logging.warning('Task %s: the evaluation pass had no real examples.',
                    task.name)
  for name in task.metrics:
    if name in TEACHER_FORCED:
      num, den = TEACHER_FORCED[name]
      if name == 'log_ppl' and task.output_modality == 'class':
        den = 'examples'
      out[name] = _ratio(tf_sums, num, den, task.name)
    elif not out['examples']:
      out[name] = float('nan')
    elif name == 'bleu':
      out[name] = metrics_lib.bleu_from_stats(host_sums['bleu'])
    elif name == 'wer':
      out[name] = metrics_lib.wer_from_stats(host_sums['wer'])
    elif name == 'sequence_accuracy':
      out[name] = _ratio(host_sums, 'sequence_correct', 'examples', task.name)
      if 'sequence_correct' in tf_sums:
        out['sequence_accuracy_tf'] = _ratio(tf_sums, 'sequence_correct',
                                             'examples', task.name)
  return out


def _text_results(task, batch, real, preds, scores, vocab):
  """Decoded stats and per-example records of the real examples."""
  ids, scores = np.asarray(preds), np.asarray(scores)            # [B, K, T]
  beams = [[vocab.decode(ids[j, k]) for k in range(ids.shape[1])]
           for j in real]
  refs = [_references(batch, j, vocab) for j in real]
  hyps = [b[0] for b in beams]
  stats = {}
  if 'bleu' in task.metrics:
    stats['bleu'] = metrics_lib.bleu_stats(hyps, refs)
  if 'wer' in task.metrics:
    stats['wer'] = metrics_lib.wer_stats(hyps, [r[0] for r in refs])
  if 'sequence_accuracy' in task.metrics:
    stats['sequence_correct'] = metrics_lib.sequence_stats(hyps, refs)[0]
  records = [{'references': r, 'hypothesis': b[0],
              'score': float(scores[j, 0]), 'beams': b}
             for j, r, b in zip(real, refs, beams)]
  return stats, records


def _class_records(batch, real, preds, scores):
  preds, scores = np.asarray(preds), np.asarray(scores)          # [B, k]
  return [{'reference': int(np.asarray(batch['targets'])[j]),
           'hypothesis': int(preds[j, 0]), 'score': float(scores[j, 0]),
           'top_k': [int(c) for c in preds[j]]} for j in real]


def evaluate_task(model, params, task, batches: Iterable[Mapping[str, Any]],
                  vocab, eval_cfg, step_fn: StepFn, *,
                  decode_fn: Optional[DecodeFn] = None,
                  sum_fn: Optional[SumFn] = None
                  ) -> Tuple[Dict[str, float], List[dict]]:
  """Evaluates one task over ``batches``.

  Args:
    model: the MultiModel.
    params: its parameters.
    task: a registry name or ``Task``.
    batches: evaluation batches of the task (see module docstring).
    vocab: the shared vocabulary (``decode(ids) -> str``).
    eval_cfg: ``config.eval`` (max_batches, beam_size, length_penalty,
      max_decode_length, num_samples).
    step_fn: ``(params, batch) -> summed metrics`` (the jitted eval step).
    decode_fn: ``(params, batch) -> (predictions, scores)``; default
      ``default_decode_fn``. Must return this process's rows on the host.
    sum_fn: reduces host statistics over processes; default
      ``process_sum``.

  Returns:
    (metrics {name: float}, samples: up to ``num_samples`` dicts with
    ``input``, ``references`` / ``reference``, ``hypothesis``, ``score``).
  """
  task = registry.get(task) if isinstance(task, str) else task
  _check_task(task)
  if decode_fn is None:
    if jax.process_count() > 1:
      raise ValueError('evaluate_task on several processes needs a decode_fn '
                       'that decodes global arrays and returns local rows.')
    decode_fn = default_decode_fn(model, task, eval_cfg)
  decoded = bool(set(task.metrics) & set(DECODED))
  tf_sums, host_sums = metrics_lib.MetricSums(), metrics_lib.MetricSums()
  # Every key from the start: processes must reduce vectors of one layout.
  host_sums.add({'examples': 0.0, 'sequence_correct': 0.0,
                 'bleu': np.zeros(2 + 2 * metrics_lib.MAX_NGRAM),
                 'wer': np.zeros(2)})
  samples: List[dict] = []
  for i, batch in enumerate(batches):
    if eval_cfg.max_batches and i >= eval_cfg.max_batches:
      break
    device_batch = {k: v for k, v in batch.items()
                    if k not in batching.HOST_KEYS}
    tf_sums.add(jax.device_get(step_fn(params, device_batch)))
    size = len(batch['inputs'])
    mask = np.asarray(batch.get('example_mask', np.ones(size, bool)), bool)
    real = np.flatnonzero(mask).tolist()
    host_sums.add({'examples': float(len(real))})
    want = eval_cfg.num_samples - len(samples)
    if not real or not (decoded or want > 0):
      continue
    preds, scores = jax.device_get(decode_fn(params, device_batch))
    if task.output_modality == 'text':
      stats, records = _text_results(task, batch, real, preds, scores, vocab)
      host_sums.add(stats)
    else:
      records = _class_records(batch, real[:want], preds, scores)
    for j, record in zip(real[:max(want, 0)], records):
      samples.append({'index': len(samples),
                      'input': describe_input(batch, j, task.input_modality,
                                              vocab), **record})
  host_sums = host_sums.reduce(sum_fn or process_sum)
  return _finalise(task, tf_sums, host_sums), samples


def evaluate_all(model, params,
                 task_batches: Mapping[str, Iterable[Mapping[str, Any]]],
                 vocab, eval_cfg,
                 step_fns: Union[Mapping[str, StepFn], Callable[[str], StepFn]],
                 *, decode_fns: Optional[Mapping[str, DecodeFn]] = None,
                 sum_fn: Optional[SumFn] = None,
                 tasks: Optional[Mapping[str, Any]] = None
                 ) -> Tuple[Dict[str, float], Dict[str, List[dict]]]:
  """Evaluates every task of ``task_batches`` ({name: batches}).

  ``step_fns`` maps a task name to its eval step (a dict or a function);
  ``decode_fns`` optionally maps names to decode functions; ``tasks``
  optionally maps names to ``Task`` objects (default: the registry).
  Returns ({'<task>/<metric>': v, '<task>/eval_seconds': s,
  'mean/<metric>': mean over the tasks that report it}, {task: samples}).
  """
  flat, all_samples, per_metric = {}, {}, {}
  for name in sorted(task_batches):
    start = time.perf_counter()
    step_fn = step_fns[name] if isinstance(step_fns, Mapping) else (
        step_fns(name))
    decode_fn = (decode_fns or {}).get(name)
    task = (tasks or {}).get(name, name)
    values, samples = evaluate_task(
        model, params, task, task_batches[name], vocab, eval_cfg, step_fn,
        decode_fn=decode_fn, sum_fn=sum_fn)
    values['eval_seconds'] = time.perf_counter() - start
    all_samples[name] = samples
    for metric, value in values.items():
      flat[f'{name}/{metric}'] = value
      if metric not in _NOT_AVERAGED:
        per_metric.setdefault(metric, []).append(value)
    logging.info('Evaluated %s in %.1f s: %s', name, values['eval_seconds'],
                 ', '.join(f'{k}={v:.4g}' for k, v in sorted(values.items())))
  for metric, values in sorted(per_metric.items()):
    flat[f'mean/{metric}'] = float(np.mean(values))
  return flat, all_samples


def samples_path(workdir: str, step: int, task: str) -> str:
  """``<workdir>/samples/step_<step>/<task>.jsonl``."""
  return os.path.join(workdir, 'samples', f'step_{int(step)}',
                      f'{task}.jsonl')


def write_samples(workdir: str, step: int, task: str,
                  samples: Sequence[Mapping[str, Any]]) -> str:
  """Writes ``samples`` as JSON lines (atomically); returns the path.

  Call it on the primary process only (``jax.process_index() == 0``).
  """
  path = samples_path(workdir, step, task)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    for sample in samples:
      f.write(json.dumps(sample, ensure_ascii=False) + '\n')
  os.replace(tmp, path)
  return path
