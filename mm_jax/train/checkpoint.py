"""Checkpoints: orbax manager, resume order, data state, vocabulary reference.

Layout: ``<workdir>/checkpoints/<step>/{state,data,meta}``.

- ``state``: the TrainState pytree (step, params, opt_state, rng key data),
  written by orbax's PyTree handler and restored straight into the target
  shardings of an abstract state (``jax.ShapeDtypeStruct`` leaves with
  ``.sharding``), so it comes back already sharded.
- ``data``: JSON ``{'process_count': P, 'states': {'0': ..., 'P-1': ...}}``,
  every process's data-iterator state, gathered to all processes with
  ``multihost_utils.process_allgather`` (a JSON string as a uint8 array) when
  the save starts, so it is finalised atomically with the rest.
- ``meta``: JSON with the vocabulary path and sha256, the config, the class
  names, the mm_jax version, the step and the wall time (see ``make_meta``).

Resume order (``restore_or_init``): a finalised checkpoint in the work
directory (full restore) > ``init_from`` (parameters only: optimiser, step and
rng fresh) > ``init_fn()`` from scratch. A checkpoint trained with another
vocabulary is refused. Orbax writes into ``<step>.orbax-checkpoint-tmp*`` and
renames when finalised; only directories holding orbax's
``commit_success.txt`` count, so a partial checkpoint is never picked up.

Damage: a finalised checkpoint whose files fail to read (a truncated or
missing data file, garbled JSON) raises ``DamagedCheckpointError``.
``restore_or_init`` then moves it aside (``set_aside``: renamed to
``<step>.corrupt-<time>``, never deleted), logs one warning and resumes from
the next newest checkpoint that restores completely.
"""

import importlib.metadata
import json
import logging
import os
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from mm_jax import run_files
from mm_jax.model import body
# Reading a checkpoint back and its damage: run_files (eval reads with it).
from mm_jax.run_files import DamagedCheckpointError
from mm_jax.run_files import error_summary
from mm_jax.run_files import finalized_steps
from mm_jax.run_files import reading

_ITEMS = ('state', 'data', 'meta')


