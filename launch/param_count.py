r"""Prints a config's parameter count by component, without allocating.

  python launch/param_count.py --config=paper      # or tiny, base, paper,single

Builds the model under ``jax.eval_shape`` (works for the ``paper`` size on a
laptop CPU) and prints each top-level component, the MoE experts and the total.
"""

import argparse

import flax.linen as nn
import jax
import numpy as np

import mm_jax
from configs import base


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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='paper',
                      help="size argument of configs/base.py, e.g. 'paper'")
  args = parser.parse_args()
  config = base.get_config(args.config)
  m = config.model
  print(f'config {args.config}: d={m.d_model} experts/layer={m.moe.num_experts}'
        f' k={m.moe.k} expert hidden={m.moe.hidden} vocab={m.vocab_size}')
  for name, n in counts(config).items():
    print(f'  {name:40s} {n:>15,d}')


if __name__ == '__main__':
  main()
