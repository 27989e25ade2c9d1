r"""Joint training on the eight paper tasks (the paper's Tables 1 and 2).

Tiny suite on a CPU (data is generated on first use)::

  python launch/train.py --config=configs/joint8.py:tiny --workdir=/tmp/joint8

  expected: see README results table.

Full size on a TPU pod or GPU host (real data prepared as in README; WSJ and
the Penn Treebank are user-supplied)::

  python launch/train.py --config=configs/joint8.py:paper \
    --config.data.wsj_dir=/data/wsj --config.data.ptb_dir=/data/ptb \
    --workdir=gs://bucket/joint8

On a pod slice, ``<size>,<slice>`` also sets the mesh planned for that slice
(``POD_MESHES``; README, "TPU pods without a TPU")::

  python launch/train.py --config=configs/joint8.py:paper,v5p-64 ...

  expected (paper Table 1, joint 8-task): ImageNet top-5 86%, WMT EN->DE
  BLEU 21.2, EN->FR BLEU 30.5; (Table 2) speech token accuracy 41%, parsing
  token accuracy 98%.

``base`` is T2T's ``multimodel_base`` scale with the later rsqrt ("noam")
schedule; ``paper`` is the paper's model (d=1536, k=4, 120 experts per MoE
layer) with T2T's paper-time schedule: exponential warm-up over 3000 steps
from 1% to a peak of 0.05, then exponential decay, and T2T's normalised
weight decay 3.0 (``train`` in ``mm_jax/config/defaults.py`` says which
T2T hparams set each value).
"""

from mm_jax import config as base

SIZES = tuple(base.SIZES)

# The mesh per size and pod slice (accelerator-type names, as
# launch/aot_check.py's --topology takes them), from deviceless compiles of
# the largest translation train step (docs/experiments.md, "Pod plans"):
# each fits in HBM; on v5p it had the shorter step by libtpu 0.0.42's cost
# model (compiler estimates, not measurements). On v4 and v5e that cost
# model returns invalid (negative) times, so there the plan takes v5p's
# winner, which also needs less memory and fewer all-reduce bytes. base on
# v5p-256 is 'dp': jax.make_mesh cannot lay an expert axis of 2 (30
# experts allow no 4 or 8) onto its 4x4x8 torus. ``data`` is fixed too, so
# a plan used on a slice of another size fails naming the device count.
POD_MESHES = {
    'base': {
        'v4-32': dict(preset='dp+ep', data=8, expert=2),
        'v5e-64': dict(preset='dp+ep', data=32, expert=2),
        'v5p-64': dict(preset='dp+ep', data=16, expert=2),
        'v5p-256': dict(preset='dp', data=128, expert=1),
    },
    'paper': {
        'v4-32': dict(preset='dp+ep', data=2, expert=8),
        'v5e-64': dict(preset='dp+ep', data=8, expert=8),
        'v5p-64': dict(preset='dp+ep', data=4, expert=8),
        'v5p-256': dict(preset='dp+ep', data=16, expert=8),
    },
}


def parse(arg):
  """'<size>[,<slice>]' -> (size, slice or None); errors list the choices."""
  parts = [p for p in (arg or 'tiny').split(',') if p]
  size = parts[0] if parts else ''
  if size not in SIZES or len(parts) > 2:
    raise ValueError(f'configs/joint8.py: bad arg {arg!r}; use '
                     "'<size>[,<slice>]' with size one of "
                     f'{SIZES} (default tiny).')
  pod = parts[1] if len(parts) == 2 else None
  if pod is not None and pod not in POD_MESHES.get(size, {}):
    raise ValueError(
        f'configs/joint8.py: no mesh plan {pod!r} for size {size!r}; choose '
        f'one of {tuple(POD_MESHES.get(size, {})) or "none (no plans)"}, or '
        'leave it out and set --config.mesh.* yourself.')
  return size, pod


def get_config(arg=None):
  """arg: '<size>[,<slice>]': 'tiny' | 'base' | 'paper' (default 'tiny'),
  optionally with a pod slice of ``POD_MESHES``, e.g. 'paper,v5p-64'."""
  size, pod = parse(arg)
  config = base.get_config(size)
  base.use_joint_mixture(config, size)
  config.data.mixing = 'fixed'          # one task per step, as the paper
  if pod is not None:
    plan = POD_MESHES[size][pod]
    config.mesh.preset = plan['preset']
    config.mesh.shape.data = plan['data']
    config.mesh.shape.expert = plan['expert']
  return config
