"""The paper's Tables 2, 3 and 4 on the built-in tiny suite, under two budgets.

  from mm_jax.experiments import reproduce
  out = reproduce.run_all('results/tiny', workroot='/tmp/mm_reproduce',
                          steps_per_task=100, seeds=(0, 1), single_budget=4)

Runs (``RUNS``; each once per seed, shared between tables) train every task
they enable with an even mixture, for ``steps_per_task`` steps per enabled
task: a single-task run ``N`` steps, the joint 8-task run ``8 N``, parsing
with ImageNet ``2 N``. Every run is evaluated every ``N`` steps, so one joint
run gives both budgets of the comparison:

- **equal total steps** (the paper's protocol): the joint run at step ``N``
  against the single-task run at ``N`` (each joint task saw ``N / 8``);
- **equal steps per task**: the joint run at ``8 N`` against the single-task
  run at ``N`` (each task saw ``N`` steps in both).

  joint8                 Table 2 joint, Table 3 "all 8", Table 4 "all blocks"
  single_<task>          Table 2 single-task: imagenet, translate_en_de,
                         speech_en, parse_en (single-task expert count)
  table3_parse           Table 3: parsing alone (the joint model's size)
  table3_parse_imagenet  Table 3: parsing with ImageNet
  table4_no_moe          Table 4: a dense FFN of equal active size per MoE
  table4_no_attention    Table 4: no attention blocks

Single-task runs train ``single_budget`` times longer (``single_budget N``
steps, still evaluated every ``N``), so that Table 2 shows them both at
``N`` and at their best evaluation, with the step where they plateaued: a
single-task model is not cut off before it has converged.

Each (run, seed) is ``loop.train_and_evaluate`` of its config file in
``<workroot>/<run>_s<seed>``; a finished one (``result.json`` there) is
read back, so an interrupted call continues, and ``runs=`` picks a subset.
A finished run with fewer steps than asked for (a larger ``single_budget``)
resumes from its last checkpoint and trains on (the tiny schedule, 'noam',
does not depend on the run's length, so this equals a longer run).
Written to the results folder: ``results.md`` (the tables: mean and
min–max over seeds, chance levels, the paper's numbers; the plateau step of
every run), ``results.json``, ``learning_curves.png`` and
``expert_load_<run>.png`` (seed 0).
"""

import datetime
import json
import logging
import os
import platform
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax

from mm_jax import config as base
from mm_jax.data import plan
from mm_jax.data import prepare
from mm_jax.eval import chance
from mm_jax.experiments import report
from mm_jax.train import loop
from mm_jax.train import reporting

SINGLE_TASKS = report.SINGLE_TASKS
TABLES = report.TABLES
# run name -> (experiment file in configs/, config arg without the size)
RUNS: Dict[str, Tuple[str, str]] = {
    'joint8': ('joint8', ''),
    **{f'single_{t}': ('single', t) for t in SINGLE_TASKS},
    'table3_parse': ('table3', 'parse'),
    'table3_parse_imagenet': ('table3', 'parse+imagenet'),
    'table4_no_moe': ('table4', 'no_moe'),
    'table4_no_attention': ('table4', 'no_attention'),
}


def run_tasks(name: str, size: str = 'tiny') -> Tuple[str, ...]:
  """The tasks run ``name`` trains (weight > 0 in its config)."""
  module, arg = RUNS[name]
  config = base.load_module(module).get_config(
      f'{arg},{size}' if arg else size)
  return plan.enabled_names(config.data)


def budget(name: str, single_budget: int) -> int:
  """How many times ``steps_per_task`` per task run ``name`` trains."""
  return single_budget if name.startswith('single_') else 1


