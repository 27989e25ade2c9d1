"""Timing and counting helpers of the benchmarks: medians of blocked calls
(interleaved across functions), the measured matmul peak, XLA's FLOP count
and a compiled program's memory."""

import statistics
import time
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp


def median_time(fn: Callable[[], Any], steps: int, warmup: int) -> float:
  """Median wall seconds of ``fn()`` (blocked on) over ``steps`` calls."""
  return median_times({'fn': fn}, steps, warmup)['fn']


def median_times(fns: Dict[str, Callable[[], Any]], steps: int,
                  warmup: int) -> Dict[str, float]:
  """Median wall seconds of each ``fn()``, the calls interleaved round-robin
  so that a machine's drift (other jobs, clocks) hits every ``fn`` alike:
  a ratio of two medians is then far steadier than from separate runs."""
  for _ in range(warmup):
    for fn in fns.values():
      jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(steps):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def peak_matmul_flops(dtype: str, n: Optional[int] = None,
                      steps: int = 10) -> Dict[str, float]:
  """Measured FLOP/s of an ``n x n x n`` matmul in ``dtype`` on device 0."""
  if n is None:
    n = 1024 if jax.default_backend() == 'cpu' else 8192
  keys = jax.random.split(jax.random.key(0))
  a, b = (jax.random.normal(k, (n, n), jnp.dtype(dtype)) for k in keys)
  matmul = jax.jit(lambda x, y: x @ y)
  seconds = median_time(lambda: matmul(a, b), steps, warmup=2)
  return {'matmul_n': n, 'peak_flops_per_s': 2 * n ** 3 / seconds}


def memory_bytes(compiled) -> Optional[int]:
  """Device bytes of a compiled program (arguments + temporaries + outputs,
  less aliased), or None where the backend gives no analysis."""
  try:
    mem = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if mem is None:
    return None
  return int(mem.temp_size_in_bytes + mem.argument_size_in_bytes +
             mem.output_size_in_bytes - mem.alias_size_in_bytes)


def xla_flops(stage) -> Optional[float]:
  """FLOPs from an XLA cost analysis (``Lowered`` or ``Compiled``)."""
  try:
    cost = stage.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None
