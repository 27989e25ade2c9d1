"""Run reporting: event files, ``metrics.jsonl``, progress and the NaN guard.

``Reporter`` writes scalars to TensorBoard event files (``events.EventWriter``,
which needs no TensorFlow) and the log, and appends one JSON line per
``write_scalars`` call to ``<workdir>/metrics.jsonl`` (``{"step": s,
**scalars}``); histograms (the expert load ``moe_load/<task>/<layer>`` [E])
go to TensorBoard and, as lists, to ``<workdir>/expert_load.jsonl``
(``{"step": s, name: [...]}``), which notebooks and ``launch/reproduce.py``
plot. Only the primary process writes files; the others only log.

The NaN guard: ``check_finite`` raises ``FloatingPointError`` naming the step
and task. It works on host values; ``LaggedMetrics`` fetches each step's
device metrics one step late (the copy starts at once and is read after the
next step is dispatched), so checking every step costs no pipeline stall.
"""

import json
import logging
import os
import time
from typing import Any, Mapping, NamedTuple, Optional

from clu import parameter_overview as clu_overview
import jax
import numpy as np

from mm_jax.run_files import LOAD_FILE
from mm_jax.run_files import METRICS_FILE
from mm_jax.train import events


def format_seconds(seconds: float) -> str:
  """123456.7 -> '1d10h17m'; under a minute -> '42s'."""
  seconds = int(seconds)
  if seconds < 60:
    return f'{seconds}s'
  days, rest = divmod(seconds, 86400)
  hours, rest = divmod(rest, 3600)
  return (f'{days}d' if days else '') + (f'{hours}h' if hours else '') + (
      f'{rest // 60}m')


def _scalar(name: str, value) -> float | int:
  array = np.asarray(value)
  if array.ndim:
    raise ValueError(f'Metric {name!r} has shape {array.shape}, not a scalar; '
                     'write arrays with write_histograms.')
  return array.item()


