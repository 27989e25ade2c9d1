"""A plain dense Transformer train step timed in the benchmark's process:
an anchor for the FLOP/s the MultiModel's step achieves on the same
machine (both counted by XLA)."""

from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mm_jax.perf import timing


def anchor_transformer(steps: int, warmup: int, d: int = 512,
                       layers_: int = 4, length: int = 128, batch: int = 16,
                       dtype: str = 'float32') -> Dict[str, float]:
  """A plain dense Transformer encoder train step (Adam), for comparing
  achieved FLOP/s in the same process: d 512, 4 layers, 8 heads, FFN 4d,
  L 128, B 16. FLOPs from XLA's cost analysis of the lowered step."""

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.LayerNorm(dtype=dtype)(x)
      x = x + nn.MultiHeadDotProductAttention(8, dtype=dtype)(h, h)
      h = nn.LayerNorm(dtype=dtype)(x)
      h = nn.Dense(4 * d, dtype=dtype)(h)
      return x + nn.Dense(d, dtype=dtype)(nn.relu(h))

  class Net(nn.Module):
    @nn.compact
    def __call__(self, ids):
      x = nn.Embed(1024, d, dtype=dtype)(ids)
      for _ in range(layers_):
        x = Block()(x)
      return nn.Dense(1024, dtype=dtype)(nn.LayerNorm(dtype=dtype)(x))

  net = Net()
  ids = jnp.asarray(np.random.RandomState(0).randint(0, 1024, (batch,
                                                              length)))
  params = jax.jit(net.init)(jax.random.key(0), ids)
  tx = optax.adam(1e-3)
  opt = tx.init(params)

  def step(params, opt, ids):
    def loss(p):
      logits = net.apply(p, ids).astype(jnp.float32)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, ids).mean()
    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt
  lowered = jax.jit(step).lower(params, opt, ids)
  compiled_step = lowered.compile()
  flops = timing.xla_flops(lowered)
  seconds = timing.median_time(lambda: compiled_step(params, opt, ids), steps,
                         warmup)
  return {'step_s': seconds, 'flops_per_step': flops,
          'flops_per_s': flops / seconds if flops else None}
