"""Convolutional building blocks: SepConv, ConvStep, ConvBlock, ConvRes.

All convolutions here are depthwise-separable (depthwise over the spatial axes,
then a pointwise projection), bias-free where a LayerNorm follows.

Shapes: sequences are ``[B, L, D]``; images / spectrograms are ``[B, Y, X, I]``.
Convolution runs over every axis between batch and channels.
"""

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mm_jax import axes
from mm_jax.model import layers


class SepConv(nn.Module):
  """Depthwise-separable convolution.

  Attributes:
    features: output channels F.
    kernel: kernel size per spatial axis, e.g. ``(3,)`` or ``(3, 3)``.
    dilation: dilation per spatial axis.
    strides: stride per spatial axis.
    padding: ``'SAME'`` or ``'CAUSAL'`` (left padding on the first spatial axis
      only, SAME on the others; causal convolutions take stride 1).
    use_bias: add a bias after the pointwise projection.
  """
  features: int
  kernel: Sequence[int]
  dilation: Optional[Sequence[int]] = None
  strides: Optional[Sequence[int]] = None
  padding: str = 'SAME'
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  logical_in: str = axes.EMBED
  logical_out: str = axes.EMBED

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, *spatial, I] -> [B, *spatial', F]."""
    nd = x.ndim - 2
    kernel = tuple(self.kernel)
    dilation = tuple(self.dilation or (1,) * nd)
    strides = tuple(self.strides or (1,) * nd)
    if not len(kernel) == len(dilation) == len(strides) == nd:
      raise ValueError(f'kernel {kernel}, dilation {dilation} and strides '
                       f'{strides} must each have {nd} entries for input '
                       f'of shape {x.shape}.')
    in_features = x.shape[-1]
    if self.padding == 'CAUSAL':
      if strides[0] != 1:
        raise ValueError('A causal convolution must have stride 1 in time.')
      left = (kernel[0] - 1) * dilation[0]
      x = jnp.pad(x, [(0, 0), (left, 0)] + [(0, 0)] * nd)
      pad = [(0, 0)] + [_same_pad(k, d) for k, d in zip(kernel[1:], dilation[1:])]
    elif self.padding == 'SAME':
      pad = 'SAME'
    else:
      raise ValueError(f'Unknown padding {self.padding!r}: SAME or CAUSAL.')
    depthwise = self.param(
        'depthwise',
        nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=-2, out_axis=-1),
            # One 'kernel' name only: Flax rejects repeated logical names.
            (axes.KERNEL,) + (None,) * nd + (self.logical_in,)),
        kernel + (1, in_features), self.param_dtype)
    x = jax.lax.conv_general_dilated(
        x.astype(self.dtype), depthwise.astype(self.dtype),
        window_strides=strides, padding=pad, rhs_dilation=dilation,
        dimension_numbers=_dimension_numbers(nd),
        feature_group_count=in_features)
    pointwise = self.param(
        'pointwise',
        nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                     _pointwise_names(self.logical_in,
                                                      self.logical_out)),
        (in_features, self.features), self.param_dtype)
    y = jnp.einsum('...I,IF->...F', x, pointwise.astype(self.dtype))
    if self.use_bias:
      bias = self.param(
          'bias', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                               (self.logical_out,)),
          (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def _pointwise_names(logical_in: str, logical_out: str):
  """Logical names of a pointwise kernel; a name may appear once only (Flax
  rules), so a square ``embed -> embed`` kernel names its input axis alone."""
  return (logical_in, None if logical_out == logical_in else logical_out)


def _same_pad(k: int, d: int) -> Tuple[int, int]:
  total = (k - 1) * d
  return total // 2, total - total // 2


def _dimension_numbers(nd: int):
  spatial = 'HWD'[:nd]
  lhs = 'N' + spatial + 'C'
  return jax.lax.conv_dimension_numbers(
      (1,) * (nd + 2), (1,) * (nd + 2), (lhs, spatial + 'IO', lhs))


class ConvStep(nn.Module):
  """``ConvStep(x) = LN(SepConv(ReLU(x)))`` (SPEC §3.2).

  Padded positions (``mask == 0``) are zeroed before the convolution so that
  their content never reaches a real position.
  """
  features: int
  kernel: Sequence[int]
  dilation: Optional[Sequence[int]] = None
  strides: Optional[Sequence[int]] = None
  padding: str = 'SAME'
  relu: bool = True
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  logical_in: str = axes.EMBED
  logical_out: str = axes.EMBED

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None):
    """x: [B, *spatial, I]; mask: [B, *spatial] or None -> [B, *spatial', F]."""
    if self.relu:
      x = nn.relu(x)
    if mask is not None:
      x = x * mask[..., None].astype(x.dtype)
    y = SepConv(self.features, self.kernel, self.dilation, self.strides,
                self.padding, use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, logical_in=self.logical_in,
                logical_out=self.logical_out, name='conv')(x)
    return layers.LayerNorm(self.epsilon, self.dtype, self.param_dtype,
                            logical_axis=self.logical_out, name='norm')(y)


