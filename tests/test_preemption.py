"""SIGTERM/SIGINT handling (``mm_jax.train.preemption``); the loop's save
on a signal is in tests/test_train_loop.py."""

import os
import signal
import time

import pytest

from mm_jax.train import preemption


def _wait_for(predicate):
  deadline = time.time() + 5
  while not predicate() and time.time() < deadline:
    time.sleep(0.01)


def test_sigterm_sets_flag_and_handlers_are_restored():
  previous_term = signal.getsignal(signal.SIGTERM)
  previous_int = signal.getsignal(signal.SIGINT)
  flag = preemption.install_signal_handlers()
  try:
    assert not flag.requested and not flag.any_process()
    os.kill(os.getpid(), signal.SIGTERM)
    _wait_for(lambda: flag.requested)
    assert flag.requested and flag.signal_name == 'SIGTERM'
    assert flag.any_process()
    # A second SIGINT stops a run that does not come to a stop.
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      _wait_for(lambda: False)
  finally:
    flag.close()
  assert signal.getsignal(signal.SIGTERM) is previous_term
  assert signal.getsignal(signal.SIGINT) is previous_int


def test_sigint_sets_flag():
  with preemption.install_signal_handlers() as flag:
    os.kill(os.getpid(), signal.SIGINT)
    _wait_for(lambda: flag.requested)
    assert flag.signal_name == 'SIGINT'
