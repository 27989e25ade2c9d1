"""The paper's Tables 2, 3 and 4 on the built-in tiny suite, under two budgets.

  from mm_jax import reproduce
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
import importlib
import json
import logging
import os
import platform
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

from mm_jax import config_defaults as base
from mm_jax.data import plan
from mm_jax.data import prepare
from mm_jax.eval import chance
from mm_jax.train import loop
from mm_jax.train import reporting

SINGLE_TASKS = ('imagenet', 'translate_en_de', 'speech_en', 'parse_en')
# run name -> (config module, config arg without the size)
RUNS: Dict[str, Tuple[str, str]] = {
    'joint8': ('configs.joint8', ''),
    **{f'single_{t}': ('configs.single', t) for t in SINGLE_TASKS},
    'table3_parse': ('configs.table3', 'parse'),
    'table3_parse_imagenet': ('configs.table3', 'parse+imagenet'),
    'table4_no_moe': ('configs.table4', 'no_moe'),
    'table4_no_attention': ('configs.table4', 'no_attention'),
}
TABLES = {
    'table2': ('joint8',) + tuple(f'single_{t}' for t in SINGLE_TASKS),
    'table3': ('table3_parse', 'table3_parse_imagenet', 'joint8'),
    'table4': ('joint8', 'table4_no_moe', 'table4_no_attention'),
}
# The headline metric(s) per task, as in the paper's tables; the first
# decides the plateau step. Parsing's sequence_accuracy (the paper's
# "full-tree accuracy") and speech's WER come from greedy decodes.
TASK_METRICS = {
    'imagenet': ('top1', 'top5'),
    'caption_en': ('token_accuracy', 'bleu'),
    'speech_en': ('token_accuracy', 'wer'),
    'parse_en': ('token_accuracy', 'sequence_accuracy'),
    **{t: ('token_accuracy', 'bleu') for t in base.ALL_TASKS
       if t.startswith('translate_')},
}
LOWER_IS_BETTER = ('wer', 'log_ppl')
PAPER = {
    'table2': {  # joint 8-problem vs single-problem (paper Table 2)
        'imagenet': 'top-5 86% joint vs 86% single (top-1 76% vs 77%)',
        'translate_en_de': 'BLEU 21.2 joint vs 21.2 single (about equal)',
        'speech_en': 'token accuracy 41% joint vs 23% single',
        'parse_en': 'token accuracy 98% joint vs 97% single',
    },
    'table3': 'parsing full-tree accuracy 11.7% alone, 12.7% with ImageNet, '
              '14.5% with all 8 tasks',
    'table4': 'adding MoE or attention "never hurts performance and in most '
              'cases improves it on all tasks" (abstract); Table 4 reports '
              'ImageNet and WMT EN->FR',
}
# Within this fraction of a run's best value counts as plateaued.
PLATEAU_TOLERANCE = 0.02


def run_tasks(name: str, size: str = 'tiny') -> Tuple[str, ...]:
  """The tasks run ``name`` trains (weight > 0 in its config)."""
  module, arg = RUNS[name]
  config = importlib.import_module(module).get_config(
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
  config = importlib.import_module(module).get_config(
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


def value_at(results: Sequence[Mapping[str, Any]], step: int, task: str,
             metric: str) -> Optional[Tuple[float, float, float, int]]:
  """(mean, min, max, n) over seeds of ``task/metric`` at ``step``."""
  values = [r['evaluations'].get(str(step), {}).get(f'{task}/{metric}')
            for r in results]
  values = [v for v in values if v is not None and np.isfinite(v)]
  if not values:
    return None
  return (float(np.mean(values)), float(np.min(values)),
          float(np.max(values)), len(values))


def plateau(results: Sequence[Mapping[str, Any]], task: str, metric: str
            ) -> Optional[Dict[str, Any]]:
  """When the seed-mean of ``task/metric`` stopped improving.

  Returns {'best_step', 'plateau_step' (first evaluation within
  ``PLATEAU_TOLERANCE`` of the best), 'rising' (the last evaluation still
  improved on the one before by more than that)} or None.
  """
  steps = sorted({int(s) for r in results for s in r['evaluations']})
  series = [(s, value_at(results, s, task, metric)) for s in steps]
  series = [(s, v[0]) for s, v in series if v is not None]
  if not series:
    return None
  sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
  best_step, best = max(series, key=lambda sv: sign * sv[1])
  tol = PLATEAU_TOLERANCE * max(abs(best), 1e-9)
  first = next(s for s, v in series if sign * (best - v) <= tol)
  rising = len(series) > 1 and sign * (series[-1][1] - series[-2][1]) > tol
  return {'best_step': best_step, 'plateau_step': first, 'rising': rising}


def _fmt(cell: Optional[Tuple[float, float, float, int]], metric: str) -> str:
  if cell is None:
    return '—'
  mean, lo, hi, n = cell
  if metric == 'bleu':
    text = f'{mean:.1f}'
    spread = f' ({lo:.1f}–{hi:.1f})' if n > 1 else ''
  else:
    text = f'{100 * mean:.1f}%'
    spread = f' ({100 * lo:.1f}–{100 * hi:.1f})' if n > 1 else ''
  return text + spread


def _chance(levels, task, metric) -> str:
  value = levels.get(task, {}).get(metric)
  return '—' if value is None else f'{100 * value:.1f}%'


def best_cells(results: Sequence[Mapping[str, Any]], task: str
               ) -> Tuple[Optional[int], Dict[str, Any]]:
  """(best step, {metric: value_at that step}) of ``task``: the evaluation
  where the seed-mean of the task's first metric is best."""
  p = plateau(results, task, TASK_METRICS[task][0])
  if p is None:
    return None, {}
  step = p['best_step']
  return step, {m: value_at(results, step, task, m)
                for m in TASK_METRICS[task]}


