"""The MoE layer alone against a dense FFN of equal active size, and its
dispatches against each other (forward + backward, interleaved)."""

from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mm_jax.model import layers, moe
from mm_jax.perf import timing


def bench_moe(config, tokens: int, steps: int, warmup: int
              ) -> Dict[str, float]:
  """MoE vs a dense FFN of equal active size (k * F), fwd + bwd, and the
  capacity dispatch vs the dense all-experts reference."""
  m = config.model
  dtype = layers.dtype(m.dtype)
  x = jax.random.normal(jax.random.key(1), (tokens // 256, 256, m.d_model),
                        dtype)

  def compiled(module):
    params = jax.jit(lambda: module.init(jax.random.key(0), x,
                                         train=False)['params'])()
    params = nn.unbox(params)

    def loss(p, x):
      y, _ = module.apply({'params': p}, x, train=True, mutable=['moe'],
                          rngs={'gating': jax.random.key(2)})
      return jnp.mean(jnp.square(y.astype(jnp.float32)))
    grad = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
    return lambda: grad(params, x)

  def with_dispatch(dispatch):
    return ml_collections.FrozenConfigDict({**m.moe.to_dict(),
                                            'dispatch': dispatch})
  kw = dict(dtype=dtype, epsilon=m.layer_norm_epsilon)
  # The MoE dispatches and the dense FFN interleaved (their ratio is the
  # target); the dense all-experts reference is E/k times slower, so it is
  # timed on its own.
  times = timing.median_times(
      {'moe': compiled(moe.MoE(with_dispatch(m.moe.dispatch), **kw)),
       'ragged': compiled(moe.MoE(with_dispatch('ragged'), **kw)),
       'dense': compiled(moe.DenseFFN(with_dispatch('capacity'), **kw))},
      steps, warmup)
  t_moe, t_dense_ffn = times['moe'], times['dense']
  t_reference = timing.median_time(compiled(moe.MoE(with_dispatch('dense'), **kw)),
                             steps, warmup)
  return {'tokens': int(x.shape[0] * x.shape[1]),
          'dispatch': m.moe.dispatch, 'moe_s': t_moe,
          'ragged_s': times['ragged'], 'dense_ffn_s': t_dense_ffn,
          'moe_over_dense': t_moe / t_dense_ffn,
          'ragged_over_dense': times['ragged'] / t_dense_ffn,
          'dense_reference_s': t_reference,
          'capacity_over_reference': t_moe / t_reference}
