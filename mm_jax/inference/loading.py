"""Loading a trained model for inference: checkpoint, config, vocabulary.

  predictor = mm_jax.load('/tmp/joint8')            # latest checkpoint
  predictor = mm_jax.load('/tmp/joint8', step=2000)

Reads ``<workdir>/checkpoints/<step>/{state,meta}`` written by
``mm_jax.train.checkpoint.Checkpointer``; only finalised checkpoints count,
so a run still writing one is safe to read from. The run's config is rebuilt
from the JSON the checkpoint's meta stores (over ``configs/base.py``'s
defaults, so keys added to the schema later keep their defaults); the
vocabulary is loaded from the path the meta records and must have the
recorded sha256. Only the parameters are restored (no optimiser state),
replicated on the chosen devices.
"""

import functools
import logging
import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp

from configs import base
from mm_jax import compile_cache
from mm_jax import sharding
from mm_jax.data import vocab as vocab_lib
from mm_jax.inference import predictor as predictor_lib
from mm_jax.model import body
from mm_jax.model import factory
from mm_jax.train import checkpoint


def checkpoint_dir(workdir: str) -> str:
  """``<workdir>/checkpoints`` (absolute)."""
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)),
                      'checkpoints')


def available_steps(workdir: str) -> list[int]:
  """Steps of the finalised checkpoints in ``workdir``, ascending."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    return []
  steps = [int(n) for n in os.listdir(directory) if n.isdigit()]
  return checkpoint.finalized_steps(directory, steps)


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
  file raises ``checkpoint.DamagedCheckpointError``."""
  where = os.path.join(checkpoint_dir(workdir), str(step))
  with checkpoint.reading(where):
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
                'config.data.tiny.num_speech_train')


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
      logging.warning('Checkpoint config key %s.%s is not in configs/base.py '
                      '(a newer or older mm_jax?); keeping it.', where, key)
      target[key] = _like(None, value)


def config_from_meta(config_json: dict) -> ml_collections.ConfigDict:
  """A locked ConfigDict from the JSON of ``checkpoint.make_meta``.

  Starts from ``configs/base.py`` at the checkpoint's model size and sets
  every stored value (JSON lists become tuples, as in the schema).
  """
  if not isinstance(config_json, dict) or 'model' not in config_json:
    raise ValueError('The checkpoint meta holds no config; pass config= '
                     '(the run\'s get_config()) to mm_jax.load.')
  config = base.get_config(config_json['model'].get('size', 'tiny'))
  missing = {k: v for k, v in body.LEGACY_LAYOUT.items()
             if k not in config_json['model']}
  if missing:
    logging.info('The checkpoint predates the body layout switches (issue '
                 '13): reading it with the layout it was trained with, %s.',
                 missing)
  with config.unlocked():
    _merge(config, config_json, 'config')
    config.model.update(missing)
  return config.lock()


def load_vocabulary(meta: dict, path: Optional[str] = None
                    ) -> vocab_lib.Vocabulary:
  """The vocabulary recorded in ``meta`` (``path`` overrides its location);
  its sha256 must match the recorded one."""
  want = meta.get('vocab_sha256')
  path = path or meta.get('vocab_path')
  if not path or not want:
    raise ValueError('The checkpoint records no vocabulary (meta has '
                     f'vocab_path={meta.get("vocab_path")!r}); it cannot be '
                     'used for text.')
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'The checkpoint needs its vocabulary {path} (sha256 {want}), which '
        'does not exist. Copy that file there, or pass vocab_path= (CLI: '
        '--vocab_path) pointing at a copy.')
  vocab = vocab_lib.Vocabulary.load(path)
  if vocab.sha256 != want:
    raise ValueError(
        f'The vocabulary {path} has sha256 {vocab.sha256}, but the checkpoint '
        f'was trained with sha256 {want} (from {meta.get("vocab_path")}): '
        'token ids would not match. Restore the original file (it was '
        'replaced or rebuilt) or pass vocab_path= pointing at it.')
  return vocab


