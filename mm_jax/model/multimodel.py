"""MultiModel: modality nets around one shared body.

A batch of one task flows

  text/image/audio --modality net--> [B, L, D] --Encoder--> encoded
  targets --target embedding, shift right, task token at 0--> [B, T, D]
      --Mixer(., encoded)--> --Decoder(., encoded)--> --softmax--> [B, T, V]

Classification (``output_modality='class'``) skips mixer and decoder: the
encoder output is reshaped to its image grid and goes through the Xception
exit flow.

Modalities are static strings, so each modality pair (and each shape bucket)
compiles once. The batch contract: docs/design.md, "The batch contract".
"""

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import ml_collections

from mm_jax import axes
from mm_jax import contract
from mm_jax.model import body
from mm_jax.model.modalities import audio, categorical, image, language
from mm_jax.model.modalities import task_token

Batch = Dict[str, jax.Array]
Grid = Optional[Tuple[int, int]]


def check_modalities(input_modality: str, output_modality: str) -> None:
  """Raises ValueError naming the supported choices for a bad pair: the
  contract's modalities (``contract.check_modalities``), and class outputs
  only from images."""
  contract.check_modalities(input_modality, output_modality)
  if output_modality == 'class' and input_modality != 'image':
    raise ValueError('Class output reads the 2-D grid of an image input; '
                     f'got input modality {input_modality!r}.')


class MultiModel(nn.Module):
  """The MultiModel. ``cfg`` is ``config.model`` frozen (the schema:
  mm_jax/config/defaults.py); ``remat`` is ``config.train.remat``
  (``body.REMAT_POLICIES``); ``audio_channels`` the log-mel input's
  channels (``contract.audio_channels(config.data.audio_deltas)``).
  ``factory.create_model(config)`` sets all three."""
  cfg: ml_collections.FrozenConfigDict
  remat: str = 'none'
  audio_channels: int = 1

  def setup(self):
    cfg = self.cfg
    self.language = language.Language(cfg)
    self.image = image.ImageEntry(cfg)
    self.audio = audio.AudioEntry(cfg, channels=self.audio_channels)
    self.class_output = categorical.ClassOutput(cfg)
    self.task_token = task_token.TaskToken(cfg)
    self.encoder = body.Encoder(cfg, remat=self.remat)
    self.mixer = body.Mixer(cfg)
    self.decoder = body.Decoder(cfg, remat=self.remat)

  def encode(self, inputs: jax.Array, input_modality: str,
             inputs_mask: Optional[jax.Array] = None, *,
             train: bool = False) -> Tuple[jax.Array, Optional[jax.Array], Grid]:
    """Modality net + encoder.

    Args:
      inputs: [B, L] token ids | [B, Y, X, 3] pixels | [B, A, M, I] audio.
      input_modality: 'text' | 'image' | 'audio'.
      inputs_mask: [B, A] for audio; text derives it from padding.
      train: dropout and MoE noise on.

    Returns:
      (encoded [B, L', D], mask [B, L'] or None, image grid (Y', X') or None).
    """
    grid = None
    if input_modality == 'text':
      mask = inputs != contract.PAD_ID                              # [B, L]
      x = self.language.embed_inputs(inputs)
    elif input_modality == 'image':
      x, grid = self.image.sequence(inputs)                         # [B, Y'X', D]
      mask = None
    elif input_modality == 'audio':
      x, mask = self.audio(inputs, inputs_mask)
    else:
      raise ValueError(f'Unknown input modality {input_modality!r}; the model '
                       f'reads {contract.INPUT_MODALITIES}.')
    x = nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.EMBED))
    return self.encoder(x, mask, train=train), mask, grid

  def decode(self, encoded: jax.Array, encoded_mask: Optional[jax.Array],
             targets: jax.Array, target_space: jax.Array,
             target_mask: Optional[jax.Array] = None, *,
             train: bool = False) -> jax.Array:
    """Mixer + decoder + softmax over the shared vocabulary.

    Args:
      encoded: [B, L, D]; encoded_mask: [B, L] or None.
      targets: [B, T] token ids (teacher forcing; position t sees < t).
      target_space: [B] task-token rows.
      target_mask: [B, T] positions that are real (default ``targets != 0``;
        a decoder passes ``t <= step``). Only the MoE uses it, to keep padding
        out of expert capacity.

    Returns:
      logits [B, T, V] float32.
    """
    if target_mask is None:
      target_mask = targets != contract.PAD_ID
    emb = self.language.embed_targets(targets)                      # [B, T, D]
    task = self.task_token(target_space)                            # [B, 1, D]
    shifted = task_token.shift_right_with_task(emb, task)
    if self.cfg.task_token_every_position:
      shifted = shifted.at[:, 1:].add(task.astype(shifted.dtype))
    x = self.mixer(shifted, encoded, encoded_mask)
    x = self.decoder(x, encoded, encoded_mask, target_mask, train=train)
    return self.language.logits(x)

  def classify(self, encoded: jax.Array, grid: Tuple[int, int], *,
               train: bool = False) -> jax.Array:
    """encoded: [B, Y'X', D] -> class logits [B, num_classes] float32."""
    return self.class_output(encoded, grid, train=train)

  def __call__(self, batch: Batch, *, input_modality: str,
               output_modality: str, train: bool = False) -> jax.Array:
    """Runs one task's batch; returns [B, T, V] or [B, num_classes] logits."""
    check_modalities(input_modality, output_modality)
    encoded, mask, grid = self.encode(batch['inputs'], input_modality,
                                      batch.get('inputs_mask'), train=train)
    if output_modality == 'class':
      return self.classify(encoded, grid, train=train)
    return self.decode(encoded, mask, batch['targets'], batch['target_space'],
                       train=train)

  def init_all(self, batches: Dict[Tuple[str, str], Batch]) -> Dict[str, Any]:
    """Runs every modality path once (for ``init``): creates all parameters."""
    return {f'{i}->{o}': self(b, input_modality=i, output_modality=o)
            for (i, o), b in batches.items()}
