r"""A/B runs of config variants over seeds (``mm_jax.experiments.ablate``).

  python launch/ablate.py --config=configs/joint8.py:tiny \
    --tasks=parse_en,translate_en_de --steps=300 --seeds=0,1 \
    --variant='t2t:' --variant='zero_last:model.conv_block_zero_init=last' \
    --workroot=/tmp/ab --output=results/ab/body

A variant is ``name:key=value,...`` (dotted config keys; values are Python
literals or bare strings). ``--tasks`` sets mixture weight 1 on those tasks
and 0 on the others. Re-running continues: finished runs are read back.
"""

import shlex
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mm_jax import config as base
from mm_jax.experiments import ablate

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file[:arg], e.g. configs/joint8.py:tiny.',
    lock_config=True)
_TASKS = flags.DEFINE_list('tasks', [], 'Tasks to train (weight 1); others 0. '
                           'Empty: the config\'s mixture.')
_VARIANTS = flags.DEFINE_multi_string('variant', [], 'name:key=value,...')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1'], 'Seeds per variant.')
_STEPS = flags.DEFINE_integer('steps', 300, 'Training steps per run.')
_WORKROOT = flags.DEFINE_string('workroot', '/tmp/mm_jax_ablate',
                                'One work directory per run under this.')
_OUTPUT = flags.DEFINE_string('output', None, 'Writes <output>.md/.json.')
flags.mark_flags_as_required(['config', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  if not _VARIANTS.value:
    raise app.UsageError('Give at least one --variant=name:key=value,...')
  config = _CONFIG.value
  if _TASKS.value:
    config = base.override(config, ablate.task_overrides(
        config, _TASKS.value))
  variants = [ablate.parse_variant(v) for v in _VARIANTS.value]
  markdown = ablate.run_all(
      config, variants, [int(s) for s in _SEEDS.value],
      workroot=_WORKROOT.value, steps=_STEPS.value, output=_OUTPUT.value,
      command='python ' + ' '.join(shlex.quote(a) for a in sys.argv))
  logging.info('\n%s', markdown)
  print(markdown)


if __name__ == '__main__':
  app.run(main)
