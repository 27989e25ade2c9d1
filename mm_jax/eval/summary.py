r"""The last evaluation of a run, per task, next to chance.

  python -m mm_jax.eval.summary --workdir=/tmp/mm_jax_quickstart \
    [--markdown=results/quickstart.md --command='bash launch/quickstart.sh']

Reads ``<workdir>/metrics.jsonl`` (the last line with ``validation/...``
metrics) and the run's config from its latest checkpoint, measures the chance
levels on the same evaluation examples (``mm_jax.eval.chance``) and prints a
table. The quickstart ends with it, and writes the same numbers as markdown
(one row per task, with the command, config and commit) to
``results/quickstart.md``, whose table the README shows.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
from typing import Dict, Optional, Sequence, Tuple

from absl import flags

from mm_jax import run_files
from mm_jax.data import prepare
from mm_jax.eval import chance

SKIPPED = ('examples', 'eval_seconds')
# The markdown table's metrics per task, in this order (log_ppl and the
# teacher-forced sequence accuracy stay in the printed table).
MARKDOWN_METRICS = ('token_accuracy', 'sequence_accuracy', 'bleu', 'wer',
                    'top1', 'top5')
METRIC_NAMES = {'token_accuracy': 'token accuracy',
                'sequence_accuracy': 'full-sequence accuracy',
                'bleu': 'BLEU', 'wer': 'WER', 'top1': 'top-1',
                'top5': 'top-5'}


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


def _config(workdir: str):
  meta = run_files.read_meta(workdir, run_files.resolve_step(workdir, None))
  return run_files.config_from_meta(meta.get('config'))


def _levels(config, split: str):
  return chance.chance_levels(config, prepare.ensure_prepared(config.data),
                              split)


def summarize(workdir: str, split: str = 'validation',
              config: Optional[object] = None,
              levels: Optional[Dict[str, Dict[str, float]]] = None) -> str:
  """The table: task, metric, value, chance (when it has one)."""
  step, values = last_evaluation(workdir, split)
  config = _config(workdir) if config is None else config
  levels = _levels(config, split) if levels is None else levels
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


def _format(metric: str, value: float) -> str:
  return f'{value:.1f}' if metric == 'bleu' else f'{value:.3f}'


def markdown_table(step: int, values: Dict[str, float],
                   levels: Dict[str, Dict[str, float]]) -> str:
  """One row per task: its ``MARKDOWN_METRICS``, values and chance levels
  joined by " / " ("-" where a metric has no chance level)."""
  tasks = sorted({k.split('/', 1)[0] for k in values} - {'mean'})
  rows = ['| task | metric | value at step %d | chance |' % step,
          '|---|---|---|---|']
  for task in tasks:
    metrics = [m for m in MARKDOWN_METRICS if f'{task}/{m}' in values]
    floors = levels.get(task, {})
    rows.append('| {} | {} | {} | {} |'.format(
        task, ' / '.join(METRIC_NAMES[m] for m in metrics),
        ' / '.join(_format(m, values[f'{task}/{m}']) for m in metrics),
        ' / '.join(_format(m, floors[m]) if m in floors else '-'
                   for m in metrics)))
  return '\n'.join(rows)


def _commit() -> str:
  """HEAD's short hash, '+ uncommitted changes' when the tree is dirty."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  try:
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=repo,
                          capture_output=True, text=True, check=True)
    dirty = subprocess.run(['git', 'status', '--porcelain', '--', '.',
                            ':!results'], cwd=repo, capture_output=True,
                           text=True, check=True)
  except (OSError, subprocess.CalledProcessError):
    return 'unknown (not a git checkout)'
  return head.stdout.strip() + (' + uncommitted changes'
                                if dirty.stdout.strip() else '')


def write_markdown(workdir: str, path: str, command: str,
                   split: str = 'validation',
                   config: Optional[object] = None,
                   levels: Optional[Dict[str, Dict[str, float]]] = None
                   ) -> str:
  """Writes the run's markdown table to ``path``; returns the text."""
  step, values = last_evaluation(workdir, split)
  config = _config(workdir) if config is None else config
  levels = _levels(config, split) if levels is None else levels
  examples = config.eval.max_batches * config.eval.batch_size or 'all'
  text = '\n'.join([
      '# Quickstart: per-task metrics',
      '',
      f'`{command}`: {step} steps; {split} split, {examples} examples per '
      'task. Chance is always answering the most frequent target token, '
      'class or sequence of the same examples. Token accuracies are '
      'teacher-forced; BLEU, WER and full-sequence accuracy come from greedy '
      'decodes.',
      '',
      f'Commit {_commit()}, {datetime.date.today().isoformat()}, '
      f'{platform.machine()} CPU x {os.cpu_count()}.',
      '',
      markdown_table(step, values, levels),
      ''])
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)
  return text


def main(argv: Optional[Sequence[str]] = None) -> None:
  """``--workdir=DIR`` (``argv`` without the program name; default
  ``sys.argv[1:]``), parsed in a private ``FlagValues``."""
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, 'The training work directory.',
                      flag_values=fv)
  flags.DEFINE_string('markdown', None, 'Also write the table as markdown '
                      'to this file (e.g. results/quickstart.md).',
                      flag_values=fv)
  flags.DEFINE_string('command', 'python launch/train.py', 'The command '
                      'that ran, for the markdown file.', flag_values=fv)
  try:
    rest = fv(['summary'] + list(sys.argv[1:] if argv is None else argv))
  except flags.Error as e:
    raise SystemExit(f'python -m mm_jax.eval.summary: {e}') from None
  if len(rest) > 1 or not fv.workdir:
    raise SystemExit('usage: python -m mm_jax.eval.summary --workdir=DIR')
  last_evaluation(fv.workdir)        # names a missing or empty metrics file
  config = _config(fv.workdir)
  levels = _levels(config, 'validation')
  print(summarize(fv.workdir, config=config, levels=levels))
  if fv.markdown:
    write_markdown(fv.workdir, fv.markdown, fv.command, config=config,
                   levels=levels)
    print(f'Wrote {fv.markdown}')


if __name__ == '__main__':
  main()
