"""The files a training run leaves in its work directory, read back.

  step = run_files.resolve_step(workdir, None)         # the latest
  meta = run_files.read_meta(workdir, step)
  config = run_files.config_from_meta(meta.get('config'))

Layout: ``metrics.jsonl`` (``METRICS_FILE``), ``expert_load.jsonl``
(``LOAD_FILE``) and ``checkpoints/<step>/{state,data,meta}``, written by
``mm_jax.train`` (``reporting.Reporter``, ``checkpoint.Checkpointer``). Only
finalised checkpoints count (their directory holds orbax's
``commit_success.txt``). Files that fail to read back raise
``DamagedCheckpointError`` (``reading``). Evaluation, inference and training
read through this module; none of it writes.
"""

import asyncio
import contextlib
import json
import logging
import os
from typing import Optional
import warnings

import ml_collections
import orbax.checkpoint as ocp

from mm_jax.config import defaults as config_defaults
from mm_jax.model import body

METRICS_FILE = 'metrics.jsonl'
LOAD_FILE = 'expert_load.jsonl'


def read_metrics(workdir: str, name: str = METRICS_FILE) -> list[dict]:
  """The records of a run's ``metrics.jsonl`` (or ``name``), oldest first;
  [] when the file does not exist."""
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
CHECKPOINTS = 'checkpoints'
COMMIT_FILE = 'commit_success.txt'   # orbax writes it just before the rename


class DamagedCheckpointError(ValueError):
  """A finalised checkpoint whose files do not read back (truncated or
  missing data file, garbled JSON). ``.step``, ``.where``, ``.error``."""

  def __init__(self, where: str, error: BaseException):
    self.where, self.error = where, error
    name = os.path.basename(where)
    self.step = int(name) if name.isdigit() else None
    super().__init__(f'Checkpoint {where} is damaged: {error_summary(error)}')


def error_summary(error: BaseException, limit: int = 300) -> str:
  """``Type: first line`` of ``error``, without tensorstore's spec dump."""
  text = (str(error).strip().splitlines() or [''])[0]
  text = text.split(' [tensorstore_spec=')[0]
  if len(text) > limit:
    text = text[:limit - 3] + '...'
  return f'{type(error).__name__}: {text}'


# Status codes of tensorstore errors that mean the files are bad; others
# (RESOURCE_EXHAUSTED, UNAVAILABLE, ...) may be transient and are re-raised.
_DAMAGE_CODES = ('OUT_OF_RANGE', 'NOT_FOUND', 'DATA_LOSS',
                 'FAILED_PRECONDITION', 'INVALID_ARGUMENT')


def _damage(error: BaseException) -> Optional[BaseException]:
  """The error in ``error``'s cause chain that says the files are bad (orbax
  wraps tensorstore's in a plain Exception), or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError,
                          FileNotFoundError, EOFError)) or (
                              isinstance(error, ValueError) and
                              str(error).startswith(_DAMAGE_CODES)):
      return error
    error = error.__cause__ or error.__context__
  return None


class _DrainingEventLoop(asyncio.SelectorEventLoop):
  """An event loop whose ``close()`` first lets its pending tasks end.

  Orbax runs each read in a fresh loop (``asyncio_utils.run_sync``) and
  closes it as soon as the first read fails, while tensorstore's other reads
  are in flight; each of those then calls ``call_soon_threadsafe`` on the
  closed loop from a tensorstore thread, which prints a "RuntimeError: Event
  loop is closed" traceback (~70 for one truncated file). They finish (or
  fail) quickly once waited for.
  """

  def close(self):
    if not self.is_closed() and not self.is_running():
      pending = [t for t in asyncio.all_tasks(self) if not t.done()]
      if pending:
        done, _ = self.run_until_complete(asyncio.wait(pending, timeout=60))
        for task in done:
          if not task.cancelled():
            task.exception()           # retrieved: no "never retrieved" log
    super().close()


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):

  def new_event_loop(self):
    return _DrainingEventLoop()


@contextlib.contextmanager
def _draining_event_loops():
  """New asyncio loops drain their tasks before closing (for orbax reads)."""
  with warnings.catch_warnings():      # the policy API is deprecated in 3.14
    warnings.simplefilter('ignore', DeprecationWarning)
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DrainingPolicy())
  try:
    yield
  finally:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', DeprecationWarning)
      asyncio.set_event_loop_policy(previous)


@contextlib.contextmanager
def reading(where: str):
  """Wraps orbax reads of checkpoint directory ``where``: damaged files
  raise ``DamagedCheckpointError`` (other errors pass through), and no
  asyncio noise is left behind."""
  with _draining_event_loops():
    try:
      yield
    except DamagedCheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-exception-caught
      cause = _damage(e)
      if cause is None:
        raise
      raise DamagedCheckpointError(where, cause) from e


def finalized_steps(directory: str, steps) -> list[int]:
  """The ``steps`` whose directory holds orbax's commit marker."""
  return sorted(s for s in steps if os.path.exists(
      os.path.join(directory, str(s), COMMIT_FILE)))


