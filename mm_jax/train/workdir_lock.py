"""One training run per work directory: a lock file held by process 0.

  with workdir_lock.WorkdirLock(workdir):     # raises WorkdirLockedError
    ...                                        # train

``<workdir>/train.lock`` holds JSON ``{host, pid, started, token}``. It is
created atomically (``O_CREAT | O_EXCL``), so of two runs started on one
work directory exactly one gets it; the other raises ``WorkdirLockedError``
naming the holder's host and PID. A lock whose holder is gone is taken over
with a warning: same host and the PID is not alive (or is this very process,
e.g. a restarted container that got the old PID), or a file that stays
empty/garbled. A lock held on another host cannot be checked from here: the
error says to delete the file once that run is known to be gone.
``release()`` removes the file only if it is still this holder's.
"""

import datetime
import errno
import json
import logging
import os
import socket
import time
import uuid
from typing import Optional

LOCK_NAME = 'train.lock'
_WRITE_GRACE_S = 10.0    # an unreadable lock younger than this is being written
_HELD = set()            # lock paths this process holds (in-process reuse)


class WorkdirLockedError(RuntimeError):
  """Another run holds the work directory's lock (``.holder``: its JSON)."""

  def __init__(self, message: str, holder: Optional[dict]):
    super().__init__(message)
    self.holder = holder


def _pid_alive(pid: int) -> bool:
  """Whether process ``pid`` exists on this host."""
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:           # exists, owned by another user
    return True
  except OSError as e:
    return e.errno != errno.ESRCH
  return True


def _read(path: str) -> Optional[dict]:
  """The lock's JSON; None when missing, empty or garbled."""
  try:
    with open(path) as f:
      holder = json.load(f)
  except (OSError, ValueError):
    return None
  return holder if isinstance(holder, dict) else None


class WorkdirLock:
  """The lock file of one work directory (a context manager).

  Attributes:
    path: ``<workdir>/train.lock``.
    held: whether this object holds it.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(os.path.expanduser(workdir)),
                             LOCK_NAME)
    self.held = False
    self._token = uuid.uuid4().hex

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock (taking over a stale one with a warning).

    Raises:
      WorkdirLockedError: a live run holds it (message: host, PID, fix).
    """
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    me = {'host': socket.gethostname(), 'pid': os.getpid(),
          'started': datetime.datetime.now().isoformat(timespec='seconds'),
          'token': self._token}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        self._check_holder()          # raises, or removes a stale lock
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump(me, f)
      self.held = True
      _HELD.add(self.path)
      return self
    raise WorkdirLockedError(f'Could not take {self.path}: other runs keep '
                             'creating it. Is another run starting here?',
                             _read(self.path))

  def _check_holder(self) -> None:
    """Raises WorkdirLockedError for a live holder; removes a stale lock."""
    holder = _read(self.path)
    stale = self._stale_reason(holder)
    if stale is None:
      raise WorkdirLockedError(self._locked_message(holder), holder)
    logging.warning('Taking over the lock %s of a run that is gone (%s).',
                    self.path, stale)
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass

  def _stale_reason(self, holder: Optional[dict]) -> Optional[str]:
    """Why ``holder``'s lock is stale, or None when it may be live."""
    if holder is None:
      try:
        age = time.time() - os.path.getmtime(self.path)
      except FileNotFoundError:
        return 'removed meanwhile'
      return (f'an unreadable lock file, {age:.0f} s old'
              if age > _WRITE_GRACE_S else None)
    host, pid = holder.get('host'), holder.get('pid')
    if host != socket.gethostname() or not isinstance(pid, int):
      return None
    if self.path in _HELD:
      return None                     # this process holds it, elsewhere
    if pid == os.getpid():
      return f'host {host}, PID {pid}: this process, which does not hold it'
    if not _pid_alive(pid):
      return f'host {host}, PID {pid} is not running'
    return None

  def _locked_message(self, holder: Optional[dict]) -> str:
    if holder is None:
      who = 'a run that is writing the lock file right now'
    else:
      who = (f'host {holder.get("host")}, PID {holder.get("pid")} (since '
             f'{holder.get("started")})')
    same_host = holder is not None and holder.get('host') == (
        socket.gethostname())
    gone = ('' if same_host else ' If that run is gone (its host cannot be '
            f'checked from here), delete {self.path} and rerun.')
    return (f'The work directory {os.path.dirname(self.path)} is in use by '
            f'another training run: {who}. Two runs writing one work '
            'directory would overwrite each other\'s checkpoints and '
            f'metrics. Stop that run, or use another --workdir.{gone}')

  def release(self) -> None:
    """Removes the lock file if this object holds it (idempotent)."""
    if not self.held:
      return
    self.held = False
    _HELD.discard(self.path)
    holder = _read(self.path)
    if holder is not None and holder.get('token') != self._token:
      logging.warning('Not removing %s: it now belongs to host %s, PID %s.',
                      self.path, holder.get('host'), holder.get('pid'))
      return
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
