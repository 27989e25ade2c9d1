"""The input pipeline: mixed, resumable, multi-host training batches and
finite evaluation passes.

  it = make_train_iterator(config.data, vocab, plan.resolve(config),
                           process_index=jax.process_index(),
                           process_count=jax.process_count())
  task, batch = next(it)          # one task per step; batch: see batching.py
  it.update_losses({task: loss})  # feeds mixing='adaptive'
  state = it.get_state()          # JSON; it.set_state(state) resumes exactly

Per task, ``streams.TaskStream`` reads this process's shard through grain and
pads each batch to a length bucket; a background thread per task prefetches
``config.data.prefetch`` batches. The mixer (``mixture.Mixture``) picks the
task in the consumer thread, at hand-out time, so adaptive losses fed between
steps take effect on the next draw however deep the prefetch. The state is
the mixer state plus, per task, the stream state captured *with* the last
batch handed out (prefetched batches are dropped on restore and re-made).

Multi-host: every process draws the same task each step (same seed, same
global losses); each reads a disjoint shard with batch_size / process_count
examples. Bucketed shapes must also agree across processes, so for
process_count > 1 each hand-out takes the element-wise maximum of the padded
lengths over processes (``pad_sync``, default ``process_max``: one tiny
all-gather per step) and pads up to it. Each process saves its own state.
"""

import logging
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence

from jax.experimental import multihost_utils
import numpy as np

from mm_jax.data import batching
from mm_jax.data import mixture as mixture_lib
from mm_jax.data import plan as plan_lib
from mm_jax.data import preprocess
from mm_jax.data import sources as sources_lib
from mm_jax.data import streams
from mm_jax.data.prefetch import Prefetcher

STATE_VERSION = 1
PadSync = Callable[[np.ndarray], np.ndarray]


def process_max(lengths: np.ndarray) -> np.ndarray:
  """lengths: int [2] -> element-wise maximum over all JAX processes."""
  gathered = multihost_utils.process_allgather(np.asarray(lengths))
  return np.asarray(gathered).reshape(-1, len(lengths)).max(axis=0)


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in '
                     f'[0, {process_count}).')


def task_source(task, split: str, data_cfg, sources=None):
  """The random-access source of ``task``/``split`` (``sources`` overrides).

  Tiny suite, train split: the first ``config.data.tiny.num_train[task]``
  examples (tasks that share a dataset, such as parsing and the
  translations, read prefixes of one generated set; ``builders``
  generates the largest size any of them asks for).
  """
  if sources is not None and task.name in sources:
    return sources[task.name]
  source = task.source(data_cfg.suite, split, data_cfg)
  if data_cfg.suite == 'tiny' and split == 'train':
    limit = data_cfg.tiny.num_train.get(task.name, 0)
    if limit:
      source = sources_lib.PrefixSource(source, limit)
  return source


