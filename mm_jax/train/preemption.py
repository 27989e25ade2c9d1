"""Preemption: SIGTERM/SIGINT become a flag the training loop checks.

  with preemption.install_signal_handlers() as flag:
    ...                      # the loop saves and returns once flag.requested

A preempted job (SIGTERM from the scheduler) or a Ctrl-C saves a checkpoint
after the current step and exits 0; a second Ctrl-C stops at once.
"""

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils
import numpy as np


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
    logging.warning('%s received: saving a checkpoint after this step, then '
                    'exiting.', self.signal_name)

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
