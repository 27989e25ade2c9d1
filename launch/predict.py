r"""Runs a trained MultiModel on inputs from the command line.

  python launch/predict.py --workdir=/tmp/joint8 --task=translate_en_de \
      "the red cat sees a dog" "a small bird sings"
  python launch/predict.py --workdir=/tmp/joint8 --task=imagenet cat.png
  python launch/predict.py --workdir=/tmp/joint8 --task=caption_en a.jpg b.png
  python launch/predict.py --workdir=/tmp/joint8 --task=speech_en clip.wav
  python launch/predict.py --workdir=/tmp/joint8 --task=parse_en \
      --bracketed "the cat sleeps ."
  echo "the red cat sees a dog" | python launch/predict.py \
      --workdir=/tmp/joint8 --task=translate_en_fr

Text tasks take sentences, image tasks file paths (PNG/JPEG, read with
PIL), ``speech_en`` audio file paths (.wav; see ``mm_jax.data.audio``).
Without positional inputs, one input per non-empty line of stdin. Prints one
result per input, in order: the decoded text, or ``label (probability)``
pairs separated by `` | `` for classification. The same as
``mm_jax.load(workdir).predict(task, inputs)``.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from mm_jax import compile_cache
from mm_jax.data import audio
from mm_jax.data import registry
from mm_jax.inference import loading

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'The training work directory (holds checkpoints/).')
_TASK = flags.DEFINE_string(
    'task', None, f'Registered task name, one of {registry.names()}.')
_STEP = flags.DEFINE_integer(
    'step', None, 'Checkpoint step (default: the latest).')
_BEAM_SIZE = flags.DEFINE_integer('beam_size', 4, 'Beam size (text outputs).')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Labels per image (class outputs).')
_MAX_LENGTH = flags.DEFINE_integer(
    'max_length', None, 'Decoded tokens (default: config.eval.'
    'max_decode_length).')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', None, 'Inputs per device call (default: config.eval.'
    'batch_size).')
_VOCAB_PATH = flags.DEFINE_string(
    'vocab_path', None, 'The vocabulary file, if it moved since training.')
_BRACKETED = flags.DEFINE_bool(
    'bracketed', False, 'parse_en: also print the PTB bracketing (or - when '
    'the output is not a well-formed tree).')
flags.mark_flags_as_required(['workdir', 'task'])


def format_result(result) -> str:
  """One line: text, or 'label (p) | label (p) | ...'."""
  if isinstance(result, str):
    return result
  return ' | '.join(f'{label} ({prob:.3f})' for label, prob in result)


def read_inputs(task: registry.Task, args: list[str]):
  """Positional arguments (or stdin lines) -> (inputs, sample rates)."""
  items = args or [line.strip() for line in sys.stdin if line.strip()]
  if not items:
    raise app.UsageError('No inputs: give them as arguments or on stdin.')
  if task.input_modality != 'audio':
    return items, None
  waves = [audio.read_audio(path) for path in items]
  return [w for w, _ in waves], [r for _, r in waves]


def run(argv) -> None:
  """Loads the checkpoint, runs the task on the inputs, prints results."""
  if _TASK.value not in registry.names():
    raise app.UsageError(f'Unknown --task={_TASK.value!r}; choose one of '
                         f'{registry.names()}.')
  task = registry.get(_TASK.value)
  inputs, rates = read_inputs(task, argv[1:])
  predictor = loading.load(_WORKDIR.value, _STEP.value,
                           vocab_path=_VOCAB_PATH.value,
                           max_batch_size=_BATCH_SIZE.value)
  # Programs compile on the first call: the run's cache serves them.
  compile_cache.enable(predictor.config.compilation_cache_dir)
  logging.info('%r; task %s, %d inputs.', predictor, task.name, len(inputs))
  kwargs = dict(beam_size=_BEAM_SIZE.value, max_length=_MAX_LENGTH.value)
  if task.name == 'parse_en' and _BRACKETED.value:
    for linear, tree in predictor.parse(inputs, bracketed=True, **kwargs):
      print(f'{linear}\t{tree or "-"}')
    return
  if task.output_modality == 'class':
    kwargs = dict(top_k=_TOP_K.value)
  elif rates is not None:
    kwargs['sample_rate'] = rates
  for result in predictor.predict(task.name, inputs, **kwargs):
    print(format_result(result))


def main(argv):
  try:
    run(argv)
  except (FileNotFoundError, ValueError) as e:   # bad workdir, input, flag
    sys.exit(f'predict.py: {type(e).__name__}: {e}')


if __name__ == '__main__':
  app.run(main)
