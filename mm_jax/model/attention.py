"""Timing signal, multi-head dot-product attention and the attention block.

The attention block: add a sinusoidal timing signal to the query
stream, run two causal ConvSteps (5x1, dilation 1 then 4), attend over a source
and return ``LN(x + attention)``.
"""

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mm_jax import axes
from mm_jax.model import conv, inits, layers


def timing_signal(length: int, channels: int, max_timescale: float = 1.0e4,
                  min_timescale: float = 1.0,
                  num_timescales: int = 0) -> jax.Array:
  """Sinusoidal position signal (Vaswani et al. 2017). Returns [L, D] float32.

  ``num_timescales`` sines, then as many cosines, over geometrically spaced
  timescales, in the first ``2 * num_timescales`` channels; the rest are
  zero. ``num_timescales=16`` is T2T's ``common_layers.add_timing_signal``
  (the 4-D version SliceNet and the MultiModel used); ``0`` means
  ``channels // 2``, every channel (the Transformer's 1-D version). Widths
  below ``2 * num_timescales`` (test models) take ``channels // 2``.
  """
  if num_timescales < 0:
    raise ValueError(f'model.timing_num_timescales must be >= 0 (0 = every '
                     f'channel), got {num_timescales}.')
  num_timescales = min(num_timescales or channels // 2, channels // 2)
  log_increment = (np.log(max_timescale / min_timescale) /
                   max(num_timescales - 1, 1))
  inv_timescales = min_timescale * np.exp(
      np.arange(num_timescales, dtype=np.float32) * -log_increment)
  position = np.arange(length, dtype=np.float32)
  scaled = position[:, None] * inv_timescales[None, :]          # [L, D/2]
  signal = np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1)
  signal = np.pad(signal, [(0, 0), (0, channels - 2 * num_timescales)])
  return jnp.asarray(signal, jnp.float32)                         # [L, D]


def add_timing_signal(x: jax.Array, max_timescale: float = 1.0e4,
                      num_timescales: int = 0) -> jax.Array:
  """x: [B, L, D] -> x + timing_signal(L, D, ..., num_timescales)."""
  _, length, channels = x.shape
  signal = timing_signal(length, channels, max_timescale,
                         num_timescales=num_timescales)            # [L, D]
  return x + signal[None].astype(x.dtype)