def _table2(runs, n, levels) -> list:
  longest = max(r['steps'] for t in SINGLE_TASKS
                for r in runs[f'single_{t}'])
  lines = ['### Table 2: joint 8-task vs single-task', '',
           f'| task | metric | single ({n} steps) | single, best evaluation '
           f'(≤ {longest} steps) | joint, equal total steps ({n}) | joint, '
           f'equal steps per task ({8 * n}) | chance | paper |',
           '|---|---|---|---|---|---|---|---|']
  for task in SINGLE_TASKS:
    best_step, best = best_cells(runs[f'single_{task}'], task)
    for metric in TASK_METRICS[task]:
      single = value_at(runs[f'single_{task}'], n, task, metric)
      total = value_at(runs['joint8'], n, task, metric)
      per_task = value_at(runs['joint8'], 8 * n, task, metric)
      at_best = (f'{_fmt(best.get(metric), metric)} @ {best_step}'
                 if best_step else '—')
      lines.append(f'| {task} | {metric} | {_fmt(single, metric)} | '
                   f'{at_best} | {_fmt(total, metric)} | '
                   f'{_fmt(per_task, metric)} | '
                   f'{_chance(levels, task, metric)} | '
                   f'{PAPER["table2"][task]} |')
  return lines + ['', 'The best evaluation of a single-task run is picked '
                  'by the seed-mean of its first metric; the other metric is '
                  'read at the same step.', '']


def _table3(runs, n, levels) -> list:
  lines = ['### Table 3: parsing alone, with ImageNet, with all 8', '',
           f'| metric | parse alone ({n}) | + ImageNet, equal total ({n}) | '
           f'+ ImageNet, equal per task ({2 * n}) | all 8, equal total '
           f'({n}) | all 8, equal per task ({8 * n}) | chance |',
           '|---|---|---|---|---|---|---|']
  for metric in TASK_METRICS['parse_en'] + ('sequence_accuracy_tf',):
    cells = [value_at(runs['table3_parse'], n, 'parse_en', metric),
             value_at(runs['table3_parse_imagenet'], n, 'parse_en', metric),
             value_at(runs['table3_parse_imagenet'], 2 * n, 'parse_en',
                      metric),
             value_at(runs['joint8'], n, 'parse_en', metric),
             value_at(runs['joint8'], 8 * n, 'parse_en', metric)]
    lines.append(f'| {metric} | ' + ' | '.join(_fmt(c, metric) for c in cells)
                 + f' | {_chance(levels, "parse_en", metric)} |')
  return lines + ['', f'Paper: {PAPER["table3"]}. `sequence_accuracy` is '
                  'from greedy decodes, `sequence_accuracy_tf` teacher-'
                  'forced (every target token right).', '']


def _table4(runs, n, levels) -> list:
  step = 8 * n
  names = TABLES['table4']
  lines = [f'### Table 4: all blocks / without MoE / without attention '
           f'(joint 8-task, {step} steps)', '',
           '| task | metric | all blocks | without MoE | without attention | '
           'chance |', '|---|---|---|---|---|---|']
  for task in base.PAPER_TASKS:
    for metric in TASK_METRICS[task]:
      cells = [value_at(runs[r], step, task, metric) for r in names]
      lines.append(f'| {task} | {metric} | ' +
                   ' | '.join(_fmt(c, metric) for c in cells) +
                   f' | {_chance(levels, task, metric)} |')
  return lines + ['', f'Paper: {PAPER["table4"]}.', '']


