"""Per-task streams: one task's examples for one process, batched.

Training (``TaskStream``): a grain ``MapDataset`` over the task's
random-access source, sharded per process (``[process_index::process_count]``,
disjoint and covering), shuffled anew each epoch (``shuffle``), repeated
forever, preprocessed with an index-seeded RNG (``random_map``), then read by
a grain iterator (``ReadOptions`` threads; ``mp_prefetch`` worker processes
when ``config.data.worker_count > 0``). Bad records pass through grain as
``Skip`` markers and are counted here, where they are consumed, so the counters
and grain's iterator state (``{'next_index': n}``: records consumed) always
describe the same position. Batches are filled with the next valid examples,
so a skipped example is replaced by the next one of the same task.

Evaluation (``eval_pass``): one ordered pass over the process's shard in fixed
slots: every process yields the same number of batches
(ceil(ceil(N / P) / B)); skipped records and the tail become weight-0 slots
(``example_mask`` False).
"""

import copy
import logging
import math
import zlib
from typing import Dict, Iterator, Optional

from absl import flags
import grain
import numpy as np

from mm_jax.data import batching
from mm_jax.data.preprocess import Skip

COUNTER_KEYS = ('examples', 'skipped_corrupt', 'skipped_empty',
                'skipped_too_long')
READ_THREADS = 4          # grain reader threads per task stream
MAX_SKIP_RUN = 10_000     # consecutive bad records before giving up
PERMUTATION_MAX = 1 << 20  # shards up to this size shuffle by permutation


class SafeSource:
  """Wraps a random-access source: a failing ``__getitem__`` (undecodable
  image, truncated audio, ``registry.CorruptExample``) yields
  ``Skip('corrupt')`` instead of raising."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int):
    try:
      return self._source[index]
    except Exception as e:  # pylint: disable=broad-except
      return Skip('corrupt', f'record {index}: {type(e).__name__}: {e}')


def task_seed(seed: int, name: str, salt: int = 0) -> int:
  """A 32-bit seed per (config seed, task, use); stable across runs."""
  key = f'{int(seed)}/{name}/{salt}'.encode()
  return zlib.crc32(key) & 0xFFFFFFFF


def shard(source, process_index: int,
          process_count: int) -> grain.MapDataset:
  """This process's records: ``source[process_index::process_count]``."""
  ds = grain.MapDataset.source(SafeSource(source))
  return ds.slice(slice(process_index, None, process_count))


class EpochShuffle(grain.MapDataset):
  """A fresh permutation of the parent per epoch, from (seed, epoch).

  Used for shards of up to ``PERMUTATION_MAX`` records: grain's index
  shuffle (``MapDataset.shuffle``) costs about 1/n seconds per element for
  small n (6 ms at n = 5, 0.2 ms at n = 100 measured here), while a cached
  numpy permutation costs microseconds. Larger shards use grain's shuffle
  (about 5 us per element, no memory per epoch).
  """

  def __init__(self, parent: grain.MapDataset, seed: int):
    super().__init__(parent)
    self._seed = int(seed)
    self._length = len(parent)
    self._perms = {}                 # epoch -> int32 [n]; the last two kept

  def __len__(self) -> int:
    return self._length

  def _permutation(self, epoch: int) -> np.ndarray:
    perm = self._perms.get(epoch)
    if perm is None:
      rng = np.random.default_rng([self._seed, epoch])
      perm = rng.permutation(self._length).astype(np.int32)
      self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
      self._perms[epoch] = perm
    return perm

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, i = divmod(int(index), self._length)
    offset = int(self._permutation(epoch)[i])
    return self._parent[epoch * self._length + offset]

  def __str__(self) -> str:
    return f'EpochShuffle(seed={self._seed})'


def shuffle(ds: grain.MapDataset, seed: int) -> grain.MapDataset:
  """``ds`` reshuffled every epoch (deterministic in ``seed`` and epoch)."""
  if len(ds) <= PERMUTATION_MAX:
    return EpochShuffle(ds, seed)
  return ds.shuffle(seed=seed)


def train_dataset(source, preprocessor, *, name: str, seed: int,
                  process_index: int, process_count: int) -> grain.MapDataset:
  """Endless, shuffled (per epoch), preprocessed records of one shard."""
  ds = shard(source, process_index, process_count)
  if len(ds) < 1:
    raise ValueError(f'Task {name!r}: process {process_index} of '
                     f'{process_count} has no training records (source has '
                     f'{len(source)}); use fewer processes or more data.')
  ds = shuffle(ds, task_seed(seed, name, 0)).repeat()
  return ds.random_map(preprocessor, seed=task_seed(seed, name, 1))


