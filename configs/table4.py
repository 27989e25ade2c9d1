r"""Paper Table 4: joint 8-task training with all blocks, without the MoE
layers (a dense feed-forward layer in their place) or without attention.

Tiny suite on a CPU::

  python launch/train.py --config=configs/table4.py:no_moe,tiny \
    --workdir=/tmp/table4_no_moe

  expected: see README results table.

Full size::

  python launch/train.py --config=configs/table4.py:no_attention,paper \
    --config.data.wsj_dir=/data/wsj --config.data.ptb_dir=/data/ptb \
    --workdir=gs://bucket/table4_no_attention

  expected (paper Table 4, ImageNet and WMT EN->FR log-perplexity and
  accuracy): all blocks best; removing the MoE or attention costs a little
  on both tasks (more for EN->FR without attention).
"""

from mm_jax import config as base

VARIANTS = {'all': {}, 'no_moe': {'use_moe': False},
            'no_attention': {'use_attention': False}}


def parse(arg):
  """'<choice>[,size]' -> (choice, size); errors list the choices."""
  return base.split_arg(arg, VARIANTS, 'configs/table4.py')


def get_config(arg=None):
  """arg: 'all' | 'no_moe' | 'no_attention', optionally ',<size>'."""
  variant, size = parse(arg)
  config = base.get_config(size)
  base.use_joint_mixture(config, size)
  for key, value in VARIANTS[variant].items():
    config.model[key] = value
  return config
