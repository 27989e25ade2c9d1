"""Preemption: SIGTERM/SIGINT become a flag the training loop checks.

  with preemption.install_signal_handlers() as flag:
    state = preemption.wait_for(lambda: compile_and_init(), flag)
    ...                      # the loop saves and returns once flag.requested

A preempted job (SIGTERM from the scheduler) or a Ctrl-C stops at once
wherever it is: between steps it saves a checkpoint of the steps done and
exits 0; in a phase that holds nothing newer than the last checkpoint (set-
up, compilation before the first new step, an evaluation after a save) it
exits without saving, and the restarted run redoes that phase. A second
Ctrl-C stops at once.

XLA's compiler and a long evaluation do not return to Python for seconds to
minutes, and Python runs its signal handlers only between bytecodes, so the
loop runs them in a thread and waits on the flag (``wait_for``). The thread
is left running when the signal comes; ``launch/train.py`` then ends the
process with ``os._exit``.
"""

import logging
import signal
import threading
from typing import Any, Callable, Optional

import jax
from jax.experimental import multihost_utils
import numpy as np


_THREAD_PREFIX = 'mm_jax wait_for: '


class Preempted(Exception):
  """A signal came during a phase that ``wait_for`` left without waiting."""


class ShutdownFlag:
  """``.requested`` turns True on SIGTERM/SIGINT; ``close()`` restores.

  The loop checks it every step; when set, it saves with ``force=True``,
  calls ``Checkpointer.wait()`` and returns (exit 0). A second SIGINT raises
  KeyboardInterrupt, so a stuck run can still be stopped.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.requested = False
    self.signal_name = None
    self._previous = {}
    if threading.current_thread() is not threading.main_thread():
      logging.warning('Not in the main thread: SIGTERM/SIGINT are not '
                      'caught, so no checkpoint is saved on them.')
      return
    for sig in signals:
      self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    if self.requested and signum == signal.SIGINT:
      self.close()
      raise KeyboardInterrupt
    self.requested = True
    self.signal_name = signal.Signals(signum).name
    logging.warning('%s received: stopping (a checkpoint is saved if steps '
                    'were done since the last one).', self.signal_name)

  def any_process(self) -> bool:
    """True if any process was signalled (collective when multi-process)."""
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.max(flags))

  def close(self) -> None:
    """Puts the previous handlers back."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def install_signal_handlers() -> ShutdownFlag:
  """Catches SIGTERM and SIGINT; see ``ShutdownFlag``."""
  return ShutdownFlag()


def wait_for(fn: Callable[[], Any], flag: Optional[ShutdownFlag], *,
             stop: Optional[threading.Event] = None, what: str = 'work',
             poll_seconds: float = 0.05) -> Any:
  """``fn()``, run in a daemon thread while this one watches ``flag``.

  Returns what ``fn`` returns (or raises what it raises). If ``flag`` is
  raised first, sets ``stop`` (an event ``fn`` may watch to wind down) and
  raises ``Preempted`` at once, leaving the thread to finish or be killed
  with the process. Without a flag, outside the main thread, or with
  several processes (which must reach the next step together to agree on
  stopping) it just calls ``fn()``.
  """
  if (flag is None or threading.current_thread() is not
      threading.main_thread() or jax.process_count() > 1):
    return fn()
  if flag.requested:
    logging.warning('%s received before %s: not starting it.',
                    flag.signal_name, what)
    raise Preempted(f'{flag.signal_name} before {what}')
  box = {}

  def target():
    try:
      box['value'] = fn()
    except BaseException as e:  # pylint: disable=broad-except
      box['error'] = e

  thread = threading.Thread(target=target, daemon=True,
                            name=f'{_THREAD_PREFIX}{what}')
  thread.start()
  while thread.is_alive():
    thread.join(poll_seconds)
    if flag.requested and thread.is_alive():
      if stop is not None:
        stop.set()
      logging.warning('%s received during %s: leaving it now.',
                      flag.signal_name, what)
      raise Preempted(f'{flag.signal_name} during {what}')
  if 'error' in box:
    raise box['error']
  return box['value']


def left_running() -> bool:
  """Whether a thread ``wait_for`` left (on a signal) is still running."""
  return any(t.name.startswith(_THREAD_PREFIX) and t.is_alive()
             for t in threading.enumerate())