def checkpoint_dir(workdir: str) -> str:
  """``<workdir>/checkpoints`` (absolute)."""
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)),
                      CHECKPOINTS)


def available_steps(workdir: str) -> list[int]:
  """Steps of the finalised checkpoints in ``workdir``, ascending."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    return []
  steps = [int(n) for n in os.listdir(directory) if n.isdigit()]
  return finalized_steps(directory, steps)


def resolve_step(workdir: str, step: Optional[int]) -> int:
  """``step`` (or the latest) after checking it exists; clear errors."""
  steps = available_steps(workdir)
  if not steps:
    raise FileNotFoundError(
        f'No finalised checkpoint in {checkpoint_dir(workdir)} (searched for '
        '<step>/ directories holding commit_success.txt). Is --workdir the '
        'directory given to launch/train.py, and has it saved a checkpoint?')
  if step is None:
    return steps[-1]
  if int(step) not in steps:
    raise ValueError(f'No checkpoint for step {step} in '
                     f'{checkpoint_dir(workdir)}; available steps: {steps}.')
  return int(step)


def read_meta(workdir: str, step: int) -> dict:
  """The ``meta`` item (JSON) of checkpoint ``step``; a garbled or missing
  file raises ``DamagedCheckpointError``."""
  where = os.path.join(checkpoint_dir(workdir), str(step))
  with reading(where):
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as reader:
      return reader.restore(os.path.join(where, 'meta'))


def _like(template, value):
  """JSON ``value`` in the type of ``template`` (lists -> tuples)."""
  if isinstance(value, list):
    return tuple(_like(None, v) for v in value)
  if isinstance(template, float) and isinstance(value, int):
    return float(value)
  return value


# Keys older checkpoints store that mm_jax removed or reshaped on purpose
# (an init choice, replaced by model.conv_block_zero_init; tiny train sizes,
# now per task in data.tiny.num_train): dropped silently.
RETIRED_KEYS = ('config.model.conv_block_norm_scale_init',
                'config.data.tiny.num_speech_train',
                # Now the batch contract's (mm_jax.contract) and the data's.
                'config.model.pad_id', 'config.model.audio_mel_bins',
                'config.model.audio_channels')


def _merge(target: ml_collections.ConfigDict, values: dict, where: str):
  for key, value in values.items():
    if f'{where}.{key}' in RETIRED_KEYS or (
        key in target and isinstance(target[key], ml_collections.ConfigDict)
        and not isinstance(value, dict)):
      continue
    if isinstance(value, dict):
      if key not in target:
        target[key] = ml_collections.ConfigDict()
      _merge(target[key], value, f'{where}.{key}')
    elif key in target:
      try:
        target[key] = _like(target[key], value)
      except TypeError:          # a key whose type changed (train.remat)
        logging.info('Checkpoint config %s.%s = %r does not fit the current '
                     'type; using the default %r.', where, key, value,
                     target[key])
    else:
      logging.warning('Checkpoint config key %s.%s is not in the schema '
                      '(a newer or older mm_jax?); keeping it.', where, key)
      target[key] = _like(None, value)


def config_from_meta(config_json: dict) -> ml_collections.ConfigDict:
  """A locked ConfigDict from the JSON of ``train.checkpoint.make_meta``.

  Starts from ``config_defaults.get_config`` at the checkpoint's model size
  and sets every stored value (JSON lists become tuples, as in the schema).
  """
  if not isinstance(config_json, dict) or 'model' not in config_json:
    raise ValueError('The checkpoint meta holds no config; pass config= '
                     '(the run\'s get_config()) to mm_jax.load.')
  config = config_defaults.get_config(config_json['model'].get('size', 'tiny'))
  missing = {k: v for k, v in body.LEGACY_LAYOUT.items()
             if k not in config_json['model']}
  if missing:
    logging.info('The checkpoint predates some layout switches: reading it '
                 'with the layout it was trained with, %s.', missing)
  with config.unlocked():
    _merge(config, config_json, 'config')
    config.model.update(missing)
  return config.lock()
