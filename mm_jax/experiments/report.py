"""The tables and plots of ``mm_jax.experiments.reproduce``: which runs each
of the paper's tables needs, seed-means with their range, plateaus, the
paper's numbers beside each cell, learning curves and expert-load maps."""

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from mm_jax import config as base

SINGLE_TASKS = ('imagenet', 'translate_en_de', 'speech_en', 'parse_en')
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
