"""``check_config(config)``: config values that would crash late, caught early.

``train_and_evaluate`` calls it once, before any data is read or anything is
compiled, so ``--config.train.eval_every=-5`` fails in a second with the key
and its allowed range instead of a ZeroDivisionError at step 1 or a shape
error after minutes of compilation. Every problem is reported in one
ValueError, one line per key:

  config.train.eval_every=-5: must be an integer >= 0 (0: only at the end).

Checked: the loop cadences, batch sizes, sequence lengths and their
buckets, the task mixture and loss weights, the model's view of the batch
contract (padding id, log-mel bins, audio channels against
``data.audio_deltas``), and the mesh shape against ``jax.device_count()``.
"""

import math
from typing import Any

import jax


# Loop cadences (key, what 0 means).
CADENCES = (
    ('train.log_every', 'one log line at the end'),
    ('train.eval_every', 'only at the end'),
    ('train.checkpoint_every', 'only the final (and SIGTERM) checkpoint'),
)
# Integers that must be >= 1.
POSITIVE = ('data.batch_size', 'data.max_input_length',
            'data.max_target_length', 'data.audio_max_frames',
            'data.image_size', 'eval.batch_size', 'eval.beam_size',
            'eval.max_decode_length', 'train.keep_checkpoints',
            'train.t2t_worker_replicas')
# Integers that must be >= 0 (key, what 0 means).
NON_NEGATIVE = (('train.num_train_steps', 'no training steps'),
                ('data.class_image_size', 'data.image_size'),
                ('eval.max_batches', 'the whole split'),
                ('eval.num_samples', 'no sample decodes'))


def _get(config, key: str) -> Any:
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integers(config) -> list[str]:
  """Cadences, positive and non-negative integers."""
  out = []
  for key, zero in CADENCES + NON_NEGATIVE:
    value = _get(config, key)
    if not _is_int(value) or value < 0:
      out.append(f'config.{key}={value!r}: must be an integer >= 0 '
                 f'(0: {zero}).')
  for key in POSITIVE:
    value = _get(config, key)
    if not _is_int(value) or value < 1:
      out.append(f'config.{key}={value!r}: must be an integer >= 1.')
  for task, value in config.data.batch_size_multiplier.items():
    if not _is_int(value) or value < 1:
      out.append(f'config.data.batch_size_multiplier.{task}={value!r}: must '
                 'be an integer >= 1 (examples per step = data.batch_size x '
                 'it).')
  return out


def _buckets(config) -> list[str]:
  """Bucket lists: positive, strictly ascending, within the maximum."""
  data = config.data
  out = []
  for key, limit_keys in (
      ('length_buckets', ('max_input_length', 'max_target_length')),
      ('audio_frame_buckets', ('audio_max_frames',))):
    buckets = tuple(data[key])
    limits = [data[k] for k in limit_keys if _is_int(data[k])]
    if not limits:
      continue              # the maximum itself is reported by _integers
    limit = max(limits)
    where = ' or '.join(f'data.{k}' for k in limit_keys)
    if (not all(_is_int(b) and b > 0 for b in buckets)
        or list(buckets) != sorted(set(buckets))):
      out.append(f'config.data.{key}={buckets!r}: must be positive integers '
                 'in strictly ascending order (or () for one bucket at the '
                 'maximum length).')
    elif buckets and buckets[-1] > limit:
      out.append(f'config.data.{key}={buckets!r}: buckets must be <= '
                 f'config.{where} ({limit}); longer examples are skipped, so '
                 f'bucket {buckets[-1]} would never be used.')
  return out


def _weights(config) -> list[str]:
  """Mixture weights (>= 0, one > 0) and task loss weights (>= 0)."""
  out = []
  mixture = dict(config.data.mixture.items())
  bad = {t: w for t, w in mixture.items() if not _is_number(w) or w < 0}
  for task, weight in sorted(bad.items()):
    out.append(f'config.data.mixture.{task}={weight!r}: must be a number '
               '>= 0 (0 turns the task off).')
  if not bad and not any(w > 0 for w in mixture.values()):
    out.append(f'config.data.mixture: every weight is 0 ({mixture}); give at '
               'least one task a weight > 0, e.g. '
               '--config.data.mixture.translate_en_de=1.')
  for task, weight in sorted(config.task_loss_weights.items()):
    if not _is_number(weight) or weight < 0:
      out.append(f'config.task_loss_weights.{task}={weight!r}: must be a '
                 'number >= 0.')
  return out


def _mesh(config, num_devices: int) -> list[str]:
  """``mesh.shape``: positive sizes or one -1, fitting ``num_devices``."""
  shape = dict(config.mesh.shape.items())
  sizes = list(shape.values())
  where = f'config.mesh.shape={shape}'
  if not all(_is_int(s) and (s >= 1 or s == -1) for s in sizes):
    return [f'{where}: every size must be an integer >= 1, or -1 (once) for '
            'the remaining devices.']
  if sizes.count(-1) > 1:
    return [f'{where}: -1 may appear once (that axis takes the remaining '
            'devices).']
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes and num_devices % fixed:
    return [f'{where}: the fixed axes need a multiple of {fixed} devices, '
            f'but jax.device_count() is {num_devices}; make their product '
            f'divide {num_devices}.']
  if -1 not in sizes and fixed != num_devices:
    return [f'{where}: needs {fixed} devices, but jax.device_count() is '
            f'{num_devices}; set one axis to -1 or make the product '
            f'{num_devices}.']
  return []


def check_config(config) -> None:
  """Raises ValueError listing every bad value of ``config`` (a config from
  ``configs/``), each naming its key and the allowed range."""
  problems = (_integers(config) + _buckets(config) + _weights(config) +
              _mesh(config, jax.device_count()))
  if problems:
    raise ValueError(f'{len(problems)} bad config value'
                     f'{"s" if len(problems) > 1 else ""}:\n  ' +
                     '\n  '.join(problems))
