"""Static length buckets and padding: processed examples -> one batch.

Each batch is padded to the smallest bucket that fits its longest example, so
the train step compiles once per (task modalities, bucket) and never more.
Text uses ``length_buckets`` (capped at, and always including, the maximum
length); audio uses ``audio_frame_buckets`` with ``audio_max_frames``.

Batch keys (the contract: docs/design.md, "The batch contract"; letters as in
mm_jax/axes.py: A audio frames, I audio channels):

  inputs        int32 [B, L] | float32 [B, Y, X, 3] | float32 [B, A, 80, I]
  inputs_mask   bool [B, A]                        (audio inputs)
  targets       int32 [B, T] | int32 [B]
  target_space  int32 [B]                          (text outputs)
  example_mask  bool [B]                           (evaluation batches)
  references    list[list[str]], host-side only    (evaluation, text outputs)
"""

import dataclasses
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from mm_jax import contract

HOST_KEYS = ('references',)   # never sent to the device


def effective_buckets(buckets: Sequence[int], max_length: int) -> Tuple[int]:
  """Buckets not above ``max_length``, plus ``max_length`` itself, sorted."""
  if max_length < 1:
    raise ValueError(f'max length must be positive, got {max_length}.')
  return tuple(sorted({int(b) for b in buckets if 0 < b <= max_length}
                      | {int(max_length)}))


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """Smallest bucket >= ``length`` (``buckets`` sorted ascending)."""
  for b in buckets:
    if length <= b:
      return b
  raise ValueError(f'length {length} exceeds the largest bucket {buckets[-1]}'
                   '; over-long examples must be skipped before batching.')


@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """What one task's batches look like.

  Attributes:
    input_modality: 'text' | 'image' | 'audio'.
    output_modality: 'text' | 'class'.
    target_space: task-token row for text outputs (None for class outputs).
    input_buckets: padded lengths of text inputs.
    target_buckets: padded lengths of text targets.
    frame_buckets: padded frame counts for audio inputs.
    image_size: Y = X of image inputs (``plan.image_size``).
    audio_channels: I of audio inputs (1, or 3 with deltas).
  """
  input_modality: str
  output_modality: str
  target_space: Optional[int]
  input_buckets: Tuple[int, ...]
  target_buckets: Tuple[int, ...]
  frame_buckets: Tuple[int, ...]
  image_size: int
  audio_channels: int


def example_batch(spec: BatchSpec, batch_size: int, **content
                  ) -> dict:
  """A batch of ``spec``'s largest shapes (the largest bucket is always the
  maximum length); ``content``: ``contract.example_batch``'s ``seed``,
  ``vocab_size``, ``num_classes`` (default: constant content)."""
  return contract.example_batch(
      spec.input_modality, spec.output_modality, batch_size,
      length=spec.input_buckets[-1], target_length=spec.target_buckets[-1],
      image_size=spec.image_size, frames=spec.frame_buckets[-1],
      channels=spec.audio_channels,
      target_space=spec.target_space or 0, **content)


def stack_padded(arrays, length: int, batch: int, tail_shape=(),
                 dtype=np.int32) -> np.ndarray:
  """Pads arrays [l_i, *tail] along axis 0 to ``length``; None -> zeros."""
  out = np.zeros((batch, length) + tuple(tail_shape), dtype)
  for i, a in enumerate(arrays):
    if a is not None:
      out[i, :a.shape[0]] = a
  return out


def collate(examples: Sequence[Optional[dict]], spec: BatchSpec,
            *, eval_batch: bool = False) -> dict:
  """Processed examples -> one padded batch of B = len(examples).

  Training batches hold only real examples. Evaluation batches
  (``eval_batch``) may hold ``None`` slots, which become all-zero rows, and
  add ``example_mask`` [B] (False on those rows) and, for text outputs,
  ``references`` (``[]`` on those rows).
  """
  b = len(examples)
  if not eval_batch and any(e is None for e in examples):
    raise ValueError('Training batches cannot have empty slots.')
  inputs = [None if e is None else e['inputs'] for e in examples]
  targets = [None if e is None else e['targets'] for e in examples]
  batch = {}
  if spec.input_modality == 'text':
    length = bucket_length(_longest(inputs), spec.input_buckets)
    batch['inputs'] = stack_padded(inputs, length, b)
  elif spec.input_modality == 'image':
    s = spec.image_size
    batch['inputs'] = stack_padded(inputs, s, b, (s, 3), np.float32)
  else:
    frames = np.asarray([0 if x is None else len(x) for x in inputs])
    length = bucket_length(_longest(inputs), spec.frame_buckets)
    tail = (contract.MEL_BINS, spec.audio_channels)
    batch['inputs'] = stack_padded(inputs, length, b, tail, np.float32)
    batch['inputs_mask'] = np.arange(length)[None, :] < frames[:, None]
  if spec.output_modality == 'text':
    length = bucket_length(_longest(targets), spec.target_buckets)
    batch['targets'] = stack_padded(targets, length, b)
    batch['target_space'] = np.full((b,), spec.target_space, np.int32)
  else:
    batch['targets'] = np.asarray(
        [0 if t is None else int(t) for t in targets], np.int32)
  if eval_batch:
    batch['example_mask'] = np.asarray([e is not None for e in examples])
    if spec.output_modality == 'text':
      batch['references'] = [[] if e is None else list(e['references'])
                             for e in examples]
  return batch


def _longest(arrays) -> int:
  """Largest leading dimension among the non-None arrays (0 if none)."""
  return max((len(a) for a in arrays if a is not None), default=0)


def variable_lengths(batch: Mapping[str, np.ndarray],
                     spec: BatchSpec) -> np.ndarray:
  """The bucketed lengths of a batch: int64 [2] (inputs, targets); 0 for an
  axis that is not variable (images, class targets)."""
  lin = batch['inputs'].shape[1] if spec.input_modality != 'image' else 0
  lout = batch['targets'].shape[1] if spec.output_modality == 'text' else 0
  return np.asarray([lin, lout], np.int64)


def pad_to(batch: dict, spec: BatchSpec, lengths: Sequence[int]) -> dict:
  """Zero-pads the variable axes of ``batch`` to ``lengths`` (inputs,
  targets), e.g. the maximum over processes; never shortens."""
  lin, lout = (int(x) for x in lengths)
  out = dict(batch)
  if spec.input_modality != 'image':
    out['inputs'] = _grow(batch['inputs'], lin)
    if 'inputs_mask' in batch:
      out['inputs_mask'] = _grow(batch['inputs_mask'], lin)
  if spec.output_modality == 'text':
    out['targets'] = _grow(batch['targets'], lout)
  return out


def _grow(x: np.ndarray, length: int) -> np.ndarray:
  """x: [B, l, ...] -> [B, length, ...] zero-padded (length >= l)."""
  if length < x.shape[1]:
    raise ValueError(f'cannot pad length {x.shape[1]} down to {length}.')
  if length == x.shape[1]:
    return x
  pad = [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
  return np.pad(x, pad)
