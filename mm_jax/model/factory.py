"""Building and initialising a MultiModel from a config.

  import mm_jax
  from mm_jax import config as base
  config = base.get_config('tiny')
  model = mm_jax.create_model(config)
  variables = mm_jax.init_variables(model, jax.random.key(0))
  logits = model.apply(variables, batch, input_modality='text',
                       output_modality='text')
"""

import functools
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from mm_jax import contract
from mm_jax.model import multimodel

# Every modality path the model has; ``init`` runs each once.
PATHS = (('text', 'text'), ('image', 'text'), ('audio', 'text'),
         ('image', 'class'))


def model_section(config) -> ml_collections.FrozenConfigDict:
  """Accepts a whole config (with ``.model``) or its model section."""
  section = config.model if 'model' in config else config
  return ml_collections.FrozenConfigDict(section)


def create_model(config) -> multimodel.MultiModel:
  """The MultiModel (a Flax Linen module) for ``config`` (or config.model).

  A whole config also brings ``config.train.remat`` (rematerialisation of
  the body's blocks in training; parameters are the same either way) and
  the audio channels (``config.data.audio_deltas``); a model section alone
  reads one channel.
  """
  remat = config.train.remat if 'train' in config else 'none'
  channels = (contract.audio_channels(bool(config.data.audio_deltas))
              if 'data' in config else contract.audio_channels(False))
  return multimodel.MultiModel(model_section(config), remat=remat,
                               audio_channels=channels)


def dummy_batch(cfg, input_modality: str, output_modality: str,
                batch_size: int = 1, length: int = 4,
                image_size: int = 32, frames: int = 16,
                audio_channels: int = 1) -> Dict[str, Any]:
  """A small constant batch of the contract (``contract.example_batch``)
  that ``cfg`` (``config.model``) reads: log-mel audio with
  ``audio_channels`` channels, or waveforms for
  ``audio_input='waveform'``."""
  multimodel.check_modalities(input_modality, output_modality)
  batch = contract.example_batch(
      input_modality, output_modality, batch_size, length=length,
      target_length=length, image_size=image_size, frames=frames,
      mel_bins=contract.MEL_BINS, channels=audio_channels)
  if input_modality == 'audio' and cfg.audio_input == 'waveform':
    samples = frames * 160                  # 10 ms hops at 16 kHz
    batch.update(inputs=np.ones((batch_size, samples), np.float32),
                 inputs_mask=np.ones((batch_size, samples), bool))
  return batch


def init_variables(model: multimodel.MultiModel, rng: jax.Array,
                   paths: Tuple[Tuple[str, str], ...] = PATHS) -> Dict:
  """Initialises every parameter of ``model`` (all modality paths).

  Returns the variables dict (``{'params': ...}``), values boxed with their
  logical axis names (``nn.Partitioned``); ``nn.unbox`` strips them.
  """
  batches = {p: dummy_batch(model.cfg, *p,
                            audio_channels=model.audio_channels)
             for p in paths}
  return _jitted_init(model)(rng, batches)


@functools.lru_cache(maxsize=16)
def _jitted_init(model: multimodel.MultiModel):
  """One compiled initialiser per model (models hash by their frozen config)."""

  def init(rng, batches):
    variables = model.init({'params': rng}, batches,
                           method=multimodel.MultiModel.init_all)
    return {'params': variables['params']}
  return jax.jit(init)


def abstract_variables(model: multimodel.MultiModel) -> Dict:
  """Shapes and dtypes of every variable, without allocating (eval_shape)."""
  return jax.eval_shape(functools.partial(init_variables, model),
                        jax.random.key(0))


def param_count(variables) -> int:
  """Number of scalars in ``variables['params']`` (boxed or not)."""
  leaves = jax.tree.leaves(nn.unbox(variables['params']))
  return int(sum(np.prod(x.shape) for x in leaves))