class TrainIterator:
  """Endless ``(task_name, batch)`` pairs; checkpointable.

  ``batch``: dict of numpy arrays for one task (see ``batching``).
  """

  def __init__(self, task_streams: Mapping[str, streams.TaskStream],
               mixture: mixture_lib.Mixture, *, prefetch: int,
               pad_sync: Optional[PadSync], process: Sequence[int]):
    self._streams = dict(task_streams)
    self._mixture = mixture
    self._prefetch = int(prefetch)
    self._pad_sync = pad_sync
    self._process = list(process)
    self._producers: Dict[str, Prefetcher] = {}
    self._handed = {t: s.get_state() for t, s in self._streams.items()}
    self._pending: Optional[Dict[str, float]] = None   # after_next_draw

  def __iter__(self) -> Iterator:
    return self

  def __next__(self):
    task = self._mixture.choose()
    batch, state = self._take(task)
    if self._pad_sync is not None:
      spec = self._streams[task].spec
      lengths = self._pad_sync(batching.variable_lengths(batch, spec))
      batch = batching.pad_to(batch, spec, lengths)
    self._handed[task] = state
    self._mixture.advance()
    if self._pending:
      self._mixture.update_losses(self._pending)
      self._pending = None
    return task, batch

  def _take(self, task: str):
    stream = self._streams[task]
    if self._prefetch <= 0:
      return stream.next_batch(), stream.get_state()
    if task not in self._producers:
      self._producers[task] = Prefetcher(
          lambda s=stream: (s.next_batch(), s.get_state()),
          self._prefetch, name=task)
    return self._producers[task].get()

  @property
  def tasks(self):
    return self._mixture.tasks

  def probabilities(self) -> Dict[str, float]:
    """Current task draw probabilities."""
    return self._mixture.probabilities()

  def update_losses(self, losses: Mapping[str, float], *,
                    after_next_draw: bool = False) -> None:
    """Per-task (global, identical on every process) losses for 'adaptive'.

    ``after_next_draw``: hold them until the next batch has been drawn, then
    apply them. The training loop fetches each step's loss one step late, so
    step s's loss normally reaches the mixer after step s + 1's draw; a
    checkpoint fetches it early and hands it over this way. Held losses are
    part of ``get_state()``, so a resumed run applies them where the
    uninterrupted run would have.
    """
    if after_next_draw:
      self._pending = {**(self._pending or {}),
                       **{t: float(v) for t, v in losses.items()}}
    else:
      self._mixture.update_losses(losses)

  def counters(self) -> Dict[str, Dict[str, int]]:
    """Per task: examples handed out and records skipped, by reason."""
    return {t: dict(s['counters']) for t, s in self._handed.items()}

  def get_state(self) -> dict:
    """JSON-serialisable state of the batches handed out so far."""
    return {'version': STATE_VERSION, 'process': list(self._process),
            'mixture': self._mixture.get_state(),
            'tasks': {t: dict(s) for t, s in self._handed.items()},
            'pending_losses': self._pending}

  def set_state(self, state: Mapping) -> None:
    """Restores ``get_state()``: the next batch is the one that followed."""
    if state.get('version') != STATE_VERSION:
      raise ValueError(f'Data state version {state.get("version")} is not '
                       f'{STATE_VERSION}.')
    if list(state['process']) != self._process:
      raise ValueError(f'Data state was saved by process {state["process"]} '
                       f'(index, count); this is {self._process}. Restore '
                       'each process from its own state, same process count.')
    if sorted(state['tasks']) != sorted(self._streams):
      raise ValueError(f'Data state has tasks {sorted(state["tasks"])}, the '
                       f'pipeline has {sorted(self._streams)}.')
    self._stop_producers()
    self._mixture.set_state(state['mixture'])
    self._pending = state.get('pending_losses')    # absent in older states
    for task, stream in self._streams.items():
      stream.set_state(state['tasks'][task])
      self._handed[task] = stream.get_state()

  def _stop_producers(self) -> None:
    for producer in self._producers.values():
      producer.close()
    self._producers = {}

  def close(self) -> None:
    """Stops prefetch threads and grain readers."""
    self._stop_producers()
    for stream in self._streams.values():
      stream.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def make_train_iterator(data_cfg, vocab, plans: Sequence[plan_lib.TaskPlan],
                        *, process_index=0, process_count=1, sources=None,
                        pad_sync: Optional[PadSync] = None) -> TrainIterator:
  """The mixed training iterator of this process.

  Args:
    data_cfg: ``config.data``.
    vocab: the shared subword vocabulary (``encode``/``decode``).
    plans: the tasks to train (``plan.resolve(config)``): their mixture
      weights, batch sizes and batch specs.
    process_index: this process (``jax.process_index()``).
    process_count: all processes (``jax.process_count()``).
    sources: optional ``{task name: random-access source}`` replacing the
      registry's training split.
    pad_sync: reduces padded lengths over processes; default ``process_max``
      when process_count > 1, none otherwise.

  Returns:
    A ``TrainIterator`` yielding ``(task_name, batch)``.
  """
  _check_process(process_index, process_count)
  if not plans:
    raise ValueError('No task to train: plans is empty.')
  srcs = {p.name: task_source(p.task, 'train', data_cfg, sources)
          for p in plans}
  sizes = {n: len(s) for n, s in srcs.items()}
  mixture = mixture_lib.Mixture(
      {p.name: p.mixture_weight for p in plans}, data_cfg.mixing,
      sizes=sizes, temperature=float(data_cfg.mixing_temperature),
      decay=float(data_cfg.adaptive_decay), seed=int(data_cfg.shuffle_seed))
  task_streams = {}
  for p in plans:
    pre = preprocess.Preprocessor(p.task, data_cfg, vocab, train=True,
                                  image_size=p.image_size)
    ds = streams.train_dataset(
        srcs[p.name], pre, name=p.name, seed=int(data_cfg.shuffle_seed),
        process_index=process_index, process_count=process_count)
    task_streams[p.name] = streams.TaskStream(
        p.name, ds, p.spec, p.local_batch_size(process_count),
        worker_count=int(data_cfg.worker_count))
  for name, prob in mixture.probabilities().items():
    logging.info('Task %s: p=%.4f, %d train records.', name, prob,
                 sizes[name])
  if pad_sync is None and process_count > 1:
    pad_sync = process_max
  return TrainIterator(task_streams, mixture,
                       prefetch=int(data_cfg.prefetch), pad_sync=pad_sync,
                       process=(process_index, process_count))


