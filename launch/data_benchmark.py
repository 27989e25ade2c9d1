r"""Input-pipeline throughput: examples/s per task and for the mixture.

  python launch/data_benchmark.py --config=configs/base.py:tiny
  python launch/data_benchmark.py --config=configs/base.py:tiny \
      --config.data.worker_count=2 --steps=100

Prepares the data on first use (``mm_jax.data.prepare``), then times each
enabled task alone and then the whole mixture, after ``--warmup`` batches, on
this host's CPUs (process 0 of 1). Also prints the padding fill (real tokens
or frames / padded slots) and the skip counters of each task.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from mm_jax.data import pipeline
from mm_jax.data import plan
from mm_jax.data import prepare
from mm_jax.perf import input_bench

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file[:arg], e.g. configs/base.py:tiny.')
_STEPS = flags.DEFINE_integer('steps', 40, 'Timed batches per measurement.')
_WARMUP = flags.DEFINE_integer('warmup', 5, 'Untimed batches first.')


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('Pass --config=configs/base.py:tiny (or another).')
  data = config.data
  vocab = prepare.ensure_prepared(data, report=print)
  plans = plan.resolve(config)
  print(f'batch {data.batch_size}, prefetch {data.prefetch}, workers '
        f'{data.worker_count}, {_STEPS.value} timed batches each')
  print(f'{"task":<18}{"examples/s":>12}{"batches/s":>11}{"fill":>7}  skips')
  for task in plans:
    with pipeline.make_train_iterator(data, vocab, [task]) as it:
      ex_s, b_s, fl = input_bench.measure_iterator(it, _STEPS.value, _WARMUP.value)
      skips = {k[8:]: v for k, v in it.counters()[task.name].items()
               if k.startswith('skipped_') and v}
    print(f'{task.name:<18}{ex_s:>12.1f}{b_s:>11.2f}{fl:>7.2f}  {skips or ""}')
  with pipeline.make_train_iterator(data, vocab, plans) as it:
    ex_s, b_s, fl = input_bench.measure_iterator(it, _STEPS.value, _WARMUP.value)
    drawn = {t: c['examples'] for t, c in it.counters().items()}
  print(f'{"mixture (" + data.mixing + ")":<18}{ex_s:>12.1f}{b_s:>11.2f}'
        f'{fl:>7.2f}  examples per task: {drawn}')


if __name__ == '__main__':
  app.run(main)
