"""Tests for mm_jax/train/workdir_lock.py: one training run per work
directory (the loop's use of it is in test_train_loop.py)."""

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from mm_jax.train import workdir_lock

LOCK = workdir_lock.LOCK_NAME


def _holder(tmp_path):
  with open(tmp_path / LOCK) as f:
    return json.load(f)


def _write_lock(tmp_path, **holder):
  with open(tmp_path / LOCK, 'w') as f:
    json.dump(holder, f)


def _dead_pid():
  """A PID that is not running on this host (a finished child's)."""
  child = subprocess.Popen([sys.executable, '-c', 'pass'])
  child.wait()
  return child.pid


def test_acquire_writes_host_and_pid_and_release_removes(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path / 'new')) as lock:
    assert lock.held
    holder = _holder(tmp_path / 'new')
    assert holder['host'] == socket.gethostname()
    assert holder['pid'] == os.getpid() and holder['started']
  assert not os.path.exists(lock.path)
  lock.release()                                  # idempotent


def test_second_run_is_refused_naming_host_and_pid(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path)):
    with pytest.raises(workdir_lock.WorkdirLockedError) as error:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    assert _holder(tmp_path)['pid'] == os.getpid()   # untouched
  message = str(error.value)
  assert f'host {socket.gethostname()}, PID {os.getpid()}' in message
  assert 'another --workdir' in message
  assert error.value.holder['pid'] == os.getpid()


def test_live_process_on_this_host_holds_it(tmp_path):
  child = subprocess.Popen([sys.executable, '-c',
                            'import time; time.sleep(60)'])
  try:
    _write_lock(tmp_path, host=socket.gethostname(), pid=child.pid,
                started='2024-01-01T00:00:00')
    with pytest.raises(workdir_lock.WorkdirLockedError,
                       match=f'PID {child.pid} \\(since 2024'):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  finally:
    child.kill()
    child.wait()
  # Once it is gone the lock is stale.
  with workdir_lock.WorkdirLock(str(tmp_path)):
    assert _holder(tmp_path)['pid'] == os.getpid()


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path, caplog):
  pid = _dead_pid()
  _write_lock(tmp_path, host=socket.gethostname(), pid=pid, started='x')
  caplog.set_level(logging.WARNING)
  with workdir_lock.WorkdirLock(str(tmp_path)):
    assert _holder(tmp_path)['pid'] == os.getpid()
  (warning,) = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING]
  assert 'Taking over' in warning and f'PID {pid} is not running' in warning
  assert not os.path.exists(tmp_path / LOCK)


def test_own_pid_not_held_is_stale_but_held_is_not(tmp_path):
  """A restarted container may get the PID of the run that left the lock."""
  _write_lock(tmp_path, host=socket.gethostname(), pid=os.getpid())
  with workdir_lock.WorkdirLock(str(tmp_path)):
    with pytest.raises(workdir_lock.WorkdirLockedError):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()


def test_other_host_is_refused_with_how_to_clear(tmp_path):
  _write_lock(tmp_path, host='tpu-vm-7', pid=_dead_pid(), started='x')
  with pytest.raises(workdir_lock.WorkdirLockedError) as error:
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert 'host tpu-vm-7' in str(error.value)
  assert f'delete {tmp_path / LOCK}' in str(error.value)


def test_unreadable_lock_young_is_held_old_is_stale(tmp_path):
  (tmp_path / LOCK).write_text('')              # a holder writing it now
  with pytest.raises(workdir_lock.WorkdirLockedError, match='writing'):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  old = os.path.getmtime(tmp_path / LOCK) - 3600
  os.utime(tmp_path / LOCK, (old, old))
  with workdir_lock.WorkdirLock(str(tmp_path)):
    assert _holder(tmp_path)['pid'] == os.getpid()


def test_release_leaves_a_lock_taken_by_someone_else(tmp_path):
  lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  _write_lock(tmp_path, host='other', pid=1, token='theirs')
  lock.release()
  assert _holder(tmp_path)['host'] == 'other'


_HOLD = textwrap.dedent('''
    import sys, time
    from mm_jax.train import workdir_lock
    with workdir_lock.WorkdirLock(sys.argv[1]):
      print('locked', flush=True)
      time.sleep(60)
''')


def test_lock_between_processes_and_after_sigkill(tmp_path):
  proc = subprocess.Popen([sys.executable, '-c', _HOLD, str(tmp_path)],
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == 'locked'
    with pytest.raises(workdir_lock.WorkdirLockedError,
                       match=f'PID {proc.pid}'):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  finally:
    proc.kill()                                  # no release: stale
    proc.wait()
  assert _holder(tmp_path)['pid'] == proc.pid
  with workdir_lock.WorkdirLock(str(tmp_path)):
    assert _holder(tmp_path)['pid'] == os.getpid()
