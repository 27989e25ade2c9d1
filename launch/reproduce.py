r"""Reproduces the paper's Tables 2, 3 and 4 on the built-in tiny suite.

  python launch/reproduce.py --suite=tiny                  # ~45 min on
                                                           # 2 CPU cores
  python launch/reproduce.py --suite=tiny --tables=table3 --steps=100

Trains the nine runs the tables need (joint 8-task, four single-task runs,
parsing alone / with ImageNet, no MoE, no attention; see
``mm_jax/reproduce.py``), each for ``--steps`` steps in
``<workroot>/<run>``, and writes ``results.md`` (the tables with chance
levels and the paper's numbers), ``results.json`` and the plots
(``learning_curves.png``, ``expert_load_<run>.png``) into ``--results``.
A run already finished in the work root is read, not trained again, so an
interrupted call picks up where it stopped.
"""

from absl import app
from absl import flags
from absl import logging

from mm_jax import reproduce

_SUITE = flags.DEFINE_enum(
    'suite', 'tiny', ['tiny'], 'Dataset suite. Only the built-in tiny suite: '
    'the real-data tables need TPU/GPU runs of the config files (README).')
_STEPS = flags.DEFINE_integer('steps', 150, 'Train steps of every run.')
_TABLES = flags.DEFINE_list('tables', list(reproduce.TABLES),
                            'Which tables: table2, table3, table4.')
_RESULTS = flags.DEFINE_string('results', 'results/tiny',
                               'Folder for results.md, results.json, plots.')
_WORKROOT = flags.DEFINE_string('workroot', '/tmp/mm_jax_reproduce',
                                'Work directories of the runs.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  out = reproduce.run_all(_RESULTS.value, workroot=_WORKROOT.value,
                          size=_SUITE.value, steps=_STEPS.value,
                          tables=_TABLES.value)
  logging.info('Wrote %s/results.md.', _RESULTS.value)
  print(out['markdown'])


if __name__ == '__main__':
  app.run(main)