# 'xla': XLA's attention; 'cudnn': cuDNN's fused (flash) kernel on NVIDIA
# GPUs (bfloat16/float16, head dim <= 128; padding must be trailing).
ATTENTION_IMPLS = ('xla', 'cudnn')


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention of a query stream over a source.

  With ``projections=False`` the inputs are split into heads as they are (no
  Q/K/V/output matrices); one head without projections reproduces paper-time
  T2T.
  """
  num_heads: int = 8
  projections: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  implementation: str = 'xla'   # ATTENTION_IMPLS
  init_scheme: str = 'lecun'    # kernel initialiser (mm_jax.model.inits)

  def _proj(self, name, shape, logical, fan_in_axes):
    """A projection parameter over its ``fan_in_axes`` (T2T: a dense
    layer ``[D, N H]`` or ``[N H, D]``)."""
    fan_out_axes = tuple(i for i in range(3) if i not in fan_in_axes)
    init = inits.kernel(self.init_scheme, in_axis=fan_in_axes,
                        out_axis=fan_out_axes)
    return self.param(name, nn.with_logical_partitioning(init, logical),
                      shape, self.param_dtype).astype(self.dtype)

  @nn.compact
  def __call__(self, x: jax.Array, source: jax.Array,
               source_mask: Optional[jax.Array] = None,
               causal: bool = False) -> jax.Array:
    """x: [B, T, D] queries; source: [B, L, D]; source_mask: [B, L] -> [B, T, D]."""
    B, T, D = x.shape
    L = source.shape[1]
    N = self.num_heads
    if D % N:
      raise ValueError(f'Width {D} is not divisible by {N} heads.')
    H = D // N
    x = x.astype(self.dtype)
    source = source.astype(self.dtype)
    if self.projections:
      qkv_axes = (axes.EMBED, axes.HEADS, axes.KV)
      q = jnp.einsum('BTD,DNH->BTNH', x,
                     self._proj('query', (D, N, H), qkv_axes, (0,)))
      k = jnp.einsum('BLD,DNH->BLNH', source,
                     self._proj('key', (D, N, H), qkv_axes, (0,)))
      v = jnp.einsum('BLD,DNH->BLNH', source,
                     self._proj('value', (D, N, H), qkv_axes, (0,)))
    else:
      q = x.reshape(B, T, N, H)                                     # [B, T, N, H]
      k = source.reshape(B, L, N, H)                                # [B, L, N, H]
      v = k
    if self.implementation not in ATTENTION_IMPLS:
      raise ValueError(f'Unknown model.attention_impl '
                       f'{self.implementation!r}; choose one of '
                       f'{ATTENTION_IMPLS}.')
    mask = lengths = None
    if source_mask is not None and self.implementation == 'cudnn':
      # cuDNN's fused kernel takes padding as lengths (padding is trailing).
      lengths = source_mask.astype(jnp.int32).sum(-1)               # [B]
    elif source_mask is not None:
      mask = source_mask[:, None, None, :].astype(bool)             # [B, 1, 1, L]
    out = jax.nn.dot_product_attention(
        q, k, v, mask=mask, is_causal=causal,
        key_value_seq_lengths=lengths,
        implementation=self.implementation)                         # [B, T, N, H]
    if self.projections:
      out = jnp.einsum('BTNH,NHD->BTD', out,
                       self._proj('output', (N, H, D),
                                  (axes.HEADS, axes.KV, axes.EMBED), (0, 1)))
    else:
      out = out.reshape(B, T, D)                                    # [B, T, D]
    return out


class AttentionBlock(nn.Module):
  """``LN(x + Attention(CausalConvSteps(x + timing), source))``.

  Returns the normalised sum; the decoder adds it to its stream (T2T
  ``multi_conv_res``: ``x += attention(x, source)``), the mixer uses it as is.
  """
  convs: Sequence[Tuple[int, int]] = ((5, 1), (5, 4))
  num_heads: int = 8
  projections: bool = True
  max_timescale: float = 1.0e4
  num_timescales: int = 0      # timing_signal; T2T: 16
  separability: int = 0        # T2T: the two convs as a ConvBlock pair
  implementation: str = 'xla'  # MultiHeadAttention.implementation
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  impl: str = 'auto'           # depthwise implementation (conv.SepConv.impl)
  init_scheme: str = 'lecun'   # kernel initialiser (mm_jax.model.inits)

  @nn.compact
  def __call__(self, x: jax.Array, source: jax.Array,
               source_mask: Optional[jax.Array] = None) -> jax.Array:
    """x: [B, T, D]; source: [B, L, D]; source_mask: [B, L] -> [B, T, D]."""
    d = x.shape[-1]
    h = add_timing_signal(x, self.max_timescale, self.num_timescales)
    separabilities = conv.t2t_separabilities(self.separability,
                                             2 * len(self.convs))
    for i, (kernel, dilation) in enumerate(self.convs):
      h = conv.ConvStep(d, (kernel,), (dilation,), padding='CAUSAL',
                        epsilon=self.epsilon, dtype=self.dtype,
                        param_dtype=self.param_dtype, impl=self.impl,
                        separability=separabilities[i],
                        init_scheme=self.init_scheme,
                        name=f'conv_{i}')(h)
    attended = MultiHeadAttention(self.num_heads, self.projections, self.dtype,
                                  self.param_dtype, self.implementation,
                                  init_scheme=self.init_scheme,
                                  name='attention')(h, source, source_mask)
    y = layers.LayerNorm(self.epsilon, self.dtype, self.param_dtype,
                         name='norm')(x + attended)
    return nn.with_logical_constraint(y, (axes.BATCH, axes.LENGTH, axes.EMBED))
