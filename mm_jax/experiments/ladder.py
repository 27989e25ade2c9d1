"""The scale ladder: the pod configs' recipes trained on this machine.

  from mm_jax.experiments import ladder
  ladder.run(['tiny_recipe', 'paper_recipe'], workroot='/tmp/ladder',
             output='results/ladder', command='python launch/ladder.py ...')

Each rung is a config of ``configs/ladder.py`` (its docstring says what each
one trains), run by ``loop.train_and_evaluate`` in ``<workroot>/<rung>``; an
interrupted rung resumes from its checkpoints, a finished one (its
``<output>/<rung>.json``) is read back, so the ladder runs across sessions,
rung by rung. Written to ``output``: ``<rung>.json`` per rung (command, wall
time, machine, the recipe, the logged training curve, every evaluation),
``results.json`` and ``results.md`` (all rungs: the loss at the start and
the end, non-finite values, the last evaluation of every task against
chance) and ``loss.png`` (training loss against step).
"""

import datetime
import json
import logging
import math
import os
import platform
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax
import numpy as np

import mm_jax
from mm_jax import config as base
from mm_jax import run_files
from mm_jax.data import prepare
from mm_jax.eval import chance
from mm_jax.experiments import report
from mm_jax.train import loop
from mm_jax.train import optim

# How many logged points average into the "first" and "last" loss.
EDGE = 3


def rung_config(rung: str):
  return base.load_module('ladder').get_config(rung)


def machine() -> str:
  devices = jax.devices()
  return (f'{len(devices)} x {devices[0].device_kind} '
          f'({jax.default_backend()}), {os.cpu_count()} CPU cores, '
          f'{platform.machine()}, jax {jax.__version__}')


def recipe(config) -> Dict[str, Any]:
  """What a rung trains with: widths, parameters, the recipe and its peak."""
  t, m = config.train, config.model
  count, peak = optim.schedule_peak(t, m.d_model)
  model = mm_jax.create_model(config)
  return {
      'd_model': m.d_model, 'num_heads': m.num_heads,
      'experts': m.moe.num_experts, 'k': m.moe.k, 'expert_hidden': m.moe.hidden,
      'params': mm_jax.param_count(mm_jax.abstract_variables(model)),
      'dtype': m.dtype, 'init': m.init, 'task_token_init': m.task_token_init,
      'dropout': m.dropout, 'schedule': t.schedule,
      'learning_rate': t.learning_rate, 'warmup_steps': t.warmup_steps,
      't2t_worker_replicas': t.t2t_worker_replicas,
      'peak_step': count + 1, 'peak_learning_rate': peak,
      'weight_decay': t.weight_decay,
      'weight_decay_type': t.weight_decay_type,
      'label_smoothing': t.label_smoothing,
      'batch_size': config.data.batch_size, 'steps': t.num_train_steps}