class ConvBlock(nn.Module):
  """Residual stack of ConvSteps over a sequence, dropout at the end.

  ``steps`` is a sequence of ``(kernel, dilation)`` pairs (SPEC: four). Each
  step is ``x = x + ConvStep(x)``.
  """
  steps: Sequence[Tuple[int, int]]
  causal: bool = False
  dropout: float = 0.1
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    """x: [B, L, D]; mask: [B, L] or None -> [B, L, D]."""
    d = x.shape[-1]
    for i, (kernel, dilation) in enumerate(self.steps):
      x = x + ConvStep(d, (kernel,), (dilation,),
                       padding='CAUSAL' if self.causal else 'SAME',
                       epsilon=self.epsilon, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f'step_{i}')(x, mask)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    return nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.EMBED))


class ConvRes(nn.Module):
  """Xception-style residual downsampling block (SPEC §3.1).

  ``ConvRes(x, F) = MaxPool_{3, s}(ConvStep_F(ConvStep_F(x))) +
  ConvStep_{1x1, s, F}(x)``. ``strides`` is per spatial axis; the audio net
  strides time but not frequency, e.g. ``(2, 1)``. With a mask, padded
  positions are excluded from the max-pool and the strided mask is returned.
  """
  features: int
  kernel: Sequence[int] = (3, 3)
  strides: Sequence[int] = (2, 2)
  first_relu: bool = True
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None):
    """x: [B, Y, X, I]; mask: [B, Y, X] or None -> ([B, Y', X', F], mask')."""
    common = dict(epsilon=self.epsilon, dtype=self.dtype,
                  param_dtype=self.param_dtype, logical_in=axes.CHANNELS,
                  logical_out=axes.CHANNELS)
    h = ConvStep(self.features, self.kernel, relu=self.first_relu,
                 name='conv_0', **common)(x, mask)
    h = ConvStep(self.features, self.kernel, name='conv_1', **common)(h, mask)
    if mask is not None:
      h = jnp.where(mask[..., None], h, jnp.finfo(h.dtype).min)
    window = tuple(3 if s > 1 else 1 for s in self.strides)
    # Symmetric padding centres output i's window on input i*s (where the skip
    # and the strided mask sample) whatever the length; SAME would shift it
    # for even lengths, so the amount of padding would change real outputs.
    pool_pad = tuple((w // 2, w // 2) for w in window)
    h = nn.max_pool(h, window, strides=tuple(self.strides), padding=pool_pad)
    skip = ConvStep(self.features, (1,) * len(self.strides),
                    strides=self.strides, name='skip', **common)(x, mask)
    out_mask = None
    if mask is not None:
      out_mask = mask[(slice(None),) + tuple(slice(None, None, s)
                                             for s in self.strides)]
      h = jnp.where(out_mask[..., None], h, 0)
    return h + skip, out_mask
