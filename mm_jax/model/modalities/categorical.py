"""Categorical output: the Xception exit flow.

The body output ``[B, L, D]`` of an image task is reshaped back to its grid
``[B, Y', X', D]`` and then (T2T ``conv_block_downsample`` + class top):

  skip = ConvStep_{w1, 3x3, s2}(x)
  h    = MaxPool_{3x3, s2}(ConvStep_{w1}(ConvStep_{D}(x))) + skip
  h    = ConvStep_{w3}(ConvStep_{w2}(h))    # the first without a ReLU before
  logits = Dense_{classes}(mean_{Y, X}(ReLU(h)))

with ``w_i = round8(cfg.class_exit_multipliers[i] * D)``: 1.25D, 2D, 2.5D
(the paper's 1536 -> 1920, 3072, 3840 for d=1536; T2T rounded down with
``int``, we round to the nearest multiple of 8 for hardware-friendly widths).
"""

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mm_jax import axes
from mm_jax.model import conv
from mm_jax.model import inits
from mm_jax.model import layers


def exit_widths(d_model: int, multipliers) -> Tuple[int, ...]:
  """Widths of the exit-flow ConvSteps: ``m * d`` rounded to a multiple of 8."""
  return tuple(max(8, int(m * d_model / 8 + 0.5) * 8) for m in multipliers)


class ClassOutput(nn.Module):
  """Xception exit flow + global average pool + dense layer to the classes."""
  cfg: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, x: jax.Array, grid: Tuple[int, int], *,
               train: bool = False) -> jax.Array:
    """Class logits from the body output of an image.

    Args:
      x: [B, L, D] body output, ``L == Y' * X'``.
      grid: (Y', X') the image grid the entry flow produced.
      train: accepted so every output net has the same call; the exit flow
        has no dropout (as T2T), so it does not change the result.

    Returns:
      [B, num_classes] float32 logits.
    """
    cfg = self.cfg
    b, length, d = x.shape
    gy, gx = grid
    if gy * gx != length:
      raise ValueError(f'ClassOutput: grid {grid} has {gy * gx} positions but '
                       f'the body output has length {length}; pass the grid '
                       'returned by ImageEntry.sequence.')
    if len(cfg.class_exit_multipliers) != 3:
      raise ValueError('cfg.class_exit_multipliers needs three widths (x d), '
                       f'e.g. (1.25, 2.0, 2.5); got '
                       f'{cfg.class_exit_multipliers}.')
    w1, w2, w3 = exit_widths(d, cfg.class_exit_multipliers)
    dtype = layers.dtype(cfg.dtype)
    common = dict(epsilon=cfg.layer_norm_epsilon, dtype=dtype,
                  param_dtype=layers.dtype(cfg.param_dtype),
                  impl=cfg.depthwise_impl, init_scheme=cfg.init)
    wide = dict(logical_in=axes.CHANNELS, logical_out=axes.CHANNELS, **common)
    from_d = dict(logical_in=axes.EMBED, logical_out=axes.CHANNELS, **common)

    x = x.astype(dtype).reshape(b, gy, gx, d)                  # [B, Y, X, D]
    skip = conv.ConvStep(w1, (3, 3), strides=(2, 2), name='skip',
                         **from_d)(x)
    h = conv.ConvStep(d, (3, 3), name='conv_0', logical_in=axes.EMBED,
                      logical_out=axes.EMBED, **common)(x)
    h = conv.ConvStep(w1, (3, 3), name='conv_1', **from_d)(h)
    h = nn.max_pool(h, (3, 3), strides=(2, 2), padding='SAME') + skip
    h = conv.ConvStep(w2, (3, 3), relu=False, name='conv_2', **wide)(h)
    h = conv.ConvStep(w3, (3, 3), name='conv_3', **wide)(h)
    pooled = nn.relu(h).astype(jnp.float32).mean(axis=(1, 2))  # [B, w3]
    logits = nn.Dense(
        cfg.num_classes, dtype=jnp.float32,
        param_dtype=layers.dtype(cfg.param_dtype),
        kernel_init=nn.with_logical_partitioning(
            inits.kernel(cfg.init), (axes.CHANNELS, axes.CLASSES)),
        bias_init=nn.with_logical_partitioning(
            nn.initializers.zeros_init(), (axes.CLASSES,)),
        name='logits')(pooled)
    return nn.with_logical_constraint(logits, (axes.BATCH, axes.CLASSES))
