"""Image modality: the Xception entry flow.

  standardise -> ConvStep_{32, 3x3, s2} (no ReLU first) -> ConvStep_{64, 3x3}
  -> ConvRes_128 -> ConvRes_256 -> ConvRes_D        (each ConvRes strides 2)

An ``[Y, X]`` image becomes a ``[ceil(Y/16), ceil(X/16)]`` grid of
D-vectors; 299x299 gives 19x19 = 361 body positions. Any size works.

Two choices follow T2T's ``ImageModality`` and Xception rather than the
paper's literal wording (docs/model.md, "Modality nets"):
- the two stem steps use full (not depthwise-separable) 3x3 convolutions: a
  separable 3x3 over the 3 colour channels can only learn 3 spatial filters;
  ``separable_stem=True`` gives the literal SepConv version;
- the ConvRes widths are ``min(O, D)`` (``O`` from ``image_entry_filters``:
  128, 256) so the stem is never wider than D.
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


def standardize(images: jax.Array) -> jax.Array:
  """Per-image standardisation (as ``tf.image.per_image_standardization``).

  images: [B, Y, X, I] any real dtype -> [B, Y, X, I] float32 with zero mean
  and unit variance over each image's pixels and channels (the std is floored
  at 1/sqrt(Y*X*I) so constant images stay finite).
  """
  x = images.astype(jnp.float32)
  n = x[0].size
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  std = x.std(axis=(1, 2, 3), keepdims=True)
  return (x - mean) / jnp.maximum(std, n ** -0.5)


def entry_grid(height: int, width: int) -> Tuple[int, int]:
  """The grid ``(Y', X')`` the entry flow makes from a height x width image."""
  return -(-height // 16), -(-width // 16)


class FullConvStep(nn.Module):
  """``LN(Conv(ReLU(x)))`` with a full (not separable) convolution, no bias.

  Xception's and T2T's two stem convolutions; channels are few, so the cost
  is small.
  """
  features: int
  kernel: Tuple[int, int] = (3, 3)
  strides: Tuple[int, int] = (1, 1)
  relu: bool = True
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  init_scheme: str = 'lecun'   # kernel initialiser (mm_jax.model.inits)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, Y, X, I] -> [B, Y', X', O]."""
    if self.relu:
      x = nn.relu(x)
    x = nn.Conv(
        self.features, self.kernel, strides=self.strides, padding='SAME',
        use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(
            inits.kernel(self.init_scheme),
            (axes.KERNEL, None, None, axes.CHANNELS)),
        name='conv')(x)
    return layers.LayerNorm(self.epsilon, self.dtype, self.param_dtype,
                            logical_axis=axes.CHANNELS, name='norm')(x)


class ImageEntry(nn.Module):
  """Xception entry flow: images -> a 2-D grid of D-vectors.

  Attributes:
    cfg: model config (``d_model``, ``image_entry_filters``, ``dtype``,
      ``param_dtype``, ``layer_norm_epsilon``).
    separable_stem: use ConvStep (depthwise-separable) for the two stem
      steps instead of full convolutions.
  """
  cfg: ml_collections.FrozenConfigDict
  separable_stem: bool = False

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images: [B, Y, X, 3] pixels (any range) -> [B, Y', X', D].

    ``Y' = ceil(Y / 16)``, ``X' = ceil(X / 16)`` (see ``entry_grid``).
    """
    cfg = self.cfg
    if images.ndim != 4:
      raise ValueError(f'ImageEntry expects images [B, Y, X, I]; got shape '
                       f'{images.shape}.')
    filters = tuple(cfg.image_entry_filters)
    if len(filters) < 2:
      raise ValueError('cfg.image_entry_filters needs the two stem widths '
                       f'first (e.g. (32, 64, 128, 256)); got {filters}.')
    d = cfg.d_model
    common = dict(epsilon=cfg.layer_norm_epsilon,
                  dtype=layers.dtype(cfg.dtype),
                  param_dtype=layers.dtype(cfg.param_dtype),
                  init_scheme=cfg.init)
    x = standardize(images).astype(common['dtype'])
    if self.separable_stem:
      stem = dict(logical_in=axes.CHANNELS, logical_out=axes.CHANNELS,
                  impl=cfg.depthwise_impl, **common)
      x = conv.ConvStep(filters[0], (3, 3), strides=(2, 2), relu=False,
                        name='stem_0', **stem)(x)
      x = conv.ConvStep(filters[1], (3, 3), name='stem_1', **stem)(x)
    else:
      x = FullConvStep(filters[0], strides=(2, 2), relu=False, name='stem_0',
                       **common)(x)
      x = FullConvStep(filters[1], name='stem_1', **common)(x)
    widths = [min(f, d) for f in filters[2:]] + [d]
    skip_relu = tuple(cfg.image_skip_relu)
    if len(skip_relu) != len(widths):
      raise ValueError(f'cfg.image_skip_relu needs one flag per ConvRes block '
                       f'({len(widths)}); got {skip_relu}.')
    for i, width in enumerate(widths):
      x, _ = conv.ConvRes(width, (3, 3), strides=(2, 2),
                          skip_relu=skip_relu[i], name=f'res_{i}',
                          impl=cfg.depthwise_impl, **common)(x)
    return nn.with_logical_constraint(x, (axes.BATCH, None, None, axes.EMBED))

  def sequence(self, images: jax.Array
               ) -> Tuple[jax.Array, Tuple[int, int]]:
    """images: [B, Y, X, 3] -> (seq [B, Y'*X', D], grid (Y', X'))."""
    grid = self(images)
    b, gy, gx, d = grid.shape
    seq = grid.reshape(b, gy * gx, d)                           # [B, L, D]
    seq = nn.with_logical_constraint(seq, (axes.BATCH, axes.LENGTH,
                                           axes.EMBED))
    return seq, (gy, gx)
