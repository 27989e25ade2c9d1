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
from mm_jax import sharding
from mm_jax.data import vocab as vocab_lib
from mm_jax.inference import predictor as predictor_lib
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
  """The ``meta`` item (JSON) of checkpoint ``step``."""
  where = os.path.join(checkpoint_dir(workdir), str(step), 'meta')
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as reader:
    return reader.restore(where)


def _like(template, value):
  """JSON ``value`` in the type of ``template`` (lists -> tuples)."""
  if isinstance(value, list):
    return tuple(_like(None, v) for v in value)
  if isinstance(template, float) and isinstance(value, int):
    return float(value)
  return value


def _merge(target: ml_collections.ConfigDict, values: dict, where: str):
  for key, value in values.items():
    if isinstance(value, dict):
      if key not in target:
        target[key] = ml_collections.ConfigDict()
      _merge(target[key], value, f'{where}.{key}')
    elif key in target:
      target[key] = _like(target[key], value)
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
  with config.unlocked():
    _merge(config, config_json, 'config')
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

  Raises:
    FileNotFoundError: no checkpoint in ``workdir``, or the vocabulary file
      is missing.
    ValueError: unknown ``step``, a vocabulary with another sha256, or a
      checkpoint that does not fit the config's model.
  """
  step = resolve_step(workdir, step)
  meta = read_meta(workdir, step)
  if config is None:
    config = config_from_meta(meta.get('config'))
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
