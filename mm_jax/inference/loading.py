"""Loading a trained model for inference: checkpoint, config, vocabulary.

  predictor = mm_jax.load('/tmp/joint8')            # latest checkpoint
  predictor = mm_jax.load('/tmp/joint8', step=2000)

Reads ``<workdir>/checkpoints/<step>/{state,meta}`` written by
``mm_jax.train.checkpoint.Checkpointer``; only finalised checkpoints count,
so a run still writing one is safe to read from. The run's config is rebuilt
from the JSON the checkpoint's meta stores (``run_files.config_from_meta``,
over the defaults of ``mm_jax/config/defaults.py``, so keys added to the
schema later keep their defaults); the vocabulary is loaded from the path
the meta records and must have the recorded sha256. Only the parameters are
restored (no optimiser state), replicated on the chosen devices.

Loading only reads: a damaged checkpoint is skipped with a warning and left
where it is (a training run that resumes moves it aside), and JAX's
compilation cache is the caller's to set (``launch/predict.py`` enables
``config.compilation_cache_dir``; ``mm_jax.compile_cache.enable``).
"""

import functools
import logging
import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import ml_collections

from mm_jax import sharding
from mm_jax.data import vocab as vocab_lib
from mm_jax.inference import predictor as predictor_lib
from mm_jax.model import factory
# Reading the work directory is run_files'; these names stay here too.
from mm_jax.run_files import available_steps
from mm_jax.run_files import checkpoint_dir
from mm_jax.run_files import config_from_meta
from mm_jax.run_files import read_meta
from mm_jax.run_files import resolve_step
from mm_jax.train import checkpoint


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


def stored_class_names(meta: dict, config) -> Optional[list]:
  """The label of each class id that ``meta`` stores, or None (the predictor
  then labels them ``class_<i>``); one warning when the checkpoint predates
  stored class names."""
  if 'class_names' not in meta:
    logging.warning('The checkpoint predates stored class names: classes are '
                    "labelled 'class_<i>' (assign Predictor.class_names to "
                    'name them).')
    return None
  names = meta['class_names']
  return names if names and len(names) == config.model.num_classes else None


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

  A damaged checkpoint (files that do not read back) is skipped with one
  warning, left in place, and the next newest one is loaded; when ``step``
  is given, a damaged one is a ValueError naming the others.

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
      logging.warning('Checkpoint step %d is damaged (%s); loading an '
                      'earlier one and leaving it in place in %s.', s,
                      checkpoint.error_summary(e.error),
                      checkpoint_dir(workdir))
  raise FileNotFoundError(f'No loadable checkpoint in '
                          f'{checkpoint_dir(workdir)}: every one ({steps}) is '
                          'damaged (see the warnings).')


def _load_step(workdir: str, step: int, *, config, vocab_path, devices,
               max_batch_size) -> predictor_lib.Predictor:
  """``load`` of one existing step (arguments as there)."""
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
      class_names=stored_class_names(meta, config),
      max_batch_size=max_batch_size)
