r"""Single-task training: one task, the single-task expert count (Table 2).

Tiny suite on a CPU::

  python launch/train.py --config=configs/single.py:translate_en_de,tiny \
    --workdir=/tmp/single_en_de

  expected: see README results table.

Full size (``paper`` = 30 experts per MoE layer, the paper's 60 in total)::

  python launch/train.py --config=configs/single.py:translate_en_de,paper \
    --workdir=gs://bucket/single_en_de

  expected (paper Table 2, single-task column): speech token accuracy 23%,
  parsing token accuracy 97%; ImageNet and WMT EN->DE about equal to the
  joint run (top-5 86%, BLEU 21.2).
"""

from mm_jax import config as base



def parse(arg):
  """'<choice>[,size]' -> (choice, size); errors list the choices."""
  return base.split_arg(arg, base.ALL_TASKS, 'configs/single.py')


def get_config(arg=None):
  """arg: '<task>[,size]', e.g. 'translate_en_de' or 'imagenet,paper'."""
  task, size = parse(arg)
  config = base.get_config(f'{size},single')
  for name in base.ALL_TASKS:
    config.data.mixture[name] = float(name == task)
  return config
