r"""Benchmark: step time, MFU, MoE efficiency, memory and input rate.

  python launch/benchmark.py --config=configs/joint8.py:tiny --output=bench.json
  python launch/benchmark.py --config=configs/joint8.py:base --steps=20

Prints a table and writes the JSON (see mm_jax/benchmark.py for the fields).
"""

import json
import logging

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from mm_jax import benchmark

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file[:arg], e.g. configs/joint8.py:tiny.',
    lock_config=True)
_OUTPUT = flags.DEFINE_string('output', 'bench.json', 'JSON result path.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per measurement.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps first.')
_TASKS = flags.DEFINE_list('tasks', None, 'Tasks (default: the mixture).')
_INPUT = flags.DEFINE_bool('input', True, 'Also time the input pipeline.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None:
    raise app.UsageError('Pass --config=configs/joint8.py:tiny (or another).')
  logging.info('devices: %s', jax.devices())
  result = benchmark.run(_CONFIG.value, steps=_STEPS.value,
                         warmup=_WARMUP.value, tasks=_TASKS.value,
                         with_input=_INPUT.value)
  print(benchmark.format_table(result))
  with open(_OUTPUT.value, 'w') as f:
    json.dump(result, f, indent=1)
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
