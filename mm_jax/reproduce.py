"""The paper's Tables 2, 3 and 4 on the built-in tiny suite, in one call.

  from mm_jax import reproduce
  summary = reproduce.run_all('results/tiny', workroot='/tmp/mm_reproduce',
                              steps=150)

Runs (each once, shared between tables; every run trains ``steps`` steps
with the same batch size, so a single-task run sees its task 8x as often as
the joint run):

  joint8                 Table 2 joint, Table 3 "all 8", Table 4 "all blocks"
  single_<task>          Table 2 single-task: imagenet, translate_en_de,
                         speech_en, parse_en (single-task expert count)
  table3_parse           Table 3: parsing alone (the joint model's size)
  table3_parse_imagenet  Table 3: parsing with ImageNet
  table4_no_moe          Table 4: a dense FFN of equal active size per MoE
  table4_no_attention    Table 4: no attention blocks

Each run is ``loop.train_and_evaluate`` of its config file (``configs/``)
in ``<workroot>/<run>``; a finished run (``result.json`` there) is not run
again. Written to the results folder: ``results.md`` (the three tables
with chance levels and the paper's numbers, hardware and wall times),
``results.json``, ``learning_curves.png`` (per-task training loss of the
joint and single-task runs) and ``expert_load_<run>.png`` (per MoE layer, a
task x expert heatmap of the share of routed token slots).
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

from configs import base
from mm_jax.data import prepare
from mm_jax.data import preprocess
from mm_jax.data import registry
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
# The headline metric(s) per task, as in the paper's tables.
TASK_METRICS = {
    'imagenet': ('top1', 'top5'),
    'caption_en': ('token_accuracy', 'bleu'),
    'speech_en': ('token_accuracy', 'wer'),
    'parse_en': ('token_accuracy', 'sequence_accuracy'),
    **{t: ('token_accuracy', 'bleu') for t in base.ALL_TASKS
       if t.startswith('translate_')},
}
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


def run_config(name: str, size: str, steps: int,
               overrides: Optional[Mapping[str, Any]] = None):
  """The locked config of run ``name``: its config file at ``size``, trained
  ``steps`` steps, evaluated once at the end, plus ``overrides``."""
  module, arg = RUNS[name]
  arg = f'{arg},{size}' if arg else size
  config = importlib.import_module(module).get_config(arg)
  settings = {'train.num_train_steps': steps, 'train.eval_every': steps,
              'train.checkpoint_every': steps,
              'train.log_every': max(1, steps // 20)}
  settings.update(overrides or {})
  return base.override(config, settings)


def _read_jsonl(path: str) -> list:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_one(name: str, workroot: str, size: str, steps: int,
            overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """Trains and evaluates run ``name`` (or reads its ``result.json``)."""
  workdir = os.path.join(workroot, name)
  path = os.path.join(workdir, 'result.json')
  if os.path.exists(path):
    with open(path) as f:
      result = json.load(f)
    if result['steps'] == steps:
      logging.info('reproduce: %s already done (%s).', name, path)
      return result
  config = run_config(name, size, steps, overrides)
  logging.info('reproduce: running %s in %s.', name, workdir)
  start = time.perf_counter()
  final = loop.train_and_evaluate(config, workdir)
  result = {
      'name': name, 'steps': steps, 'size': size,
      'wall_seconds': time.perf_counter() - start,
      'tasks': sorted(t for t, w in config.data.mixture.items() if w > 0),
      'metrics': {k: float(v) for k, v in final.items()
                  if k.startswith('validation/')},
      'curves': _read_jsonl(os.path.join(workdir, reporting.METRICS_FILE)),
      'expert_load': _read_jsonl(os.path.join(workdir, reporting.LOAD_FILE)),
  }
  with open(path, 'w') as f:
    json.dump(result, f)
  return result


def _metric(result: Mapping[str, Any], task: str, metric: str
            ) -> Optional[float]:
  return result['metrics'].get(f'validation/{task}/{metric}')


def _fmt(value: Optional[float], metric: str) -> str:
  if value is None or not np.isfinite(value):
    return '—'
  if metric == 'bleu':
    return f'{value:.1f}'
  return f'{100 * value:.1f}%'


def _row(task, metric, results, runs, levels) -> str:
  cells = [_fmt(_metric(results[r], task, metric), metric) for r in runs]
  chance_value = levels.get(task, {}).get(metric)
  return (f'| {task} | {metric} | ' + ' | '.join(cells) +
          f' | {_fmt(chance_value, metric)} |')


def _table2(results, levels) -> list:
  lines = ['### Table 2: joint 8-task vs single-task', '',
           '| task | metric | joint (8 tasks) | single task | chance | paper |',
           '|---|---|---|---|---|---|']
  for task in SINGLE_TASKS:
    for metric in TASK_METRICS[task]:
      joint = _fmt(_metric(results['joint8'], task, metric), metric)
      single = _fmt(_metric(results[f'single_{task}'], task, metric), metric)
      lines.append(f'| {task} | {metric} | {joint} | {single} | '
                   f'{_fmt(levels.get(task, {}).get(metric), metric)} | '
                   f'{PAPER["table2"][task]} |')
  return lines + ['']


def _table3(results, levels) -> list:
  runs = TABLES['table3']
  lines = ['### Table 3: parsing alone, with ImageNet, with all 8', '',
           '| task | metric | parse alone | parse + ImageNet | all 8 | chance |',
           '|---|---|---|---|---|---|']
  for metric in TASK_METRICS['parse_en']:
    lines.append(_row('parse_en', metric, results, runs, levels))
  return lines + ['', f'Paper: {PAPER["table3"]}.', '']


def _table4(results, levels) -> list:
  runs = TABLES['table4']
  lines = ['### Table 4: all blocks / without MoE / without attention '
           '(joint 8-task)', '',
           '| task | metric | all blocks | without MoE | without attention | '
           'chance |', '|---|---|---|---|---|---|']
  for task in base.PAPER_TASKS:
    for metric in TASK_METRICS[task]:
      lines.append(_row(task, metric, results, runs, levels))
  return lines + ['', f'Paper: {PAPER["table4"]}.', '']


def format_tables(results: Mapping[str, Mapping[str, Any]],
                  levels: Mapping[str, Mapping[str, float]],
                  header: str) -> str:
  """The markdown of ``results.md``: the tables whose runs are all in
  ``results``, then the runs with their wall times."""
  lines = [header, '']
  for table, make in (('table2', _table2), ('table3', _table3),
                      ('table4', _table4)):
    if all(n in results for n in TABLES[table]):
      lines += make(results, levels)
  lines += ['### Runs', '', '| run | tasks | steps | wall time |',
            '|---|---|---|---|']
  for name, r in results.items():
    lines.append(f'| {name} | {len(r["tasks"])} | {r["steps"]} | '
                 f'{r["wall_seconds"] / 60:.1f} min |')
  return '\n'.join(lines) + '\n'


def plot_learning_curves(results, path: str) -> None:
  """Per-task training loss vs step: the joint run and the single runs."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks = base.PAPER_TASKS
  fig, axes = plt.subplots(2, 4, figsize=(16, 7), squeeze=False)
  for ax, task in zip(axes.ravel(), tasks):
    for name, r in results.items():
      points = [(c['step'], c[f'{task}/loss']) for c in r['curves']
                if f'{task}/loss' in c]
      if points and (name == 'joint8' or name == f'single_{task}'):
        steps, values = zip(*points)
        ax.plot(steps, values, label=name)
    ax.set_title(task)
    ax.set_xlabel('step')
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