class EvalIterator:
  """Re-iterable, deterministic, finite pass over one task's split.

  Each iteration yields ``num_batches`` batches [B, ...] with
  ``example_mask`` [B] (False on padding slots) and, for text outputs,
  host-side ``references``.
  """

  def __init__(self, name, source, preprocessor, spec, *, batch_size,
               process_index, process_count, pad_sync):
    self.name = name
    self.spec = spec
    self.batch_size = batch_size
    self._source = source
    self._preprocessor = preprocessor
    self._process = (process_index, process_count)
    self._pad_sync = pad_sync
    self._counters = streams.Counters(name)
    self.num_batches = streams.eval_num_batches(len(source), batch_size,
                                                process_count)

  def __iter__(self):
    self._counters = streams.Counters(self.name)
    passes = streams.eval_pass(
        self.name, self._source, self._preprocessor, self.spec,
        batch_size=self.batch_size, process_index=self._process[0],
        process_count=self._process[1], counters=self._counters)
    for batch in passes:
      if self._pad_sync is not None:
        lengths = self._pad_sync(batching.variable_lengths(batch, self.spec))
        batch = batching.pad_to(batch, self.spec, lengths)
      yield batch

  def counters(self) -> Dict[str, int]:
    """Counts of the latest (or running) pass."""
    return dict(self._counters.values)


def make_eval_iterator(data_cfg, vocab, task: plan_lib.TaskPlan, split: str,
                       *, process_index=0, process_count=1, source=None,
                       batch_size=None,
                       pad_sync: Optional[PadSync] = None) -> EvalIterator:
  """Evaluation pass over ``split`` of ``task`` (its ``plan.TaskPlan``).

  ``batch_size`` (this process's) defaults to its share of
  ``data_cfg.batch_size``; ``source`` overrides the registry's split.
  """
  _check_process(process_index, process_count)
  if batch_size is None:
    batch_size = plan_lib.local_batch_size(int(data_cfg.batch_size),
                                           process_count)
  src = (source if source is not None
         else task_source(task.task, split, data_cfg))
  pre = preprocess.Preprocessor(task.task, data_cfg, vocab, train=False,
                                image_size=task.image_size)
  if pad_sync is None and process_count > 1:
    pad_sync = process_max
  return EvalIterator(task.name, src, pre, task.spec,
                      batch_size=int(batch_size),
                      process_index=process_index,
                      process_count=process_count, pad_sync=pad_sync)


def eval_batches(data_cfg, vocab, task, split: str, **kwargs):
  """One evaluation pass as a generator (see ``make_eval_iterator``)."""
  return iter(make_eval_iterator(data_cfg, vocab, task, split, **kwargs))
