r"""A/B runs: variants of one config (dotted overrides) x seeds, one table.

  python launch/ablate.py --config=configs/joint8.py:tiny \
    --tasks=parse_en,translate_en_de --steps=300 --seeds=0,1 \
    --variant='t2t:' --variant='zero_last:model.conv_block_zero_init=last' \
    --workroot=/tmp/ab --output=results/ab/body

Each (variant, seed) trains ``steps`` steps in ``<workroot>/<variant>_s<seed>``
with ``loop.train_and_evaluate`` and is evaluated once at the end; a finished
run (``result.json`` there) is read back, so an interrupted call continues.
Writes ``<output>.json`` (every run's validation metrics and wall time) and
``<output>.md`` (per variant and metric: mean over seeds, min-max, n).
"""

import json
import logging
import os
import time
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from mm_jax.config import defaults as config_defaults
from mm_jax.config.variants import parse_variant  # pylint: disable=unused-import
from mm_jax.train import loop

# The headline metrics of the table, when a task reports them.
METRICS = ('token_accuracy', 'bleu', 'sequence_accuracy', 'wer', 'top1',
           'top5')


def task_overrides(config, tasks: Sequence[str]) -> Dict[str, float]:
  """Mixture weight 1 for ``tasks``, 0 for every other task of the config."""
  unknown = set(tasks) - set(config.data.mixture)
  if unknown:
    raise ValueError(f'Unknown tasks {sorted(unknown)}; the config has '
                     f'{sorted(config.data.mixture)}.')
  return {f'data.mixture.{t}': float(t in tasks) for t in config.data.mixture}


def run_variant(config, name: str, seed: int, overrides: Mapping[str, Any],
                workroot: str, steps: int) -> Dict[str, Any]:
  """Trains one (variant, seed) or reads its ``result.json``."""
  workdir = os.path.join(workroot, f'{name}_s{seed}')
  path = os.path.join(workdir, 'result.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  settings = {'seed': seed, 'train.num_train_steps': steps,
              'train.eval_every': steps, 'train.checkpoint_every': steps,
              'train.log_every': max(1, steps // 10)}
  settings.update(overrides)
  run = config_defaults.override(config.copy_and_resolve_references(), settings)
  logging.info('ablate: %s seed %d in %s: %s', name, seed, workdir, overrides)
  start = time.perf_counter()
  final = loop.train_and_evaluate(run, workdir)
  result = {'variant': name, 'seed': seed, 'steps': steps,
            'overrides': {k: repr(v) for k, v in overrides.items()},
            'wall_seconds': time.perf_counter() - start,
            'metrics': {k: float(v) for k, v in final.items()
                        if k.startswith('validation/')}}
  with open(path, 'w') as f:
    json.dump(result, f, indent=1)
  return result


def summarize(results: Sequence[Mapping[str, Any]]) -> Dict[str, Dict]:
  """{variant: {metric key: (mean, min, max, n)}} over seeds."""
  table: Dict[str, Dict[str, list]] = {}
  for r in results:
    for key, value in r['metrics'].items():
      table.setdefault(r['variant'], {}).setdefault(key, []).append(value)
  return {v: {k: (float(np.mean(x)), float(np.min(x)), float(np.max(x)),
                  len(x)) for k, x in sorted(m.items())}
          for v, m in table.items()}


def format_table(summary: Mapping[str, Mapping[str, tuple]],
                 header: str) -> str:
  keys = sorted({k for m in summary.values() for k in m
                 if k.split('/')[-1] in METRICS and '/mean/' not in k})
  lines = [header, '', '| variant | ' + ' | '.join(
      k.replace('validation/', '') for k in keys) + ' |',
           '|---' * (len(keys) + 1) + '|']
  for variant, metrics in summary.items():
    cells = []
    for k in keys:
      if k not in metrics:
        cells.append('—')
        continue
      mean, lo, hi, n = metrics[k]
      scale = 1 if k.endswith('/bleu') else 100
      cells.append(f'{scale * mean:.1f} ({scale * lo:.1f}–{scale * hi:.1f}'
                   f', n={n})')
    lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def run_all(config, variants: Sequence[Tuple[str, Mapping[str, Any]]],
            seeds: Sequence[int], *, workroot: str, steps: int,
            output: str, command: str) -> str:
  """Every variant x seed (variant-major), then the table; returns it."""
  results = [run_variant(config, name, seed, overrides, workroot, steps)
             for name, overrides in variants for seed in seeds]
  summary = summarize(results)
  header = (f'A/B: {steps} steps, seeds {list(seeds)}; cells are mean '
            '(min–max, n) over seeds, accuracies in %, BLEU as is. '
            f'Command: `{command}`.')
  markdown = format_table(summary, header)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output + '.json', 'w') as f:
    json.dump({'command': command, 'runs': results}, f, indent=1)
  with open(output + '.md', 'w') as f:
    f.write(markdown)
  return markdown
