r"""The last evaluation of a run, per task, next to chance.

  python -m mm_jax.eval.summary --workdir=/tmp/mm_jax_quickstart

Reads ``<workdir>/metrics.jsonl`` (the last line with ``validation/...``
metrics) and the run's config from its latest checkpoint, measures the chance
levels on the same evaluation examples (``mm_jax.eval.chance``) and prints a
table. The quickstart ends with it.
"""

import json
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

from absl import flags

from mm_jax import run_files
from mm_jax.data import prepare
from mm_jax.eval import chance

SKIPPED = ('examples', 'eval_seconds')


def last_evaluation(workdir: str, split: str = 'validation'
                    ) -> Tuple[int, Dict[str, float]]:
  """(step, {'<task>/<metric>': value}) of the last evaluation logged."""
  path = os.path.join(workdir, run_files.METRICS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'No {path}: is {workdir} a training work '
                            'directory (launch/train.py --workdir)?')
  last = None
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if any(k.startswith(split + '/') for k in row):
        last = row
  if last is None:
    raise ValueError(f'{path} holds no {split} evaluation yet: evaluation '
                     'runs every config.train.eval_every steps and at the '
                     'end of training.')
  prefix = split + '/'
  return last['step'], {k[len(prefix):]: v for k, v in last.items()
                        if k.startswith(prefix)}


def summarize(workdir: str, split: str = 'validation',
              config: Optional[object] = None) -> str:
  """The table: task, metric, value, chance (when it has one)."""
  step, values = last_evaluation(workdir, split)
  if config is None:
    meta = run_files.read_meta(workdir, run_files.resolve_step(workdir, None))
    config = run_files.config_from_meta(meta.get('config'))
  vocab = prepare.ensure_prepared(config.data)
  levels = chance.chance_levels(config, vocab, split)
  lines = [f'Per-task {split} metrics at step {step} '
           f'({config.eval.max_batches * config.eval.batch_size or "all"} '
           'examples per task):',
           f'  {"task":<18}{"metric":<22}{"value":>8}{"chance":>9}']
  for key in sorted(values):
    task, metric = key.split('/', 1)
    if task == 'mean' or metric in SKIPPED:
      continue
    floor = levels.get(task, {}).get(metric)
    lines.append(f'  {task:<18}{metric:<22}{values[key]:>8.3f}'
                 + ('' if floor is None else f'{floor:>9.3f}'))
  lines.append('  (token_accuracy, top1/top5, sequence_accuracy: fractions; '
               'bleu: 0-100; wer: errors per reference word; log_ppl: nats)')
  return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
  """``--workdir=DIR`` (``argv`` without the program name; default
  ``sys.argv[1:]``), parsed in a private ``FlagValues``."""
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, 'The training work directory.',
                      flag_values=fv)
  try:
    rest = fv(['summary'] + list(sys.argv[1:] if argv is None else argv))
  except flags.Error as e:
    raise SystemExit(f'python -m mm_jax.eval.summary: {e}') from None
  if len(rest) > 1 or not fv.workdir:
    raise SystemExit('usage: python -m mm_jax.eval.summary --workdir=DIR')
  print(summarize(fv.workdir))


if __name__ == '__main__':
  main()
