r"""Per-task gradients, Adam steps, expert load and activation scales of a
run's checkpoint: why a joint model trails its single-task runs.

  python launch/diagnose.py --workdir=/tmp/mm_jax_reproduce/joint8_s0 \
    --output=results/tiny/diagnosis_joint8

Writes ``<output>.json`` and ``<output>.md`` (see ``mm_jax/experiments/diagnose.py``)
and prints the markdown.
"""

import json
import os
import sys

from absl import app
from absl import flags

from mm_jax.experiments import diagnose

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run\'s work directory.',
                               required=True)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the '
                             'latest).')
_BATCHES = flags.DEFINE_integer('batches', 2, 'Training batches per task.')
_TASKS = flags.DEFINE_list('tasks', None, 'Tasks (default: every task the '
                           'run trains).')
_OUTPUT = flags.DEFINE_string('output', None, 'Write <output>.json and '
                              '<output>.md.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}.')
  result = diagnose.diagnose(_WORKDIR.value, _STEP.value,
                             batches=_BATCHES.value, tasks=_TASKS.value)
  text = (f'Command: `python launch/diagnose.py {" ".join(sys.argv[1:])}`.'
          '\n\n' + diagnose.markdown(result))
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)),
                exist_ok=True)
    with open(_OUTPUT.value + '.json', 'w') as f:
      json.dump(result, f, indent=1)
    with open(_OUTPUT.value + '.md', 'w') as f:
      f.write(text)
  print(text)


if __name__ == '__main__':
  app.run(main)
