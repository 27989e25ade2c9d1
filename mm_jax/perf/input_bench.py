"""The input pipeline's rate per task, against what the train step
consumes (``bench_input``), and the padding fill of its batches."""

import dataclasses
import time
from typing import Any, Dict

import numpy as np

from mm_jax.data import plan as plan_lib


def padding_fill(batch) -> float:
  """Real / padded positions of the variable-length arrays of a batch."""
  real = total = 0
  for key in ('inputs', 'targets'):
    x = batch[key]
    if x.dtype == np.int32 and x.ndim == 2:          # text [B, L]
      real, total = real + int((x != 0).sum()), total + x.size
  if 'inputs_mask' in batch:                          # audio [B, A]
    mask = batch['inputs_mask']
    real, total = real + int(mask.sum()), total + mask.size
  return real / total if total else 1.0


def measure_iterator(it, steps: int, warmup: int):
  """(examples/s, batches/s, mean fill) of a train iterator over ``steps``."""
  for _ in range(warmup):
    next(it)
  examples, fills = 0, []
  start = time.perf_counter()
  for _ in range(steps):
    _, batch = next(it)
    examples += len(batch['targets'])
    fills.append(padding_fill(batch))
  spent = time.perf_counter() - start
  return examples / spent, steps / spent, float(np.mean(fills))


def bench_input(config, tasks, steps: int, warmup: int
                ) -> Dict[str, Any]:
  """Input-pipeline examples/s per task (None where the data stack or the
  prepared data is missing, with the reason)."""
  try:
    from mm_jax.data import pipeline, prepare  # pylint: disable=g-import-not-at-top
    vocab = prepare.ensure_prepared(config.data)
  except (ImportError, OSError, ValueError) as e:
    return {'skipped': f'{type(e).__name__}: {e}'}
  out = {}
  for name in tasks:
    alone = dataclasses.replace(plan_lib.for_task(config, name),
                                mixture_weight=1.0)    # drawn every step
    with pipeline.make_train_iterator(config.data, vocab, [alone]) as it:
      ex_s, _, fill = measure_iterator(it, steps, warmup)
    out[name] = {'examples_per_s': ex_s, 'fill': fill}
  return out
