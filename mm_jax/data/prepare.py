r"""Prepares the data of a run: the tiny suite's datasets and the vocabulary.

  python -m mm_jax.data.prepare --suite=tiny [--data_dir=DIR]
  python -m mm_jax.data.prepare --config=configs/base.py:base  # real suite

The tiny suite is generated into ``DIR`` (default: config.data.data_dir,
$MM_JAX_DATA_DIR or ~/mm_jax_data); the real suite is only checked (every
enabled task's TFDS data must be prepared, see ``sources.missing_message``).
Then the shared SentencePiece vocabulary of the enabled tasks is trained.
Idempotent: complete datasets and an existing vocabulary are kept; a partial
dataset is rebuilt. Prints the time of each step.

``ensure_prepared(config.data)`` does the same from Python; the training
code calls it on first use and gets the ``Vocabulary``.
"""

import logging
import os
import sys
import time
from typing import Callable, Optional, Sequence

from absl import flags

from mm_jax import config as config_lib
from mm_jax.data import plan
from mm_jax.data import registry
from mm_jax.data.tiny import builders
from mm_jax.data import vocab as vocab_lib

# Tiny dataset behind each built-in task.
TINY_DATASETS = {'speech_en': 'tiny_speech', 'imagenet': 'tiny_images',
                 'caption_en': 'tiny_captions', 'parse_en': 'tiny_translation'}


def enabled_tasks(data_cfg) -> list[registry.Task]:
  """The enabled tasks (``plan.enabled_names``) in the mixture table's
  order, which the vocabulary's corpus follows."""
  enabled = set(plan.enabled_names(data_cfg))
  return [registry.get(name) for name in data_cfg.mixture if name in enabled]


def tiny_datasets(tasks) -> list[str]:
  """The tiny datasets ``tasks`` read, in ``builders.DATASETS`` order."""
  needed = {TINY_DATASETS.get(t.name, 'tiny_translation' if t.name.startswith(
      'translate_') else None) for t in tasks}
  return [d for d in builders.DATASETS if d in needed]


def check_real(data_cfg, tasks) -> None:
  """Raises one MissingDatasetError listing every unprepared dataset."""
  from mm_jax.data import sources  # pylint: disable=g-import-not-at-top
  problems = []
  for task in tasks:
    for split in sources.SPLITS:
      try:
        task.source('real', split, data_cfg)
      except sources.MissingDatasetError as e:
        problems.append(f'[{task.name}] {e}')
        break
  if problems:
    raise sources.MissingDatasetError('\n\n'.join(problems))


def ensure_prepared(data_cfg, report: Optional[Callable[[str], None]] = None
                    ) -> vocab_lib.Vocabulary:
  """Prepares the enabled tasks' data and returns the vocabulary.

  ``report`` receives one line per step with its time (default: logging).
  """
  report = report or logging.info
  tasks = enabled_tasks(data_cfg)
  if not tasks:
    raise ValueError('config.data.mixture gives no task a positive weight.')
  text_tasks = [t for t in tasks if t.text_fields]
  if not text_tasks and not data_cfg.vocab_path:
    # No text to learn pieces from (e.g. ImageNet alone): the tiny suite
    # builds the vocabulary of every text task in the mixture's table, so
    # the checkpoint loads like any other; real data needs a given one.
    if data_cfg.suite != 'tiny':
      raise ValueError(
          'None of the enabled tasks has text to build a vocabulary from ('
          f'{[t.name for t in tasks]}); set config.data.vocab_path to an '
          'existing SentencePiece model (e.g. the one of a joint run).')
    text_tasks = [t for t in map(registry.get, data_cfg.mixture)
                  if t.text_fields]
    tasks = tasks + text_tasks
  total = time.perf_counter()
  if data_cfg.suite == 'tiny':
    where = builders.tiny_data_dir(data_cfg)
    for dataset in tiny_datasets(tasks):
      spent = builders.prepare(dataset, data_cfg)
      config = builders.tiny_config(dataset, data_cfg)
      state = f'built in {spent:.1f} s' if spent else 'complete, kept'
      report(f'{dataset}/{config.name}: {state} ({where})')
  elif data_cfg.suite == 'real':
    start = time.perf_counter()
    check_real(data_cfg, tasks)
    report(f'real datasets present ({time.perf_counter() - start:.1f} s)')
  else:
    raise ValueError(f"config.data.suite must be 'tiny' or 'real', got "
                     f'{data_cfg.suite!r}.')
  start = time.perf_counter()
  rec = vocab_lib.recipe(data_cfg, [t.name for t in text_tasks],
                         vocab_lib.MAX_EXAMPLES_PER_TASK)
  existed = os.path.exists(vocab_lib.vocab_path(data_cfg, rec))
  vocab = vocab_lib.build_or_load(data_cfg, text_tasks)
  spent = time.perf_counter() - start
  state = 'kept' if existed else f'trained in {spent:.1f} s'
  report(f'vocabulary {vocab.path}: {vocab.size} pieces, {state}')
  report(f'total {time.perf_counter() - total:.1f} s')
  return vocab


def parse_flags(argv: Sequence[str]) -> flags.FlagValues:
  """``--suite``, ``--config``, ``--data_dir`` of ``argv`` (no program name),
  in a private ``FlagValues`` so that importing this module registers no
  global flags; an unknown or bad flag is a SystemExit naming it."""
  fv = flags.FlagValues()
  flags.DEFINE_enum('suite', None, ['tiny', 'real'], 'tiny (default) or '
                    'real; picks configs/base.py size tiny or base when '
                    '--config is not given.', flag_values=fv)
  flags.DEFINE_string('config', None, 'Config file[:arg], e.g. '
                      'configs/joint8.py:tiny.', flag_values=fv)
  flags.DEFINE_string('data_dir', None, 'Overrides config.data.data_dir.',
                      flag_values=fv)
  try:
    rest = fv(['prepare'] + list(argv))
  except flags.Error as e:
    raise SystemExit(f'python -m mm_jax.data.prepare: {e}') from None
  if len(rest) > 1:
    raise SystemExit(f'python -m mm_jax.data.prepare: unexpected arguments '
                     f'{rest[1:]}.')
  return fv


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_flags(sys.argv[1:] if argv is None else argv)
  path = args.config
  if path is None:
    path = 'base' if args.suite == 'real' else 'tiny'
    config = config_lib.get_config(path)
  else:
    config = config_lib.from_file(path)
  if args.suite and config.data.suite != args.suite:
    raise SystemExit(f'--suite={args.suite} but {path} uses suite '
                     f'{config.data.suite!r}.')
  if args.data_dir is not None:
    config.data.data_dir = args.data_dir
  ensure_prepared(config.data, report=print)


if __name__ == '__main__':
  main()
