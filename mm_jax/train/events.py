"""TensorBoard event files, written without TensorFlow.

clu's ``SummaryWriter`` writes with ``tf.summary``, and its package
``clu.metric_writers`` imports that module first thing, so every clu writer
(``create_default_writer``, ``LoggingWriter``, ``AsyncMultiWriter``) imports
TensorFlow (~1.3 GB installed, ~4.5 s to import). ``EventWriter`` writes the
same summaries with the ``tensorboard`` package alone: the summary protos of
its scalar, histogram and text plugins, framed as TFRecord records by its
``RecordWriter``, which TensorBoard reads as it reads ``tf.summary`` output.
Its methods are those of clu's ``MetricWriter`` that ``Reporter`` uses
(``write_scalars``, ``write_texts``, ``write_histograms``, ``flush``,
``close``), with the same arguments. (It cannot subclass ``MetricWriter``:
importing ``clu.metric_writers.interface`` runs that package's
``__init__``, which imports TensorFlow.) ``read_events`` reads a file back.
"""

import concurrent.futures
import itertools
import os
import socket
import struct
import threading
import time
from typing import Any, Callable, Mapping, Optional

import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer import record_writer

FILE_PREFIX = 'events.out.tfevents'
DEFAULT_BUCKETS = 30          # as tf.summary.histogram
_file_ids = itertools.count()
_file_ids_lock = threading.Lock()


def _file_name() -> str:
  """'events.out.tfevents.<time>.<host>.<pid>.<n>.v2', unique per process."""
  with _file_ids_lock:
    n = next(_file_ids)
  return (f'{FILE_PREFIX}.{int(time.time())}.{socket.gethostname()}.'
          f'{os.getpid()}.{n}.v2')


class EventWriter:
  """Appends summaries to a new ``events.out.tfevents.*`` file in ``logdir``.

  Args:
    logdir: the directory of the event file (created if missing).
    asynchronous: build and write the records on a background thread;
      ``flush`` waits for them and raises the first error of a write.
  """

  def __init__(self, logdir: str, *, asynchronous: bool = True):
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(logdir, _file_name())
    self._file = open(self.path, 'xb')
    self._records = record_writer.RecordWriter(self._file)
    self._pool = (concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix='EventWriter') if asynchronous else None)
    self._pending = []
    self._write_event(event_pb2.Event(wall_time=time.time(),
                                      file_version='brain.Event:2'))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes scalars (floats, ints, 0-d arrays) under their names."""
    self._submit(step, {k: np.asarray(v) for k, v in scalars.items()},
                 scalar_summary.scalar_pb)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Writes texts (Markdown in TensorBoard's text tab)."""
    self._submit(step, dict(texts), text_summary.text_pb)

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Optional[Mapping[str, int]] = None
                       ) -> None:
    """Writes a histogram of each array (``num_buckets[name]`` buckets,
    default 30)."""
    buckets = dict(num_buckets or {})
    values = {k: np.asarray(v) for k, v in arrays.items()}
    self._submit(step, values, lambda tag, value: histogram_summary.
                 histogram_pb(tag, value, buckets.get(tag, DEFAULT_BUCKETS)))

  def flush(self) -> None:
    """Waits for queued writes (raising the first error) and flushes."""
    pending, self._pending = self._pending, []
    for future in pending:
      future.result()
    self._file.flush()

  def close(self) -> None:
    if self._file.closed:
      return
    try:
      self.flush()
    finally:
      if self._pool is not None:
        self._pool.shutdown()
      self._file.close()

  def _submit(self, step: int, values: Mapping[str, Any],
              to_summary: Callable[[str, Any], summary_pb2.Summary]) -> None:
    wall_time = time.time()

    def write():
      for tag, value in values.items():
        self._write_event(event_pb2.Event(
            wall_time=wall_time, step=int(step),
            summary=to_summary(tag, value)))

    if self._pool is None:
      write()
    else:
      self._pending = [f for f in self._pending if not f.done() or
                       f.exception() is not None]
      self._pending.append(self._pool.submit(write))

  def _write_event(self, event: event_pb2.Event) -> None:
    self._records.write(event.SerializeToString())


def read_events(path: str) -> list[event_pb2.Event]:
  """The events of an event file, in order (e.g. for tests; no CRC check)."""
  with open(path, 'rb') as f:
    data = f.read()
  out, pos = [], 0
  while pos < len(data):
    (length,) = struct.unpack('<Q', data[pos:pos + 8])
    pos += 12                          # uint64 length, uint32 its CRC
    out.append(event_pb2.Event.FromString(data[pos:pos + length]))
    pos += length + 4                  # the data, uint32 its CRC
  return out