def mm_jax_version() -> str:
  """The installed mm_jax version (from the package metadata)."""
  try:
    return importlib.metadata.version('mm_jax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown (mm_jax not installed; run pip install -e .)'


def make_meta(config, vocab, class_names=None) -> dict:
  """Run metadata stored with every checkpoint (save adds step, wall time).

  Args:
    config: the run's ConfigDict.
    vocab: the run's ``Vocabulary`` (``.path``, ``.sha256``), or None.
    class_names: the label of each class id (``registry.class_names``), or
      None when the data names none; inference labels classes with them.
  """
  return {'vocab_path': vocab.path if vocab is not None else None,
          'vocab_sha256': vocab.sha256 if vocab is not None else None,
          'config': json.loads(config.to_json_best_effort()),
          'class_names': list(class_names) if class_names else None,
          'mm_jax_version': mm_jax_version()}


def check_vocabulary(meta: dict, vocab_sha256: Optional[str],
                     where: str) -> None:
  """Raises ValueError unless the checkpoint used the current vocabulary."""
  saved = meta.get('vocab_sha256')
  if saved != vocab_sha256:
    raise ValueError(
        f'The checkpoint {where} was trained with the vocabulary '
        f'{meta.get("vocab_path")!r} (sha256 {saved}); this run uses one with '
        f'sha256 {vocab_sha256}. Token ids would not match. Point '
        'config.data.vocab_path at the checkpoint\'s vocabulary, or use '
        'another work directory / init_from.')


class Restored(NamedTuple):
  """What ``restore_or_init`` found; ``source`` says which path was taken."""
  state: Any
  data_state: Optional[dict]    # this process's iterator state, or None
  meta: Optional[dict]
  source: str                   # 'workdir' | 'init_from' | 'scratch'
  message: str                  # one line for the log


def check_layout(meta: dict, model_config, where: str) -> None:
  """Raises ValueError when checkpoint ``where`` was trained with another
  body layout than ``model_config`` (``body.layout_differences``)."""
  stored = (meta.get('config') or {}).get('model')
  if not isinstance(stored, dict):
    return
  problems = body.layout_differences(stored, model_config)
  if problems:
    layout = body.stored_layout(stored)
    flag = lambda v: (f"'({','.join(map(str, v))})'" if isinstance(v, tuple)
                      else v)
    flags = ' '.join(f'--config.model.{k}={flag(layout[k])}' for k in layout
                     if k in model_config
                     and layout[k] != body.hashable(model_config[k]))
    raise ValueError(
        f'The checkpoint {where} was trained with another layout of the '
        'model (a checkpoint from before issue 13 has the old body):\n  ' +
        '\n  '.join(problems) + f'\nResume it with {flags}, or train in a '
        'new work directory.')


def set_aside(directory: str, step: int, error: BaseException
              ) -> Optional[str]:
  """Renames damaged checkpoint ``<directory>/<step>`` to
  ``<step>.corrupt-<time>`` (a name orbax does not list; nothing deleted)
  and logs one warning naming the step and the error. Returns the new path,
  or None when the rename failed (e.g. a read-only directory)."""
  source = os.path.join(directory, str(step))
  target = os.path.join(directory,
                        f'{step}.corrupt-{time.strftime("%Y%m%dT%H%M%S")}')
  n = 1
  while os.path.exists(target):
    target = f'{target.rsplit("~", 1)[0]}~{n}'
    n += 1
  summary = error_summary(getattr(error, 'error', error))
  try:
    os.rename(source, target)
  except OSError as e:
    logging.warning('Checkpoint %s (step %d) is damaged (%s) and could not be '
                    'moved aside (%s); skipping it.', source, step, summary, e)
    return None
  logging.warning('Checkpoint step %d is damaged (%s): moved %s to %s; using '
                  'the next newest checkpoint.', step, summary, source, target)
  return target


def _all_processes_agree(ok: bool) -> bool:
  """True when ``ok`` on every process (collective when multi-process)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def _handlers() -> dict:
  """Item handlers; jax.Arrays are saved without replica-parallel slicing.

  Orbax's default splits every replicated array into per-replica slices, one
  small dispatched (and, the first time, compiled) slice op each: ~1000 leaves
  x 8 replicas made the first save of the tiny model block for ~40 s on CPU
  (0.6 s without). Replica 0 writes each shard instead.
  """
  types = ocp.type_handlers
  registry = types.create_type_handler_registry(
      *[(t, types.get_type_handler(t))
        for t in (int, float, bytes, np.number, np.ndarray, str)],
      (jax.Array, types.ArrayHandler(use_replica_parallel=False)))
  state = ocp.PyTreeCheckpointHandler(type_handler_registry=registry)
  return {'state': state, 'data': ocp.JsonCheckpointHandler(),
          'meta': ocp.JsonCheckpointHandler()}


def _restore_args(abstract, partial: bool) -> ocp.args.PyTreeRestore:
  return ocp.args.PyTreeRestore(
      abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(
          abstract), partial_restore=partial)


def _state_tree(item_metadata, where: str):
  """The saved state's tree metadata; FileNotFoundError when unreadable."""
  state = item_metadata['state'] if 'state' in item_metadata else None
  if state is None:
    raise FileNotFoundError(f'{where}/state has no readable tree metadata '
                            '(state/_METADATA missing or unreadable).')
  return state.tree


def _gather_json(obj) -> list:
  """Every process's JSON-serialisable ``obj``, in process order."""
  if jax.process_count() == 1:
    return [obj]
  payload = np.frombuffer(json.dumps(obj).encode('utf-8'), np.uint8)
  sizes = multihost_utils.process_allgather(
      np.array([payload.size], np.int32))                      # [P, 1]
  padded = np.zeros([int(sizes.max())], np.uint8)
  padded[:payload.size] = payload
  everyone = multihost_utils.process_allgather(padded)        # [P, max]
  return [json.loads(everyone[p, :int(sizes[p, 0])].tobytes().decode('utf-8'))
          for p in range(everyone.shape[0])]


def _check_abstract(abstract_state) -> None:
  missing = [jax.tree_util.keystr(path) for path, leaf
             in jax.tree_util.tree_leaves_with_path(abstract_state)
             if getattr(leaf, 'sharding', None) is None]
  if missing:
    raise ValueError(
        'abstract_state leaves need a .sharding (jax.ShapeDtypeStruct(shape, '
        f'dtype, sharding=...)) to restore into; missing for {missing[:5]}.')


def _path_name(path) -> str:
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return '/'.join(parts)


def tree_mismatches(expected, saved) -> list[str]:
  """Differences between two trees of leaves with ``.shape``."""
  want = {_path_name(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_leaves_with_path(expected)}
  have = {_path_name(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_leaves_with_path(saved)}
  out = [f'missing in checkpoint: {k} {want[k]}' for k in sorted(want)
         if k not in have]
  out += [f'not expected: {k} {have[k]}' for k in sorted(have)
          if k not in want]
  out += [f'shape of {k}: checkpoint {have[k]}, expected {want[k]}'
          for k in sorted(want) if k in have and have[k] != want[k]]
  return out


class Checkpointer:
  """Periodic (async) checkpoints of a run's work directory, keeping ``keep``.

  Every process must make the same calls (saves are collective).
  """

  def __init__(self, workdir: str, *, keep: int, every: int,
               async_save: bool = True):
    if keep < 1 or every < 1:
      raise ValueError(f'keep ({keep}) and every ({every}) must be >= 1.')
    self.directory = os.path.join(os.path.abspath(workdir),
                                  run_files.CHECKPOINTS)
    self.every = every
    self._last_saved = None
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True),
        item_names=_ITEMS,
        item_handlers=_handlers())

  def all_steps(self) -> list[int]:
    """Steps of the finalised checkpoints, ascending."""
    return finalized_steps(self.directory, self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    """The newest finalised checkpoint's step (None if there is none)."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state, data_state: Optional[dict], meta: dict,
           force: bool = False) -> bool:
    """Saves at multiples of ``every`` (any step when ``force``).

    Returns at once when async (device arrays are copied to host first, so
    the state may be donated afterwards); ``wait()`` blocks until written.
    A step already saved is skipped. Returns whether a save was started.

    Args:
      step: the number of completed train steps the state holds.
      state: the TrainState pytree (jax.Arrays).
      data_state: this process's data-iterator state (JSON-serialisable)
        after the batches of those ``step`` steps, or None.
      meta: ``make_meta(config, vocab)`` (step and wall time are added).
    """
    if not force and step % self.every:
      return False
    latest = max([s for s in (self.latest_step(), self._last_saved)
                  if s is not None], default=None)
    if latest is not None and step <= latest:
      logging.info('Checkpoint for step %d not written: step %d is saved.',
                   step, latest)
      return False
    stale = os.path.join(self.directory, str(step))
    if os.path.exists(stale):
      raise FileExistsError(f'{stale} exists but is not a finalised '
                            'checkpoint (no commit_success.txt); delete it.')
    states = _gather_json(data_state)
    data = {'process_count': len(states),
            'states': {str(p): s for p, s in enumerate(states)}}
    meta = dict(meta, step=int(step), wall_time=time.time())
    self._manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state), data=ocp.args.JsonSave(data),
        meta=ocp.args.JsonSave(meta)))
    self._last_saved = step
    logging.info('Saving checkpoint for step %d to %s.', step, self.directory)
    return True

  def restore(self, step: Optional[int], abstract_state,
              process_index: Optional[int] = None):
    """Restores a checkpoint into the shardings of ``abstract_state``.

    Args:
      step: the step to restore; None for the latest.
      abstract_state: the TrainState tree of ``jax.ShapeDtypeStruct`` with
        ``.sharding`` (e.g. ``jax.eval_shape`` + the state shardings).
      process_index: whose data state to return (default: this process).

    Returns:
      (state, data_state, meta); data_state is None when the checkpoint was
      written by a different number of processes (the data order restarts).

    Raises:
      DamagedCheckpointError: the checkpoint's files do not read back.
      ValueError: the saved tree does not fit ``abstract_state``.
    """
    _check_abstract(abstract_state)
    self.wait()
    step = self.latest_step() if step is None else step
    if step not in self.all_steps():
      raise FileNotFoundError(f'No finalised checkpoint for step {step} in '
                              f'{self.directory} (have {self.all_steps()}).')
    where = os.path.join(self.directory, str(step))
    with reading(where):
      saved = _state_tree(self._manager.item_metadata(step), where)
    problems = tree_mismatches(abstract_state, saved)
    if problems:
      raise ValueError(
          f'The checkpoint {where} does not fit this run\'s state '
          f'({len(problems)} differences; was the model or optimiser config '
          'changed? Use a new work directory, or init_from to take the '
          'params):\n  ' + '\n  '.join(problems))
    with reading(where):
      out = self._manager.restore(step, args=ocp.args.Composite(
          state=_restore_args(abstract_state, partial=False),
          data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    index = jax.process_index() if process_index is None else process_index
    data = out['data']
    if data['process_count'] != jax.process_count():
      logging.warning(
          'Checkpoint %d was written by %d processes, this run has %d: the '
          'data iterators start afresh (a different example order).', step,
          data['process_count'], jax.process_count())
      return out['state'], None, out['meta']
    return out['state'], data['states'][str(index)], out['meta']

  def restore_or_init(self, abstract_state, init_fn: Callable[[], Any], *,
                      init_from: str = '', vocab_sha256: Optional[str],
                      process_index: Optional[int] = None,
                      model_config=None) -> Restored:
    """Workdir checkpoint > ``init_from`` (params only) > ``init_fn()``.

    Args:
      abstract_state: as in ``restore``; its ``.params`` is the model's tree.
      init_fn: () -> a fresh, sharded TrainState (with ``.replace``).
      init_from: a work directory, checkpoints directory or step directory
        of another run ('' for none).
      vocab_sha256: the current vocabulary's sha256 (``Vocabulary.sha256``).
      process_index: whose data state to return (default: this process).
      model_config: this run's ``config.model``; a workdir checkpoint whose
        body layout differs (``body.layout_differences``) is refused, since
        the same parameters would compute a different function.

    A damaged workdir checkpoint (``DamagedCheckpointError``) is moved aside
    with one warning (``set_aside``) and the next newest one is tried;
    RuntimeError when every one is damaged.
    """
    self.wait()
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        restored, error = self._restore_checked(
            step, abstract_state, vocab_sha256, process_index,
            model_config), None
      except DamagedCheckpointError as e:
        restored, error = None, e
      if _all_processes_agree(error is None):
        return restored
      self._set_aside(step, error)
    if steps:
      raise RuntimeError(
          f'None of the checkpoints {steps} in {self.directory} restores: '
          'each was damaged and moved aside to <step>.corrupt-<time> (see '
          'the warnings). Rerun to start from init_from or scratch, or move '
          'a copy back.')
    if init_from:
      params, where = load_params(init_from, abstract_state.params,
                                  vocab_sha256)
      state = init_fn().replace(params=params)
      return Restored(state, None, None, 'init_from',
                      f'Initialised parameters from {where} (optimiser, '
                      'step and rng fresh).')
    return Restored(init_fn(), None, None, 'scratch',
                    f'No checkpoint in {self.directory}: initialised from '
                    'scratch.')

  def _restore_checked(self, step, abstract_state, vocab_sha256,
                       process_index, model_config) -> Restored:
    """Checkpoint ``step`` after the vocabulary and layout checks."""
    where = f'{self.directory}/{step}'
    with reading(where):
      meta = self._manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))['meta']
    check_vocabulary(meta, vocab_sha256, where)
    if model_config is not None:
      check_layout(meta, model_config, where)
    state, data_state, meta = self.restore(step, abstract_state,
                                           process_index)
    return Restored(state, data_state, meta, 'workdir',
                    f'Resumed from {where}.')

  def _set_aside(self, step: int, error) -> None:
    """Moves damaged ``step`` aside (process 0) and forgets it."""
    if jax.process_index() == 0:
      set_aside(self.directory, step,
                error or RuntimeError('damaged on another process'))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'mm_jax: set aside {step}')
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until pending async saves are finalised."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _resolve(path: str) -> tuple[str, int]:
  """(checkpoints directory, step) of a work/checkpoints/step directory."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f'init_from={path!r} is not a directory.')
  if os.path.isdir(os.path.join(path, run_files.CHECKPOINTS)):
    path = os.path.join(path, run_files.CHECKPOINTS)
  if os.path.exists(os.path.join(path, run_files.COMMIT_FILE)):
    name = os.path.basename(path)
    if name.isdigit():
      return os.path.dirname(path), int(name)
  steps = finalized_steps(path, [int(n) for n in os.listdir(path) if n.isdigit()])
  if not steps:
    raise FileNotFoundError(f'init_from={path!r} holds no finalised '
                            'checkpoint (give a work directory, its '
                            'checkpoints/ directory or a step directory).')
  return path, steps[-1]


def load_params(init_from: str, abstract_params, vocab_sha256: Optional[str]):
  """The params of another run's checkpoint, in ``abstract_params`` shardings.

  Returns (params, the step directory read). Raises ValueError listing every
  parameter whose path or shape differs, or on a vocabulary mismatch;
  ``DamagedCheckpointError`` when the files do not read back.
  """
  directory, step = _resolve(init_from)
  where = os.path.join(directory, str(step))
  _check_abstract(abstract_params)
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(
          read_only=True, create=False, save_interval_steps=0),
      item_names=_ITEMS, item_handlers=_handlers())
  try:
    with reading(where):
      meta = manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))['meta']
    check_vocabulary(meta, vocab_sha256, where)
    with reading(where):
      saved = _state_tree(manager.item_metadata(step), where)
    if 'params' not in saved:
      raise ValueError(f'{where} has no params (its state holds '
                       f'{sorted(saved)}).')
    problems = tree_mismatches(abstract_params, saved['params'])
    if problems:
      raise ValueError(f'init_from {where} does not fit the model '
                       f'({len(problems)} differences):\n  ' +
                       '\n  '.join(problems))
    with reading(where):
      out = manager.restore(step, args=ocp.args.Composite(
          state=_restore_args({'params': abstract_params}, partial=True)))
  finally:
    manager.close()
  return out['state']['params'], where