class Reporter:
  """Metric writers of one run.

  Args:
    workdir: the run's work directory (event files, ``metrics.jsonl``).
    total_steps: the run's last step (for progress and ETA).
    is_primary: True on process 0, the only one that writes files.
    asynchronous: write TensorBoard events from a background thread.
  """

  def __init__(self, workdir: str, total_steps: int, is_primary: bool, *,
               asynchronous: bool = True):
    self.workdir = workdir
    self.total_steps = total_steps
    self.is_primary = is_primary
    if is_primary:
      os.makedirs(workdir, exist_ok=True)
    self._events = (events.EventWriter(workdir, asynchronous=asynchronous)
                    if is_primary else None)
    self._jsonl_path = os.path.join(workdir, METRICS_FILE)
    self._jsonl = open(self._jsonl_path, 'a') if is_primary else None
    self._load_path = os.path.join(workdir, LOAD_FILE)
    self._last = None                  # (step, time.monotonic()) of progress

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes host scalars (floats, 0-d arrays) for ``step``."""
    values = {k: _scalar(k, v) for k, v in scalars.items()}
    logging.info('[%d] %s', step, ', '.join(
        f'{k}={v:.6g}' if isinstance(v, float) else f'{k}={v}'
        for k, v in sorted(values.items())))
    if self._events is not None:
      self._events.write_scalars(step, values)
    if self._jsonl is not None:
      self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')
      self._jsonl.flush()

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Writes text (e.g. sample decodes) to TensorBoard and the log."""
    logging.info('[%d] Texts: %s', step, dict(texts))
    if self._events is not None:
      self._events.write_texts(step, texts)

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Optional[Mapping[str, int]] = None):
    """Writes histograms of host arrays (e.g. expert load ``[E]``)."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in arrays.items():
      if v.size:
        logging.info('[%d] Histogram of %s: %d values, min %.3g, mean %.3g, '
                     'max %.3g', step, k, v.size, v.min(), v.mean(), v.max())
    if self._events is not None:
      self._events.write_histograms(step, arrays, num_buckets)
    if self.is_primary:
      with open(self._load_path, 'a') as f:
        f.write(json.dumps({'step': int(step), **{
            k: [float(x) for x in v.ravel()] for k, v in arrays.items()}})
                + '\n')

  def progress(self, step: int) -> dict:
    """Logs steps/s and ETA since the previous call; returns the rate.

    The first call only starts the clock (call it after the first step, so
    compilation is not counted). Returns ``{'steps_per_sec': r}`` (empty on
    the first call) to include in the step's ``write_scalars``.
    """
    now = time.monotonic()
    last, self._last = self._last, (step, now)
    if last is None or step <= last[0] or now <= last[1]:
      return {}
    rate = (step - last[0]) / (now - last[1])
    eta = format_seconds((self.total_steps - step) / rate)
    logging.info('Step %d/%d (%.1f%%): %.2f steps/s, ETA %s.', step,
                 self.total_steps, 100 * step / self.total_steps, rate, eta)
    return {'steps_per_sec': rate}

  def parameter_overview(self, params) -> str:
    """Logs (primary only) and returns a table of names, shapes, shardings.

    Args:
      params: the parameter dict (arrays or ``jax.ShapeDtypeStruct``).
    """
    table = clu_overview.get_parameter_overview(params,
                                                include_stats='sharding')
    if self.is_primary:
      for line in table.splitlines():
        logging.info('%s', line)
    return table

  def truncate_after(self, step: int) -> None:
    """Drops ``metrics.jsonl`` and ``expert_load.jsonl`` lines past ``step``
    (call after a resume).

    Steps between the restored checkpoint and an interruption are trained
    again; this keeps one line per step in the files.
    """
    if self._jsonl is None:
      return
    self._jsonl.close()
    for path in (self._jsonl_path, self._load_path):
      if os.path.exists(path):
        _truncate(path, step)
    self._jsonl = open(self._jsonl_path, 'a')

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()
    if self._jsonl is not None:
      self._jsonl.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _truncate(path: str, step: int) -> None:
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  kept = [line for line in lines if json.loads(line)['step'] <= step]
  with open(path, 'w') as f:
    f.writelines(kept)
  if len(kept) < len(lines):
    logging.info('Dropped %d lines past step %d from %s.',
                 len(lines) - len(kept), step, path)


def check_finite(step: int, task: str, metrics: Mapping[str, Any], *,
                 last_checkpoint: Optional[int] = None) -> None:
  """Raises FloatingPointError if any metric is NaN or infinite.

  Args:
    step: the step the metrics belong to.
    task: the task trained at that step.
    metrics: host values (scalars or arrays) already fetched for logging.
    last_checkpoint: the newest saved step, named in the message.
  """
  bad = {}
  for name, value in metrics.items():
    array = np.asarray(value)
    if array.dtype.kind in 'fc' and not np.all(np.isfinite(array)):
      bad[name] = array.item() if array.ndim == 0 else 'non-finite entries'
  if not bad:
    return
  what = 'loss' if any(k.endswith('loss') for k in bad) else 'metrics'
  listing = ', '.join(f'{k}={v}' for k, v in sorted(bad.items()))
  if last_checkpoint is None:
    kept = 'no checkpoint has been written yet'
  else:
    kept = f'the last checkpoint (step {last_checkpoint}) is intact'
  raise FloatingPointError(
      f'non-finite {what} at step {step} in task {task}: {listing}; {kept}. '
      'Restart with a lower config.train.learning_rate, a longer '
      'warmup_steps or a smaller grad_clip_norm, or check this task\'s data.')


class Fetched(NamedTuple):
  """A step's metrics on the host, already checked by ``check_finite``."""
  step: int
  task: str
  metrics: dict


class LaggedMetrics:
  """Fetches each step's metrics one step late and checks them.

    lagged = LaggedMetrics()
    for step in ...:
      state, metrics = train_step(state, batch)   # dispatched, not waited on
      done = lagged.push(step, task, metrics)     # previous step, on host
      if done and done.step % log_every == 0:
        reporter.write_scalars(done.step, done.metrics)
      if step % checkpoint_every == 0:
        lagged.drain()          # check this step before its state is saved
        checkpointer.save(...); lagged.last_checkpoint = step

  Attributes:
    last_checkpoint: the newest saved step, named in the NaN error.
  """

  def __init__(self):
    self._pending = None
    self.last_checkpoint = None

  def push(self, step: int, task: str, metrics: Mapping[str, Any]
           ) -> Optional[Fetched]:
    """Queues this step's device metrics; returns the previous step's."""
    for value in jax.tree.leaves(metrics):
      if isinstance(value, jax.Array):
        value.copy_to_host_async()
    previous, self._pending = self._pending, (step, task, dict(metrics))
    return self._fetch(previous)

  def drain(self) -> Optional[Fetched]:
    """Fetches and checks the queued step now (before a save, at the end)."""
    previous, self._pending = self._pending, None
    return self._fetch(previous)

  def _fetch(self, item) -> Optional[Fetched]:
    if item is None:
      return None
    step, task, metrics = item
    host = jax.device_get(metrics)
    check_finite(step, task, host, last_checkpoint=self.last_checkpoint)
    return Fetched(step, task, host)