def _grain_iterator(ds, worker_count: int, buffer: int):
  """A grain iterator over ``ds`` with reader threads / worker processes."""
  it_ds = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=READ_THREADS, prefetch_buffer_size=buffer))
  if worker_count > 0:
    if not flags.FLAGS.is_parsed():
      raise ValueError('config.data.worker_count > 0 starts grain worker '
                       'processes, which read absl flags: run under absl.app '
                       'or call absl.flags.FLAGS.mark_as_parsed() first.')
    it_ds = it_ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(it_ds)


class Counters:
  """Per-task example / skip counts, with power-of-two logging of skips."""

  def __init__(self, name: str, values: Optional[Dict[str, int]] = None):
    self.name = name
    self.values = dict.fromkeys(COUNTER_KEYS, 0)
    self.values.update(values or {})

  def skip(self, marker: Skip) -> None:
    key = 'skipped_' + marker.reason
    self.values[key] += 1
    n = self.values[key]
    if n & (n - 1) == 0:        # 1, 2, 4, 8, ...
      logging.warning('Task %s: %d %s example(s) skipped so far; latest: %s',
                      self.name, n, marker.reason, marker.detail)


class TaskStream:
  """Endless bucketed batches [B, ...] of one task for one process.

  Not thread-safe: one thread at a time calls ``next_batch``/``get_state``.
  """

  def __init__(self, name: str, dataset: grain.MapDataset,
               spec: batching.BatchSpec, batch_size: int, *,
               worker_count: int = 0):
    self.name = name
    self.spec = spec
    self.batch_size = int(batch_size)
    self._dataset = dataset
    self._worker_count = int(worker_count)
    self._it = None
    self._counters = Counters(name)

  def _iterator(self):
    if self._it is None:
      self._it = _grain_iterator(self._dataset, self._worker_count,
                                 buffer=2 * self.batch_size)
    return self._it

  def next_batch(self) -> dict:
    """The next batch (see ``batching.collate``) of B valid examples."""
    it, examples, run = self._iterator(), [], 0
    while len(examples) < self.batch_size:
      example = next(it)
      if isinstance(example, Skip):
        self._counters.skip(example)
        run += 1
        if run >= MAX_SKIP_RUN:    # the data, not a few records, is broken
          raise RuntimeError(
              f'Task {self.name!r}: {run} consecutive records were bad '
              f'(latest: {example.reason}: {example.detail}); check the '
              'data, max lengths and buckets in config.data.')
        continue
      run = 0
      examples.append(example)
    self._counters.values['examples'] += len(examples)
    return batching.collate(examples, self.spec)

  def counters(self) -> Dict[str, int]:
    return dict(self._counters.values)

  def get_state(self) -> dict:
    """JSON-serialisable: grain iterator state + counters."""
    return {'grain': copy.deepcopy(self._iterator().get_state()),
            'counters': self.counters()}

  def set_state(self, state: dict) -> None:
    """Restores ``get_state()``; the next batch continues from there."""
    self.close()
    self._iterator().set_state(state['grain'])
    self._counters = Counters(self.name, state['counters'])

  def close(self) -> None:
    """Releases grain threads / worker processes (reopened on demand)."""
    if self._it is not None and hasattr(self._it, 'close'):
      self._it.close()
    self._it = None


def eval_num_batches(num_records: int, batch_size: int,
                     process_count: int) -> int:
  """Batches per process of an evaluation pass (equal on every process)."""
  return math.ceil(math.ceil(num_records / process_count) / batch_size)


def eval_pass(name: str, source, preprocessor, spec: batching.BatchSpec, *,
              batch_size: int, process_index: int, process_count: int,
              counters: Counters) -> Iterator[dict]:
  """One deterministic pass over a split: batches [B, ...] + example_mask."""
  ds = shard(source, process_index, process_count).map(preprocessor)
  it = iter(ds.to_iter_dataset(grain.ReadOptions(
      num_threads=READ_THREADS, prefetch_buffer_size=2 * batch_size)))
  num_batches = eval_num_batches(len(source), batch_size, process_count)
  for _ in range(num_batches):
    slots = []
    for example in _take(it, batch_size):
      if isinstance(example, Skip):
        counters.skip(example)
        example = None
      elif example is not None:
        counters.values['examples'] += 1
      slots.append(example)
    yield batching.collate(slots, spec, eval_batch=True)
  if hasattr(it, 'close'):
    it.close()


def _take(it, n: int):
  """Up to ``n`` items of ``it``, then None for each missing one."""
  for _ in range(n):
    yield next(it, None)