def run_rung(rung: str, workroot: str, output: str, command: str
             ) -> Dict[str, Any]:
  """Trains ``rung`` (or reads ``<output>/<rung>.json``) -> its record."""
  path = os.path.join(output, f'{rung}.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  config = rung_config(rung)
  workdir = os.path.join(workroot, rung)
  logging.info('ladder: %s in %s', rung, workdir)
  start = time.perf_counter()
  loop.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - start
  records = run_files.read_metrics(workdir)
  curve = [{k: v for k, v in r.items()
            if k == 'step' or k == 'loss' or k.endswith('/loss')
            or k in ('grad_norm', 'update_norm', 'param_norm',
                     'learning_rate')}
           for r in records if 'loss' in r]
  result = {
      'rung': rung, 'command': command, 'date': datetime.date.today()
      .isoformat(), 'machine': machine(), 'wall_seconds': wall,
      'recipe': recipe(config),
      'curve': curve,
      'evaluations': {str(k): v for k, v in
                      report_evaluations(records).items()},
  }
  os.makedirs(output, exist_ok=True)
  with open(path, 'w') as f:
    json.dump(result, f, indent=1)
  return result


def report_evaluations(records: Sequence[Mapping[str, Any]]
                       ) -> Dict[int, Dict[str, float]]:
  """{step: {'<task>/<metric>': value}} of the validation passes."""
  out: Dict[int, Dict[str, float]] = {}
  for r in records:
    for key, value in r.items():
      if key.startswith('validation/') and '/mean/' not in key:
        out.setdefault(int(r['step']), {})[key[len('validation/'):]] = (
            float(value))
  return dict(sorted(out.items()))


def summary(result: Mapping[str, Any]) -> Dict[str, Any]:
  """First and last logged loss (means of ``EDGE`` points) and whether every
  logged value is finite."""
  losses = [c['loss'] for c in result['curve']]
  finite = all(math.isfinite(v) for c in result['curve'] for k, v in c.items()
               if isinstance(v, float))
  return {'first_loss': float(np.mean(losses[:EDGE])) if losses else None,
          'last_loss': float(np.mean(losses[-EDGE:])) if losses else None,
          'finite': finite}


def _fmt(value: Optional[float], metric: str) -> str:
  if value is None:
    return '—'
  return f'{value:.1f}' if metric in ('bleu',) else f'{100 * value:.1f}%'


def format_markdown(results: Sequence[Mapping[str, Any]],
                    levels: Mapping[str, Mapping[str, float]]) -> str:
  lines = ['# The scale ladder: the pod recipes trained on one CPU', '',
           'Generated by `mm_jax.experiments.ladder` from the rungs of '
           '`configs/ladder.py` (its docstring says what each trains). Loss '
           f'is the training loss logged by the loop (mean of the first and '
           f'last {EDGE} logged points, each a mean over the steps since the '
           'previous log; one task per step).', '',
           '| rung | model | params | recipe (peak Adam step at step) | '
           'steps | loss first → last | finite | wall | command |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in results:
    c, s = r['recipe'], summary(r)
    model = (f"d {c['d_model']}, {c['num_heads']} heads, {c['experts']} x "
             f"{c['expert_hidden']} experts k {c['k']}, {c['dtype']}, "
             f"init {c['init']}")
    rec = (f"{c['schedule']} {c['learning_rate']:g}, warm-up "
           f"{c['warmup_steps']} x {c['t2t_worker_replicas']} worker(s), "
           f"peak {c['peak_learning_rate']:.2e} at {c['peak_step']}; "
           f"{c['weight_decay_type']} {c['weight_decay']:g}, dropout "
           f"{c['dropout']:g}, batch {c['batch_size']}")
    lines.append(
        f"| {r['rung']} | {model} | {c['params'] / 1e6:.1f} M | {rec} | "
        f"{c['steps']} | {s['first_loss']:.3f} → {s['last_loss']:.3f} | "
        f"{'yes' if s['finite'] else '**no**'} | "
        f"{r['wall_seconds'] / 60:.0f} min | `{r['command']}` |")
  lines += ['', f"Machine: {results[0]['machine'] if results else '—'}.", '',
            '## The last evaluation of every task, against chance', '',
            'Metrics on the first validation examples of each task '
            '(`eval.max_batches`), greedy decodes; chance = always the most '
            'frequent target token or class.', '']
  tasks = sorted({k.split('/')[0] for r in results
                  for e in r['evaluations'].values() for k in e})
  lines += ['| task | metric | ' + ' | '.join(
      f"{r['rung']} (step {max(map(int, r['evaluations']), default=0)})"
      for r in results) + ' | chance |',
            '|---|---|' + '---|' * (len(results) + 1)]
  for task in tasks:
    for metric in report.TASK_METRICS.get(task, ('token_accuracy',)):
      cells = []
      for r in results:
        last = r['evaluations'][max(r['evaluations'], key=int)] \
            if r['evaluations'] else {}
        cells.append(_fmt(last.get(f'{task}/{metric}'), metric))
      level = levels.get(task, {}).get(metric)
      lines.append(f'| {task} | {metric} | ' + ' | '.join(cells) +
                   f" | {_fmt(level, metric) if level is not None else '—'} |")
  return '\n'.join(lines) + '\n'


def plot(results: Sequence[Mapping[str, Any]], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for r in results:
    steps = [c['step'] for c in r['curve']]
    ax.plot(steps, [c['loss'] for c in r['curve']], label=r['rung'])
  ax.set_xscale('log')
  ax.set_xlabel('step')
  ax.set_ylabel('training loss (smoothed CE, all tasks)')
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def run(rungs: Sequence[str], *, workroot: str, output: str, command: str
        ) -> List[Dict[str, Any]]:
  """Runs (or reads) ``rungs`` in order, then writes every finished rung's
  results (``output``: see the module docstring)."""
  known = base.load_module('ladder').RUNGS
  bad = set(rungs) - set(known)
  if bad:
    raise ValueError(f'Unknown rungs {sorted(bad)}; choose from {known}.')
  for rung in rungs:
    run_rung(rung, workroot, output, command)
  results = []
  for rung in known:
    path = os.path.join(output, f'{rung}.json')
    if os.path.exists(path):
      with open(path) as f:
        results.append(json.load(f))
  config = rung_config('tiny_recipe')
  levels = chance.chance_levels(config, prepare.ensure_prepared(config.data))
  with open(os.path.join(output, 'results.md'), 'w') as f:
    f.write(format_markdown(results, levels))
  with open(os.path.join(output, 'results.json'), 'w') as f:
    json.dump({'chance': levels,
               'rungs': {r['rung']: {**summary(r), 'recipe': r['recipe'],
                                     'wall_seconds': r['wall_seconds'],
                                     'command': r['command']}
                         for r in results}}, f, indent=1)
  plot(results, os.path.join(output, 'loss.png'))
  return results
