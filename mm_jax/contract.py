"""The batch contract: what one batch of one task holds, declared once.

The data pipeline writes it, the model and the steps read it; the special
token ids, the modality names and the audio features are defined here and
nowhere else (the vocabulary, preprocessing, decoding, inference, the model
and the config defaults import them).

  batch = contract.example_batch('audio', 'text', 2, frames=16)

Keys (letters as in mm_jax/axes.py; docs/design.md, "The batch contract"):

  inputs        int32 [B, L]           token ids, PAD_ID padding, EOS_ID last
                float32 [B, Y, X, 3]   pixel values in [0, 255]
                float32 [B, A, M, I]   log-mel: M = MEL_BINS, I channels
  inputs_mask   bool [B, A]            audio inputs: False on padded frames
  targets       int32 [B, T] | [B]     text token ids | class ids
  target_space  int32 [B]              text outputs: the task-token row
"""

from typing import Dict, Optional

import numpy as np

# Special token ids of every vocabulary (SentencePiece is trained with them).
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
# Log-mel bins of the audio front end (M).
MEL_BINS = 80
INPUT_MODALITIES = ('text', 'image', 'audio')
OUTPUT_MODALITIES = ('text', 'class')


def audio_channels(deltas: bool) -> int:
  """I of audio inputs: the log-mel alone, or with delta and delta-delta."""
  return 3 if deltas else 1


def check_modalities(input_modality: str, output_modality: str) -> None:
  """Raises ValueError naming a modality outside the contract."""
  if input_modality not in INPUT_MODALITIES:
    raise ValueError(f'Unknown input modality {input_modality!r}; the model '
                     f'reads {INPUT_MODALITIES}.')
  if output_modality not in OUTPUT_MODALITIES:
    raise ValueError(f'Unknown output modality {output_modality!r}; the '
                     f'model writes {OUTPUT_MODALITIES}.')


def example_batch(input_modality: str, output_modality: str,
                  batch_size: int, *, length: int = 4,
                  target_length: int = 4, image_size: int = 32,
                  frames: int = 16, mel_bins: int = MEL_BINS,
                  channels: int = 1, target_space: int = 1,
                  vocab_size: Optional[int] = None,
                  num_classes: Optional[int] = None,
                  seed: Optional[int] = None) -> Dict[str, np.ndarray]:
  """A batch of the contract's keys, dtypes and shapes, unpadded.

  ``seed`` None: constant content (ones; class targets 0), enough for shape
  inference (``init_variables``, ``jax.eval_shape``). A seed: random
  content, tokens in [3, vocab_size), classes in [0, num_classes), pixels in
  [0, 255), normal log-mels (the benchmark's synthetic batches).
  """
  check_modalities(input_modality, output_modality)
  b = int(batch_size)
  rng = None if seed is None else np.random.RandomState(seed)
  if rng is not None and (vocab_size is None or num_classes is None):
    raise ValueError('Random example batches need vocab_size and '
                     'num_classes.')

  def tokens(n):
    if rng is None:
      return np.ones((b, n), np.int32)
    return rng.randint(3, vocab_size, (b, n)).astype(np.int32)

  if input_modality == 'text':
    batch = {'inputs': tokens(length)}
  elif input_modality == 'image':
    shape = (b, image_size, image_size, 3)
    batch = {'inputs': np.ones(shape, np.float32) if rng is None
             else rng.uniform(0, 255, shape).astype(np.float32)}
  else:
    shape = (b, frames, mel_bins, channels)
    batch = {'inputs': np.ones(shape, np.float32) if rng is None
             else rng.randn(*shape).astype(np.float32),
             'inputs_mask': np.ones((b, frames), bool)}
  if output_modality == 'class':
    batch['targets'] = (np.zeros((b,), np.int32) if rng is None else
                        rng.randint(0, num_classes, (b,)).astype(np.int32))
  else:
    batch['targets'] = tokens(target_length)
    batch['target_space'] = np.full((b,), target_space, np.int32)
  return batch
