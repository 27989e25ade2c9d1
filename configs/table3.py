r"""Paper Table 3: parsing alone, with ImageNet, and with all eight tasks.

All three variants use the same (joint) model, so only the task mixture
differs. Tiny suite on a CPU::

  python launch/train.py --config=configs/table3.py:parse+imagenet,tiny \
    --workdir=/tmp/table3_parse_imagenet

  expected: see README results table.

Full size (``paper``; the Penn Treebank is user-supplied)::

  python launch/train.py --config=configs/table3.py:all8,paper \
    --config.data.ptb_dir=/data/ptb --workdir=gs://bucket/table3_all8

  expected (paper Table 3, parsing full-tree accuracy): parse 11.7%,
  parse+imagenet 12.7%, all8 14.5%.
"""

from mm_jax import config as base

VARIANTS = {
    'parse': ('parse_en',),
    'parse+imagenet': ('parse_en', 'imagenet'),
    'all8': base.PAPER_TASKS,
}


def parse(arg):
  """'<choice>[,size]' -> (choice, size); errors list the choices."""
  return base.split_arg(arg, VARIANTS, 'configs/table3.py')


def get_config(arg=None):
  """arg: 'parse' | 'parse+imagenet' | 'all8', optionally ',<size>'."""
  variant, size = parse(arg)
  config = base.get_config(size)
  if variant == 'all8':   # the joint8 run's mixture
    base.use_joint_mixture(config, size)
  else:
    for task in base.ALL_TASKS:
      config.data.mixture[task] = float(task in VARIANTS[variant])
  return config
