"""Background prefetching of (batch, state) pairs, one thread per task stream.

A producer thread calls ``produce()`` (which returns a batch together with the
stream state *after* that batch) and keeps up to ``depth`` results queued. The
consumer records the state that comes with each batch it hands out, so a
checkpoint describes batches handed out, never batches merely prefetched.
"""

import queue
import threading
from typing import Any, Callable, Tuple

_POLL_S = 0.1


class Prefetcher:
  """Runs ``produce`` in a daemon thread with a bounded queue.

  Exceptions raised by ``produce`` are re-raised by ``get`` (chained).
  """

  def __init__(self, produce: Callable[[], Tuple[Any, Any]], depth: int,
               name: str):
    if depth < 1:
      raise ValueError(f'prefetch depth must be >= 1, got {depth}.')
    self.name = name
    self._produce = produce
    self._queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True,
                                    name=f'mm_jax-prefetch-{name}')
    self._thread.start()

  def _run(self) -> None:
    while not self._stop.is_set():
      try:
        item = (True, self._produce())
      except Exception as e:  # pylint: disable=broad-except
        item = (False, e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=_POLL_S)
          break
        except queue.Full:
          continue
      if not item[0]:
        return

  def get(self) -> Tuple[Any, Any]:
    """The next produced item; blocks until one is ready."""
    while True:
      try:
        ok, value = self._queue.get(timeout=_POLL_S)
        break
      except queue.Empty:
        if not self._thread.is_alive():
          raise RuntimeError(f'Prefetch thread of {self.name} stopped.')
    if not ok:
      raise RuntimeError(f'Input pipeline of {self.name} failed.') from value
    return value

  def close(self) -> None:
    """Stops the thread and drops whatever was prefetched."""
    self._stop.set()
    while self._thread.is_alive():
      try:
        self._queue.get_nowait()
      except queue.Empty:
        pass
      self._thread.join(timeout=_POLL_S)
