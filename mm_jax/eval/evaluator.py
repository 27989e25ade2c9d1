"""Evaluation passes during training: ``Evaluator`` and its sample writing.

  run_eval = evaluator.Evaluator(config, model, vocab, compiler, plans)
  metrics = run_eval(step, params, reporter, workdir)

Each call evaluates every task on every split of ``config.eval.splits``
(``evaluate.evaluate_all``: teacher-forced metrics through
``compiler.eval``, decodes on the mesh), then writes the metrics, the skip
counters, the sample decodes (``samples/step_<s>/<split>/<task>.jsonl``) and
their TensorBoard text. ``compiler`` is the training ``StepCompiler`` (its
``eval``, ``device_batch``, ``mesh`` and ``rules``); ``reporter`` a
``reporting.Reporter`` (``is_primary``, ``write_scalars``, ``write_texts``).

``Evaluator.stop`` (a ``threading.Event``) ends a pass between batches:
it raises ``Stopped`` and writes nothing (the training loop sets it when a
signal comes during an evaluation).
"""

import threading
from typing import Dict

import jax
import numpy as np

from mm_jax import sharding
from mm_jax.data import pipeline
from mm_jax.data import plan as plan_lib
from mm_jax.eval import evaluate


def _local_rows(x: jax.Array, batch_sharding) -> np.ndarray:
  """A global [B, ...] result -> this process's rows (the rows it fed)."""
  x = jax.device_put(x, batch_sharding)
  parts = {}
  for shard in x.addressable_shards:
    parts.setdefault(shard.index[0].start or 0, np.asarray(shard.data))
  return np.concatenate([parts[k] for k in sorted(parts)])


def _decode_fn(model, task, eval_cfg, compiler):
  """``(params, local batch) -> local (predictions, scores)`` on the mesh.

  The local batch becomes global arrays (multi-host), decoding runs with
  the logical rules active, and this process's rows come back as numpy.
  """
  inner = evaluate.default_decode_fn(model, task, eval_cfg)

  def decode_local(params, batch):
    dev = compiler.device_batch(batch)
    with sharding.activate(compiler.mesh, compiler.rules):
      preds, scores = inner(params, dev)
    return tuple(_local_rows(x, sharding.batch_sharding(
        compiler.mesh, compiler.rules, x.ndim)) for x in (preds, scores))
  return decode_local


class Stopped(Exception):
  """An evaluation pass left because ``Evaluator.stop`` was set."""


class _Stoppable:
  """Iterates ``it``, raising ``Stopped`` before each batch once ``stop``
  is set."""

  def __init__(self, it, stop: threading.Event):
    self.it, self.stop = it, stop

  def __iter__(self):
    for batch in self.it:
      if self.stop.is_set():
        raise Stopped('evaluation stopped')
      yield batch


class Evaluator:
  """Evaluation passes of the enabled tasks over ``config.eval.splits``."""

  def __init__(self, config, model, vocab, compiler, plans):
    """``plans``: the run's tasks (``plan.resolve(config)``)."""
    self.config, self.model, self.vocab = config, model, vocab
    self.compiler = compiler
    self.tasks = [p.task for p in plans]
    index, count = jax.process_index(), jax.process_count()
    batch = plan_lib.local_batch_size(int(config.eval.batch_size), count,
                                      where='config.eval.batch_size')
    self.iterators = {
        split: {p.name: pipeline.make_eval_iterator(
            config.data, vocab, p, split, process_index=index,
            process_count=count, batch_size=batch) for p in plans}
        for split in config.eval.splits}
    self.decode_fns = {t.name: _decode_fn(model, t, config.eval, compiler)
                       for t in self.tasks}
    self.stop = threading.Event()

  def __call__(self, step: int, params, reporter, workdir: str
               ) -> Dict[str, float]:
    """Evaluates all tasks; writes metrics, samples and skip counts."""
    out = {}
    self.stop.clear()
    for split, iterators in self.iterators.items():
      values, samples = evaluate.evaluate_all(
          self.model, params,
          {name: _Stoppable(it, self.stop) for name, it in iterators.items()},
          self.vocab, self.config.eval,
          lambda name: (lambda p, b: self.compiler.eval(p, name, b)),
          decode_fns=self.decode_fns)
      for name, it in iterators.items():
        for reason, count in it.counters().items():
          if reason.startswith('skipped') and count:
            values[f'{name}/{reason}'] = float(count)
      out.update({f'{split}/{k}': v for k, v in values.items()})
      if reporter.is_primary:
        for name, task_samples in samples.items():
          evaluate.write_samples(workdir, step, f'{split}/{name}',
                                 task_samples)
      reporter.write_texts(step, {
          f'samples/{split}/{name}': _samples_text(s)
          for name, s in samples.items() if s})
    reporter.write_scalars(step, out)
    return out


def _samples_text(samples) -> str:
  """Markdown lines for TensorBoard's text tab."""
  lines = []
  for s in samples:
    ref = s.get('references', s.get('reference'))
    lines.append(f"* input: {s['input']}  \n  reference: {ref}  \n"
                 f"  hypothesis: {s['hypothesis']}")
  return '\n'.join(lines)