def run_config(name: str, size: str, steps_per_task: int, seed: int = 0,
               overrides: Optional[Mapping[str, Any]] = None,
               single_budget: int = 1):
  """The locked config of run ``name``: its config file at ``size``, an even
  mixture over its tasks, ``steps_per_task`` steps per task (times
  ``single_budget`` for a single-task run), evaluated every
  ``steps_per_task`` steps, then ``overrides``."""
  if single_budget < 1:
    raise ValueError(f'single_budget={single_budget}: it is a multiple of '
                     'steps_per_task; use 1 or more.')
  module, arg = RUNS[name]
  config = base.load_module(module).get_config(
      f'{arg},{size}' if arg else size)
  tasks = run_tasks(name, size)
  steps = steps_per_task * len(tasks) * budget(name, single_budget)
  settings = {f'data.mixture.{t}': float(t in tasks)
              for t in config.data.mixture}
  settings.update({
      'seed': seed, 'train.num_train_steps': steps,
      'train.eval_every': steps_per_task, 'train.checkpoint_every': steps,
      'train.log_every': max(1, steps_per_task // 10)})
  settings.update(overrides or {})
  return base.override(config, settings)


def _read_jsonl(path: str) -> list:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def evaluations(records: Sequence[Mapping[str, Any]]) -> Dict[int, Dict]:
  """{step: {'<task>/<metric>': value}} of the validation passes logged in
  ``metrics.jsonl`` records."""
  out: Dict[int, Dict[str, float]] = {}
  prefix = 'validation/'
  for r in records:
    for key, value in r.items():
      if key.startswith(prefix) and '/mean/' not in key:
        out.setdefault(int(r['step']), {})[key[len(prefix):]] = float(value)
  return dict(sorted(out.items()))


def run_one(name: str, workroot: str, size: str, steps_per_task: int,
            seed: int = 0, overrides: Optional[Mapping[str, Any]] = None,
            single_budget: int = 1) -> Dict[str, Any]:
  """Trains and evaluates (run ``name``, ``seed``) or reads its result; a
  finished run with fewer steps than asked for trains on from its last
  checkpoint (its wall time adds up)."""
  workdir = os.path.join(workroot, f'{name}_s{seed}')
  path = os.path.join(workdir, 'result.json')
  config = run_config(name, size, steps_per_task, seed, overrides,
                      single_budget)
  steps = int(config.train.num_train_steps)
  earlier = 0.0
  if os.path.exists(path):
    with open(path) as f:
      result = json.load(f)
    if result.get('steps_per_task') == steps_per_task:
      if result['steps'] >= steps:
        logging.info('reproduce: %s seed %d already done (%s).', name, seed,
                     path)
        return result
      logging.info('reproduce: %s seed %d trains on from step %d to %d.',
                   name, seed, result['steps'], steps)
      earlier = float(result['wall_seconds'])
  else:
    logging.info('reproduce: running %s seed %d in %s.', name, seed, workdir)
  start = time.perf_counter()
  loop.train_and_evaluate(config, workdir)
  records = _read_jsonl(os.path.join(workdir, reporting.METRICS_FILE))
  result = {
      'name': name, 'seed': seed, 'size': size,
      'steps_per_task': steps_per_task,
      'steps': steps,
      'wall_seconds': earlier + time.perf_counter() - start,
      'tasks': list(run_tasks(name, size)),
      'evaluations': {str(k): v for k, v in evaluations(records).items()},
      'curves': [r for r in records if any(k.endswith('/loss') for k in r)],
      'expert_load': _read_jsonl(os.path.join(workdir, reporting.LOAD_FILE)),
  }
  with open(path, 'w') as f:
    json.dump(result, f)
  return result


def hardware() -> str:
  devices = jax.devices()
  return (f'{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}'
          f'), {os.cpu_count()} CPU cores, {platform.machine()}')


def run_all(results_dir: str, *, workroot: str, size: str = 'tiny',
            steps_per_task: int = 100, seeds: Sequence[int] = (0, 1),
            tables: Sequence[str] = tuple(TABLES),
            runs: Optional[Sequence[str]] = None,
            overrides: Optional[Mapping[str, Any]] = None,
            single_budget: int = 4) -> Dict[str, Any]:
  """Runs what ``tables`` need (or only ``runs``) and writes the results
  folder from every finished run found in ``workroot``; single-task runs
  train ``single_budget`` times ``steps_per_task`` steps.

  Returns {'runs': {run: [result per seed]}, 'chance': levels,
  'markdown': text}.
  """
  unknown = set(tables) - set(TABLES)
  if unknown:
    raise ValueError(f'Unknown tables {sorted(unknown)}; choose from '
                     f'{sorted(TABLES)}.')
  names = list(dict.fromkeys(n for t in TABLES for n in TABLES[t]
                             if t in tables))
  if runs is not None:
    bad = set(runs) - set(RUNS)
    if bad:
      raise ValueError(f'Unknown runs {sorted(bad)}; choose from '
                       f'{sorted(RUNS)}.')
    names = [n for n in names if n in runs]
  os.makedirs(results_dir, exist_ok=True)
  start = time.perf_counter()
  for name in names:
    for seed in seeds:
      run_one(name, workroot, size, steps_per_task, seed, overrides,
              single_budget)
  # Tables from every finished run of these settings, this call's or not.
  done = {}
  for name in RUNS:
    found = [_read_result(workroot, name, s, steps_per_task) for s in seeds]
    found = [r for r in found if r is not None]
    if found:
      done[name] = found
  joint = run_config('joint8', size, steps_per_task, 0, overrides)
  vocab = prepare.ensure_prepared(joint.data)
  levels = chance.chance_levels(joint, vocab)
  total = sum(r['wall_seconds'] for rs in done.values() for r in rs)
  header = (f'## Paper tables on the tiny suite ({steps_per_task} steps per '
            f'task, seeds {list(seeds)}, batch {joint.data.batch_size})\n\n'
            f'Hardware: {hardware()}. Runs took {total / 3600:.1f} h in all '
            f'(this call {(time.perf_counter() - start) / 3600:.1f} h); '
            f'generated {datetime.date.today().isoformat()} by `python '
            f'launch/reproduce.py --suite={size} --steps_per_task='
            f'{steps_per_task} --seeds={",".join(map(str, seeds))} '
            f'--single_budget={single_budget}` (the runs table gives each '
            'run\'s steps). Every '
            'run mixes its tasks evenly; cells are the mean over seeds '
            '(min–max). Metrics are on the first '
            f'{joint.eval.max_batches * joint.eval.batch_size} validation '
            'examples per task; decodes are greedy for the tiny size.')
  markdown = report.format_tables(done, steps_per_task, levels, header)
  with open(os.path.join(results_dir, 'results.md'), 'w') as f:
    f.write(markdown)
  with open(os.path.join(results_dir, 'results.json'), 'w') as f:
    json.dump({'chance': levels, 'hardware': hardware(),
               'steps_per_task': steps_per_task, 'seeds': list(seeds),
               'runs': {n: [{k: v for k, v in r.items()
                             if k not in ('curves', 'expert_load')}
                            for r in rs] for n, rs in done.items()}},
              f, indent=1)
  report.plot_learning_curves(done, os.path.join(results_dir,
                                          'learning_curves.png'))
  for name, results in done.items():
    report.plot_expert_load(results[0], os.path.join(results_dir,
                                              f'expert_load_{name}.png'))
  return {'runs': done, 'chance': levels, 'markdown': markdown}


def _read_result(workroot: str, name: str, seed: int, steps_per_task: int
                 ) -> Optional[Dict[str, Any]]:
  path = os.path.join(workroot, f'{name}_s{seed}', 'result.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  return result if result.get('steps_per_task') == steps_per_task else None