def _batch_note(data_cfg) -> str:
  """E.g. ', imagenet 4x at 32 px': tasks whose batch or image size is not
  the config's common one."""
  notes = []
  for name in sorted(t for t, w in data_cfg.mixture.items() if w > 0):
    task = registry.get(name)
    mult = data_cfg.batch_size_multiplier.get(name, 1)
    size = preprocess.image_size_for(task, data_cfg)
    odd_size = task.input_modality == 'image' and size != data_cfg.image_size
    if mult != 1 or odd_size:
      notes.append(f', {name} {mult}x' + (f' at {size} px' if odd_size
                                          else ''))
  return ''.join(notes)


def hardware() -> str:
  devices = jax.devices()
  return (f'{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}'
          f'), {os.cpu_count()} CPU cores, {platform.machine()}')


def run_all(results_dir: str, *, workroot: str, size: str = 'tiny',
            steps: int = 150, tables: Sequence[str] = tuple(TABLES),
            overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """Runs what ``tables`` need and writes the results folder.

  Returns {'results': {run: result}, 'chance': levels, 'markdown': text}.
  """
  unknown = set(tables) - set(TABLES)
  if unknown:
    raise ValueError(f'Unknown tables {sorted(unknown)}; choose from '
                     f'{sorted(TABLES)}.')
  names = list(dict.fromkeys(n for t in TABLES for n in TABLES[t]
                             if t in tables))
  os.makedirs(results_dir, exist_ok=True)
  start = time.perf_counter()
  results = {n: run_one(n, workroot, size, steps, overrides) for n in names}
  joint = run_config('joint8', size, steps, overrides)
  vocab = prepare.ensure_prepared(joint.data)
  levels = chance.chance_levels(joint, vocab)
  total = sum(r['wall_seconds'] for r in results.values())
  header = (f'## Paper tables on the tiny suite ({steps} steps per run, '
            f'batch {joint.data.batch_size}{_batch_note(joint.data)})\n\n'
            f'Hardware: {hardware()}. Runs took {total / 60:.0f} min in all '
            f'(this call {(time.perf_counter() - start) / 60:.0f} min); '
            f'generated {datetime.date.today().isoformat()} by '
            f'`python launch/reproduce.py --suite={size} --steps={steps}`. '
            'Metrics are on the first '
            f'{joint.eval.max_batches * joint.eval.batch_size} validation '
            'examples per task; decodes are greedy for the tiny size.')
  markdown = format_tables(results, levels, header)
  with open(os.path.join(results_dir, 'results.md'), 'w') as f:
    f.write(markdown)
  with open(os.path.join(results_dir, 'results.json'), 'w') as f:
    json.dump({'chance': levels, 'hardware': hardware(), 'steps': steps,
               'runs': {n: {k: v for k, v in r.items()
                            if k not in ('curves', 'expert_load')}
                        for n, r in results.items()}}, f, indent=1)
  plot_learning_curves(results, os.path.join(results_dir,
                                             'learning_curves.png'))
  for name, result in results.items():
    plot_expert_load(result, os.path.join(results_dir,
                                          f'expert_load_{name}.png'))
  return {'results': results, 'chance': levels, 'markdown': markdown}
