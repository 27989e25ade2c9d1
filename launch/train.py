r"""Trains and evaluates the MultiModel: the thin entry point.

  python launch/train.py --config=configs/joint8.py:tiny --workdir=/tmp/joint8
  python launch/train.py --config=configs/single.py:parse_en,tiny \
      --config.train.num_train_steps=200 --workdir=/tmp/parse

``--config`` is a config file with an optional ``:arg`` (see each file's
docstring); ``--config.<key>=<value>`` overrides any key of the locked
config (a misspelt key is an error naming it). Re-running with the same
``--workdir`` resumes from its latest checkpoint. Everything else happens in
``mm_jax.train.loop.train_and_evaluate``, which notebooks and tests call too.

SIGTERM or Ctrl-C stops the run within seconds at any point (saving only
steps done since the last checkpoint) and exits 0; a compilation or an
evaluation it left may still be running in a thread, so the process then
ends with ``os._exit``.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mm_jax.train import loop
from mm_jax.train import preemption

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file[:arg], e.g. configs/joint8.py:tiny.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics and decodes.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  config = _CONFIG.value
  loop.setup_distributed(config.distributed)
  loop.log_topology()
  logging.info('Config:\n%s', config)
  result = loop.train_and_evaluate(config, _WORKDIR.value)
  if result['preempted'] and preemption.left_running():
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)     # a left compilation or evaluation thread: do not wait


if __name__ == '__main__':
  app.run(main)
