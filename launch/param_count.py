r"""Prints a config's parameter count by component, without allocating.

  python launch/param_count.py --config=paper      # or tiny, base, paper,single

Builds the model under ``jax.eval_shape`` (works for the ``paper`` size on a
laptop CPU) and prints each top-level component, the MoE experts and the total
(and, where the width allows, the total with T2T's sub-separable convolutions:
1,378.6 M vs 1,310.9 M for ``paper``).
"""

from absl import app
from absl import flags
import flax.linen as nn
import jax
import numpy as np

import mm_jax
from mm_jax import config as base

_CONFIG = flags.DEFINE_string(
    'config', 'paper', "Size argument of configs/base.py, e.g. 'paper' or "
    "'paper,single'.")


def counts(config) -> dict:
  """{component: scalars} for every top-level module, plus experts and total."""
  shapes = nn.unbox(mm_jax.abstract_variables(mm_jax.create_model(config)))
  params = shapes['params']
  size = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
  out = {name: size(sub) for name, sub in params.items()}
  out['experts (encoder+decoder MoE wi/wo)'] = sum(
      size({k: v for k, v in params[part]['moe'].items() if k in ('wi', 'wo')})
      for part in ('encoder', 'decoder') if 'moe' in params[part])
  out['total'] = size(params)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments {argv[1:]}; pass '
                         '--config=<size>.')
  config = base.get_config(_CONFIG.value)
  m = config.model
  print(f'config {_CONFIG.value}: d={m.d_model} '
        f'experts/layer={m.moe.num_experts} k={m.moe.k} '
        f'expert hidden={m.moe.hidden} vocab={m.vocab_size}')
  for name, n in counts(config).items():
    print(f'  {name:40s} {n:>15,d}')
  if m.d_model % 6 == 0 and not m.conv_separability:
    # T2T's multimodel_1p8 used sub-separable convolutions (slicenet
    # separability -2: pointwise in 3 then 2 groups; the mixer's 4 groups).
    t2t = base.override(config, {'model.conv_separability': -2,
                                 'model.mixer_separability': 4})
    print(f'  {"total, T2T sub-separable (-2, mixer 4)":40s} '
          f'{counts(t2t)["total"]:>15,d}')


if __name__ == '__main__':
  app.run(main)
