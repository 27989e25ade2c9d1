r"""The scale ladder: the pod configs' recipes trained on this machine
(``mm_jax.experiments.ladder``; the rungs are ``configs/ladder.py``).

  python launch/ladder.py --rungs=tiny_recipe,paper_recipe,base,paper_width \
    --workroot=/tmp/ladder --output=results/ladder

A finished rung (``<output>/<rung>.json``) is read back and an interrupted
one resumes from its checkpoints, so the ladder runs across sessions.
"""

import shlex
import sys

from absl import app
from absl import flags
from absl import logging

from mm_jax.experiments import ladder

_RUNGS = flags.DEFINE_list('rungs', ['tiny_recipe', 'paper_recipe', 'base',
                                     'paper_width'], 'Rungs to run, in order.')
_WORKROOT = flags.DEFINE_string('workroot', '/tmp/mm_jax_ladder',
                                'One work directory per rung under this.')
_OUTPUT = flags.DEFINE_string('output', 'results/ladder',
                              'The results folder.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  results = ladder.run(
      _RUNGS.value, workroot=_WORKROOT.value, output=_OUTPUT.value,
      command='python ' + ' '.join(shlex.quote(a) for a in sys.argv))
  logging.info('ladder: %d rungs written to %s', len(results), _OUTPUT.value)


if __name__ == '__main__':
  app.run(main)
