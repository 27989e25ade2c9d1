r"""Reproduces the paper's Tables 2, 3 and 4 on the built-in tiny suite.

  python launch/reproduce.py --suite=tiny          # 100 steps per task,
                                                   # seeds 0 and 1
  python launch/reproduce.py --runs=joint8,single_parse_en --seeds=0
  python launch/reproduce.py --tables=table3 --steps_per_task=50
  python launch/reproduce.py --runs=single_speech_en --single_budget=2

Trains the runs the tables need (joint 8-task, four single-task runs,
parsing alone / with ImageNet, no MoE, no attention; see
``mm_jax/experiments/reproduce.py``), each with an even mixture over its tasks for
``--steps_per_task`` steps per task (single-task runs ``--single_budget``
times that) and once per seed, in
``<workroot>/<run>_s<seed>``, evaluating every ``--steps_per_task`` steps;
then writes ``results.md`` (the tables under two budgets, equal total steps
and equal steps per task, with chance levels, the paper's numbers and the
plateau step of every run), ``results.json`` and the plots
(``learning_curves.png``, ``expert_load_<run>.png``) into ``--results``.
A finished (run, seed) in the work root is read, not trained again, so an
interrupted call picks up where it stopped; ``--runs`` trains a subset and
the tables use every finished run found.
"""

from absl import app
from absl import flags
from absl import logging

from mm_jax.experiments import reproduce

_SUITE = flags.DEFINE_enum(
    'suite', 'tiny', ['tiny'], 'Dataset suite. Only the built-in tiny suite: '
    'the real-data tables need TPU/GPU runs of the config files (README).')
_STEPS = flags.DEFINE_integer('steps_per_task', 100,
                              'Train steps per enabled task of every run.')
_SINGLE_BUDGET = flags.DEFINE_integer(
    'single_budget', 4, 'Single-task runs train this many times '
    '--steps_per_task steps (evaluated every --steps_per_task), so that '
    'Table 2 also shows each at its best evaluation and plateau step. A '
    'finished shorter run trains on from its last checkpoint.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1'], 'Seeds of every run.')
_TABLES = flags.DEFINE_list('tables', list(reproduce.TABLES),
                            'Which tables: table2, table3, table4.')
_RUNS = flags.DEFINE_list('runs', None, 'Only these runs (default: all the '
                          f'tables need), of {sorted(reproduce.RUNS)}.')
_RESULTS = flags.DEFINE_string('results', 'results/tiny',
                               'Folder for results.md, results.json, plots.')
_WORKROOT = flags.DEFINE_string('workroot', '/tmp/mm_jax_reproduce',
                                'Work directories of the runs.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  out = reproduce.run_all(_RESULTS.value, workroot=_WORKROOT.value,
                          size=_SUITE.value, steps_per_task=_STEPS.value,
                          seeds=[int(s) for s in _SEEDS.value],
                          tables=_TABLES.value, runs=_RUNS.value,
                          single_budget=_SINGLE_BUDGET.value)
  logging.info('Wrote %s/results.md.', _RESULTS.value)
  print(out['markdown'])


if __name__ == '__main__':
  app.run(main)