def abstract_params(model, mesh: jax.sharding.Mesh):
  """Parameter ShapeDtypeStructs, replicated on ``mesh`` (restore target)."""
  boxed = jax.eval_shape(functools.partial(factory.init_variables, model),
                         jax.random.key(0))['params']
  rep = sharding.replicated(mesh)
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
      nn.unbox(boxed))


def load(workdir: str, step: Optional[int] = None, *,
         config: Optional[ml_collections.ConfigDict] = None,
         vocab_path: Optional[str] = None,
         devices: Optional[Sequence[Any]] = None,
         max_batch_size: Optional[int] = None
         ) -> predictor_lib.Predictor:
  """A ``Predictor`` for a training work directory's checkpoint.

  Args:
    workdir: the ``--workdir`` of ``launch/train.py``.
    step: the checkpoint step (default: the latest finalised one).
    config: the run's config (default: the one stored in the checkpoint).
    vocab_path: where the vocabulary file is, if it moved (default: the path
      stored in the checkpoint); its sha256 must match either way.
    devices: devices to run on (default: the first device). With several,
      parameters are replicated and each batch is split over them.
    max_batch_size: inputs per device call (default: config.eval.batch_size).

  A damaged checkpoint (files that do not read back) is moved aside with
  one warning (``checkpoint.set_aside``) and the next newest one is loaded;
  when ``step`` is given, a damaged one is a ValueError naming the others.

  Raises:
    FileNotFoundError: no (undamaged) checkpoint in ``workdir``, or the
      vocabulary file is missing.
    ValueError: unknown or damaged ``step``, a vocabulary with another
      sha256, or a checkpoint that does not fit the config's model.
  """
  kwargs = dict(config=config, vocab_path=vocab_path, devices=devices,
                max_batch_size=max_batch_size)
  if step is not None:
    step = resolve_step(workdir, step)
    try:
      return _load_step(workdir, step, **kwargs)
    except checkpoint.DamagedCheckpointError as e:
      others = [s for s in available_steps(workdir) if s != step]
      hint = (f'load(workdir, step=...) with one of {others}' if others
              else 'no other checkpoint to load')
      raise ValueError(
          f'Checkpoint step {step} in {checkpoint_dir(workdir)} is damaged '
          f'({checkpoint.error_summary(e.error)}); {hint}.') from None
  steps = available_steps(workdir)
  resolve_step(workdir, None)                  # FileNotFoundError if none
  for s in reversed(steps):
    try:
      return _load_step(workdir, s, **kwargs)
    except checkpoint.DamagedCheckpointError as e:
      checkpoint.set_aside(checkpoint_dir(workdir), s, e)
  raise FileNotFoundError(f'No loadable checkpoint in '
                          f'{checkpoint_dir(workdir)}: every one ({steps}) is '
                          'damaged and was moved aside (see the warnings).')


def _load_step(workdir: str, step: int, *, config, vocab_path, devices,
               max_batch_size) -> predictor_lib.Predictor:
  """``load`` of one existing step (arguments as there)."""
  meta = read_meta(workdir, step)
  if config is None:
    config = config_from_meta(meta.get('config'))
  compile_cache.enable(config.compilation_cache_dir)
  vocab = load_vocabulary(meta, vocab_path)
  if config.model.vocab_size < vocab.size:
    raise ValueError(f'config.model.vocab_size={config.model.vocab_size} is '
                     f'smaller than the vocabulary ({vocab.size} pieces); '
                     'is config= the config of this run?')
  mesh = predictor_lib.default_mesh(devices)
  model = factory.create_model(config)
  where = os.path.join(checkpoint_dir(workdir), str(step))
  params, _ = checkpoint.load_params(where, abstract_params(model, mesh),
                                     vocab.sha256)
  logging.info('Loaded %s (step %d, vocabulary %s).', where, step, vocab.path)
  return predictor_lib.Predictor(
      model, params, config, vocab, mesh=mesh, step=step,
      max_batch_size=max_batch_size)
