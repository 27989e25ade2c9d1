"""Small shared layers: LayerNorm and dtype lookup."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mm_jax import axes


def dtype(name) -> jnp.dtype:
  """'bfloat16' | 'float32' | dtype -> jnp.dtype."""
  return jnp.dtype(name)


def last_axis(v: jax.Array, ndim: int) -> jax.Array:
  """``v`` [C] as [1, ..., 1, C] of rank ``ndim``: a per-channel vector,
  broadcast explicitly (the tests raise on implicit rank promotion)."""
  return v.reshape((1,) * (ndim - 1) + v.shape)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis, statistics in float32 (epsilon 1e-6).

  ``scale_init`` is the initial value of the scale (1; 0 makes the layer
  output its bias, zero, at initialisation: see ``ConvBlock``).
  """
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  logical_axis: str = axes.EMBED
  scale_init: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., D] -> [..., D] in ``dtype``."""
    d = x.shape[-1]
    scale = self.param('scale', nn.with_logical_partitioning(
        nn.initializers.constant(self.scale_init), (self.logical_axis,)), (d,),
                       self.param_dtype)
    bias = self.param('bias', nn.with_logical_partitioning(
        nn.initializers.zeros_init(), (self.logical_axis,)), (d,),
                      self.param_dtype)
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    y = (y * last_axis(scale.astype(jnp.float32), y.ndim)
         + last_axis(bias.astype(jnp.float32), y.ndim))
    return y.astype(self.dtype)