def _runs_table(runs) -> list:
  lines = ['### Runs and plateaus', '',
           'Plateau: the first evaluation within '
           f'{PLATEAU_TOLERANCE:.0%} of the run\'s best seed-mean value of the '
           'task\'s first metric; "rising" if the last evaluation still gained '
           'more than that.', '',
           '| run | seeds | steps | wall time per seed | task: plateau step / '
           'best step |', '|---|---|---|---|---|']
  for name, results in runs.items():
    tasks = results[0]['tasks']
    cells = []
    for task in tasks:
      p = plateau(results, task, TASK_METRICS.get(task, ('token_accuracy',))
                  [0])
      if p:
        cells.append(f'{task} {p["plateau_step"]}/{p["best_step"]}'
                     + (' rising' if p['rising'] else ''))
    wall = np.mean([r['wall_seconds'] for r in results]) / 60
    lines.append(f'| {name} | {len(results)} | {results[0]["steps"]} | '
                 f'{wall:.1f} min | {"; ".join(cells)} |')
  return lines + ['']


def format_tables(runs: Mapping[str, Sequence[Mapping[str, Any]]],
                  steps_per_task: int,
                  levels: Mapping[str, Mapping[str, float]],
                  header: str) -> str:
  """The markdown of ``results.md``: the tables whose runs are all in
  ``runs`` ({run: [result per seed]}), then the runs and their plateaus."""
  lines = [header, '']
  for table, make in (('table2', _table2), ('table3', _table3),
                      ('table4', _table4)):
    if all(r in runs for r in TABLES[table]):
      lines += make(runs, steps_per_task, levels)
  lines += _runs_table(runs)
  return '\n'.join(lines) + '\n'


def plot_learning_curves(runs, path: str) -> None:
  """Per-task training loss vs steps of that task: joint and single runs
  (seed 0; the joint run's x axis is its steps / 8, i.e. per task)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(2, 4, figsize=(16, 7), squeeze=False)
  for ax, task in zip(axes.ravel(), base.PAPER_TASKS):
    for name in ('joint8', f'single_{task}'):
      if name not in runs:
        continue
      result = runs[name][0]
      scale = 1.0 / len(result['tasks'])
      points = [(c['step'] * scale, c[f'{task}/loss'])
                for c in result['curves'] if f'{task}/loss' in c]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, label=name)
    ax.set_title(task)
    ax.set_xlabel('steps per task')
    ax.set_ylabel('training loss (smoothed CE)')
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def expert_load_matrix(records: Sequence[Mapping[str, Any]], layer: str,
                       tasks: Sequence[str], last: float = 0.5) -> np.ndarray:
  """[tasks, E] mean routed share per expert of ``layer`` over the last
  ``last`` fraction of the logged steps (rows of absent tasks are NaN)."""
  records = list(records)
  records = records[int(len(records) * (1 - last)):]
  rows = []
  for task in tasks:
    key = f'moe_load/{task}/{layer}'
    values = [r[key] for r in records if key in r]
    rows.append(np.mean(values, axis=0) if values else None)
  width = max((len(r) for r in rows if r is not None), default=0)
  return np.array([r if r is not None else np.full(width, np.nan)
                   for r in rows])


def moe_layers(records: Sequence[Mapping[str, Any]]) -> list:
  """The MoE layer paths found in expert-load records."""
  layers = set()
  for r in records:
    for key in r:
      if key.startswith('moe_load/'):
        layers.add(key.split('/', 2)[2])
  return sorted(layers)


def plot_expert_load(result, path: str) -> bool:
  """Task x expert heatmaps, one per MoE layer; False if the run has none."""
  records = result['expert_load']
  layers = moe_layers(records)
  if not layers:
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks = result['tasks']
  fig, axes = plt.subplots(1, len(layers), figsize=(6 * len(layers), 4),
                           squeeze=False)
  for ax, layer in zip(axes[0], layers):
    matrix = expert_load_matrix(records, layer, tasks)
    image = ax.imshow(matrix, aspect='auto', cmap='viridis', vmin=0)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_xlabel('expert')
    ax.set_title(f'{result["name"]}: {layer}', fontsize=9)
    fig.colorbar(image, ax=ax, label='share of routed slots')
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return True


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
  markdown = format_tables(done, steps_per_task, levels, header)
  with open(os.path.join(results_dir, 'results.md'), 'w') as f:
    f.write(markdown)
  with open(os.path.join(results_dir, 'results.json'), 'w') as f:
    json.dump({'chance': levels, 'hardware': hardware(),
               'steps_per_task': steps_per_task, 'seeds': list(seeds),
               'runs': {n: [{k: v for k, v in r.items()
                             if k not in ('curves', 'expert_load')}
                            for r in rs] for n, rs in done.items()}},
              f, indent=1)
  plot_learning_curves(done, os.path.join(results_dir,
                                          'learning_curves.png'))
  for name, results in done.items():
    plot_expert_load(results[0], os.path.join(results_dir,
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
