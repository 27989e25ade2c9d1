r"""Benchmark: step time, MFU, MoE efficiency, memory and input rate.

  python launch/benchmark.py --config=configs/joint8.py:tiny --output=bench.json
  python launch/benchmark.py --config=configs/joint8.py:base --noinput \
    --tasks=translate_en_de,imagenet --variant=default: \
    --variant='cudnn:model.attention_impl=cudnn,@tasks=translate_en_de' \
    --profile_steps=3

``--variant`` (repeatable) is ``name:key=value,...`` of dotted config
overrides; ``@config=configs/joint8.py:paper`` swaps the config file and
``@tasks=a+b`` the tasks of that variant. Every program is lowered, then
compiled concurrently, then timed. Prints a table and writes the JSON (see
mm_jax/perf/benchmark.py for the fields), updated after every measurement.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from mm_jax.perf import benchmark

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file[:arg], e.g. configs/joint8.py:tiny.',
    lock_config=True)
_OUTPUT = flags.DEFINE_string('output', 'bench.json', 'JSON result path.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per measurement.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps first.')
_TASKS = flags.DEFINE_list('tasks', None, 'Tasks (default: the mixture).')
_INPUT = flags.DEFINE_bool('input', True, 'Also time the input pipeline.')
_VARIANTS = flags.DEFINE_multi_string(
    'variant', [], 'name:key=value,... (default: one variant, the config).')
_WORKERS = flags.DEFINE_integer('compile_workers', 8,
                                'Programs compiled concurrently.')
_PROFILE = flags.DEFINE_integer(
    'profile_steps', 0, 'Profile the first variant\'s slowest task over '
    'this many steps (0: no profile).')
_ANCHOR = flags.DEFINE_bool(
    'anchor', False, 'Also time a dense Transformer anchor (FLOP/s ratio).')
_MOE_TOKENS = flags.DEFINE_integer('moe_tokens', 8192,
                                   'Tokens of the MoE micro-benchmark.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None:
    raise app.UsageError('Pass --config=configs/joint8.py:tiny (or another).')
  logging.info('devices: %s', jax.devices())
  variants = benchmark.parse_variants(_VARIANTS.value) or None
  result = benchmark.run(
      _CONFIG.value, steps=_STEPS.value, warmup=_WARMUP.value,
      tasks=_TASKS.value, with_input=_INPUT.value, variants=variants,
      compile_workers=_WORKERS.value, profile_steps=_PROFILE.value,
      anchor=_ANCHOR.value, moe_tokens=_MOE_TOKENS.value,
      on_update=lambda r: benchmark.write_json(r, _OUTPUT.value))
  print(benchmark.format_table(result))
  benchmark.write_json(result, _OUTPUT.value)
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
