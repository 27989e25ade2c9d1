"""Audio modality: a ConvRes stack over time x frequency.

  x [B, A, M, I]  (log-mel, A frames; a waveform [B, samples] is
                  [B, samples, 1, 1])
  -> per-utterance mean/variance normalisation over the real frames
  -> ConvRes_{2}, ConvRes_{4}, ..., ConvRes_{2^k}   strides (2, 1): time only
     (k = log2(cfg.audio_time_reduction); T2T's tiny channel counts)
  -> flatten frequency x channels per frame   [B, frames', M * 2^k]
  -> ConvRes_{D} over time, stride 1          [B, frames', D]

Collapsing frequency *before* the D-wide block (flatten the ``[M, 2^k]``
features of a frame and let the last ConvRes project them to D, as the
Conv2d subsampling front ends of Conformer / DeepSpeech2 do) keeps the cost
of that block per frame at O(M 2^k D + D^2) instead of O(M D^2); T2T kept all
M bins at width D and fed frames' * M positions to the body (docs/model.md,
"Modality nets").

Padding: the mask ``[B, A]`` is strided with the time strides; padded
frames influence no real output (normalisation statistics use real frames
only, ConvRes masks its convolutions and pools) and are zero in the output.
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mm_jax import axes
from mm_jax import contract
from mm_jax.model import conv
from mm_jax.model import layers

AUDIO_INPUTS = ('spectrogram', 'waveform')


def num_time_blocks(time_reduction: int) -> int:
  """log2 of the total time stride; raises unless it is a power of two."""
  r = time_reduction
  if not isinstance(r, int) or r < 1 or r & (r - 1):
    raise ValueError(f'cfg.audio_time_reduction must be a power of two '
                     f'(1, 2, 4, 8, ...); got {r!r}.')
  return r.bit_length() - 1


def reduced_length(frames: int, time_reduction: int) -> int:
  """Frames after the stack: ``ceil(frames / time_reduction)``."""
  return -(-frames // time_reduction)


def normalize(x: jax.Array, mask: jax.Array, epsilon: float = 1e-6
              ) -> jax.Array:
  """Per-utterance mean/variance normalisation per (bin, channel).

  x: [B, A, M, I]; mask: [B, A] bool -> [B, A, M, I] float32, statistics
  over the real frames only, padded frames set to 0.
  """
  real = mask[:, :, None, None]                               # [B, A, 1, 1]
  x = jnp.where(real, x.astype(jnp.float32), 0.0)  # padding may hold anything
  count = jnp.maximum(real.sum(axis=1, keepdims=True), 1)     # [B, 1, 1, 1]
  mean = x.sum(axis=1, keepdims=True) / count                 # [B, 1, M, I]
  centred = jnp.where(real, x - mean, 0.0)
  var = jnp.square(centred).sum(axis=1, keepdims=True) / count
  return centred * jax.lax.rsqrt(var + epsilon)


class AudioEntry(nn.Module):
  """Audio (spectrogram or waveform) -> a sequence of D-vectors and its mask.

  ``channels``: I of log-mel input (``contract.audio_channels``: 1, or 3
  with deltas); ``mel_bins``: M (the contract's 80; tests shrink it).
  """
  cfg: ml_collections.FrozenConfigDict
  channels: int = 1
  mel_bins: int = contract.MEL_BINS

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None
               ) -> Tuple[jax.Array, jax.Array]:
    """Embeds audio.

    Args:
      x: [B, A, M, I] log-mel (``cfg.audio_input == 'spectrogram'``,
        ``M = self.mel_bins``, ``I = self.channels``) or
        [B, samples] waveform (``'waveform'``).
      mask: [B, A] bool, False on padded frames; None = all real.

    Returns:
      (seq [B, L', D], mask [B, L'] bool), ``L' = ceil(A / r)`` with
      ``r = cfg.audio_time_reduction``; padded positions of seq are 0.
    """
    cfg = self.cfg
    k = num_time_blocks(cfg.audio_time_reduction)
    x = self._check_input(x)                                    # [B, A, M, I]
    b, t, m, _ = x.shape
    if mask is None:
      mask = jnp.ones((b, t), bool)
    elif mask.shape != (b, t):
      raise ValueError(f'Audio mask must be [B, frames] = {(b, t)}; got '
                       f'{mask.shape}.')
    mask = mask.astype(bool)
    dtype = layers.dtype(cfg.dtype)
    common = dict(epsilon=cfg.layer_norm_epsilon, dtype=dtype,
                  param_dtype=layers.dtype(cfg.param_dtype),
                  impl=cfg.depthwise_impl, init_scheme=cfg.init)
    # A waveform has one "bin": a 3-wide frequency kernel would only waste
    # parameters on zero padding.
    kernel = (3, 3) if m > 1 else (3, 1)

    h = normalize(x, mask).astype(dtype)
    grid_mask = jnp.broadcast_to(mask[:, :, None], (b, t, m))  # [B, A, M]
    for i in range(k):
      # No ReLU before the first convolution: it would drop every negative
      # (below-average) input value.
      h, grid_mask = conv.ConvRes(2 ** (i + 1), kernel, strides=(2, 1),
                                  first_relu=i > 0, name=f'res_{i}',
                                  **common)(h, grid_mask)
    b, t2, m, c = h.shape
    h = h.reshape(b, t2, m * c)                                # [B, L', M*O]
    mask = grid_mask[:, :, 0]                                   # [B, L']
    h, _ = conv.ConvRes(cfg.d_model, (3,), strides=(1,), first_relu=k > 0,
                        name='res_final', **common)(h, mask)
    h = h * mask[..., None].astype(h.dtype)
    h = nn.with_logical_constraint(h, (axes.BATCH, axes.LENGTH, axes.EMBED))
    return h, mask

  def _check_input(self, x: jax.Array) -> jax.Array:
    """x: the raw audio input -> [B, A, M, I], after checking its shape."""
    cfg = self.cfg
    if cfg.audio_input == 'waveform':
      if x.ndim != 2:
        raise ValueError('cfg.audio_input is "waveform": expected samples '
                         f'[B, samples]; got shape {x.shape}.')
      return x[:, :, None, None]                                # [B, A, 1, 1]
    if cfg.audio_input != 'spectrogram':
      raise ValueError(f'Unknown cfg.audio_input {cfg.audio_input!r}; choose '
                       f'one of {AUDIO_INPUTS}.')
    expected = (self.mel_bins, self.channels)
    if x.ndim != 4 or x.shape[2:] != expected:
      raise ValueError('cfg.audio_input is "spectrogram": expected '
                       f'[B, frames, {expected[0]}, {expected[1]}] (log-mel '
                       'bins, channels: 3 with config.data.audio_deltas); got '
                       f'{x.shape}.')
    return x
