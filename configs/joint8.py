r"""Joint training on the eight paper tasks (the paper's Tables 1 and 2).

Tiny suite on a CPU (data is generated on first use)::

  python launch/train.py --config=configs/joint8.py:tiny --workdir=/tmp/joint8

  expected: see README results table.

Full size on a TPU pod or GPU host (real data prepared as in README; WSJ and
the Penn Treebank are user-supplied)::

  python launch/train.py --config=configs/joint8.py:paper \
    --config.data.wsj_dir=/data/wsj --config.data.ptb_dir=/data/ptb \
    --workdir=gs://bucket/joint8

  expected (paper Table 1, joint 8-task): ImageNet top-5 86%, WMT EN->DE
  BLEU 21.2, EN->FR BLEU 30.5; (Table 2) speech token accuracy 41%, parsing
  token accuracy 98%.

``base`` is T2T's ``multimodel_base`` scale with the later rsqrt ("noam")
schedule; ``paper`` is the paper's model (d=1536, k=4, 120 experts per MoE
layer) with T2T's paper-time schedule: exponential warm-up over 3000 steps
from 1% to a peak of 0.05, then exponential decay, and T2T's normalised
weight decay 3.0 (``train`` in ``mm_jax/config_defaults.py`` says which
T2T hparams set each value).
"""

from configs import base

SIZES = tuple(base.SIZES)


def get_config(arg=None):
  """arg: 'tiny' | 'base' | 'paper' (default 'tiny')."""
  size = arg or 'tiny'
  if size not in SIZES:
    raise ValueError(f'configs/joint8.py: unknown arg {arg!r}; choose one of '
                     f'{SIZES}.')
  config = base.get_config(size)
  base.use_joint_mixture(config, size)
  config.data.mixing = 'fixed'          # one task per step, as the paper
  return config
