"""Raw user inputs -> processed examples -> padded, bucketed batches.

The same preprocessing as evaluation (``mm_jax.data.preprocess``): images
are centre-cropped and resized to the task's size
(``plan.image_size``: ``config.data.class_image_size`` for
classification when set, else ``config.data.image_size``); waveforms go
through ``audio.log_mel`` (resampled to 16 kHz, deltas as in training);
text is tokenised with the run's vocabulary and ends with EOS. Image arrays
hold pixel values in [0, 255] and are never rescaled: a float image whose
maximum is <= 1.0 raises ValueError (multiply by 255, or pass uint8), as do
NaN/inf pixels and values outside [0, 255] (``check_pixel_range``).

Every batch is padded to a *shape bucket* so that repeated calls reuse one
compiled executable: the batch size to the next power of two (a multiple of
the device count), text lengths and audio frames to the config's buckets
(``length_buckets`` / ``audio_frame_buckets``), extended by doubling past
the training maximum so that longer inputs still have a bucket. Padding rows
are all pad (text), all-masked (audio) or black (images); pad tokens and
masked frames never take MoE capacity, and the rows are dropped afterwards.
"""

import os
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from mm_jax import contract
from mm_jax.data import batching
from mm_jax.data import preprocess


# ----------------------------------------------------------------- buckets --

def extended_buckets(buckets: Sequence[int], max_length: int,
                     limit: int = 1 << 16) -> tuple[int, ...]:
  """The training buckets (capped at ``max_length``), then doubling.

  E.g. (16, 32, 64), max 64 -> (16, 32, 64, 128, 256, ...) up to ``limit``.
  """
  out = list(batching.effective_buckets(buckets, max_length))
  while out[-1] < limit:
    out.append(out[-1] * 2)
  return tuple(out)


def batch_bucket(n: int, multiple: int = 1) -> int:
  """Smallest power of two >= ``n``, rounded up to a multiple of
  ``multiple`` (the number of devices the batch is split over)."""
  b = 1 << max(0, int(n) - 1).bit_length()
  return -(-b // multiple) * multiple


def chunks(order: Sequence[int], size: int) -> list[list[int]]:
  """``order`` cut into consecutive pieces of at most ``size``."""
  return [list(order[i:i + size]) for i in range(0, len(order), size)]


# ------------------------------------------------------------------ inputs --

def as_list(inputs, single) -> list:
  """A single input (``single(inputs)`` is True) -> [inputs]; a sequence ->
  a list. Raises ValueError on an empty sequence."""
  items = [inputs] if single(inputs) else list(inputs)
  if not items:
    raise ValueError('No inputs given: pass at least one.')
  return items


def text_ids(text: Any, vocab, index: int) -> np.ndarray:
  """A sentence -> int32 [L] ids with EOS last; ValueError if empty."""
  if isinstance(text, bytes):
    text = text.decode('utf-8')
  if not isinstance(text, str):
    raise ValueError(f'Input {index} is a {type(text).__name__}, not a str; '
                     'pass a list of sentences.')
  if not text.strip():
    raise ValueError(f'Input {index} is an empty string; every input needs '
                     'at least one word.')
  return np.asarray(vocab.encode(text) + [contract.EOS_ID], np.int32)


def _is_image_path(x) -> bool:
  return isinstance(x, (str, os.PathLike, bytes, bytearray))


def image_list(images) -> list:
  """images: one [H, W, 3] array, a batch [B, H, W, 3], or a list of
  arrays / file paths / encoded bytes -> a list of single images."""
  if _is_image_path(images):
    return [images]
  if isinstance(images, np.ndarray) or hasattr(images, '__array__'):
    a = np.asarray(images)
    if a.ndim == 4:
      if a.shape[-1] != 3:
        raise ValueError(
            f'Got a batch of shape {a.shape}; images must be RGB [B, H, W, 3]'
            f' (or one [H, W, 3]). RGBA: drop alpha with x[..., :3].')
      return as_list(list(a), lambda _: False)
    return [a]
  return as_list(images, lambda _: False)


def image_array(image, index: int, size: int, augment: str = 'inception'
                ) -> np.ndarray:
  """One image -> uint8 [size, size, 3], as evaluation prepares it
  (``preprocess.image_eval`` with ``augment``, ``data.image_augment``).

  Arrays must be [H, W, 3] with pixel values in [0, 255]: uint8, or any
  integer or float dtype holding such values. Nothing is rescaled: a float
  image whose maximum is <= 1.0 (a [0, 1] or [-1, 1] image) is refused
  rather than read as a near-black [0, 255] one, as are non-finite values
  and values outside [0, 255]. Paths and encoded bytes are decoded with PIL
  and converted to RGB.
  """
  if isinstance(image, (str, os.PathLike)):
    path = os.fspath(image)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'Input {index}: no image file at {path!r}.')
    with Image.open(path) as im:
      image = np.asarray(im.convert('RGB'))
  elif isinstance(image, (bytes, bytearray)):
    image = preprocess.to_rgb(bytes(image))
  a = np.asarray(image)
  if a.ndim != 3 or a.shape[-1] != 3:
    hint = ''
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 1):
      hint = ' Grayscale? Repeat it: np.repeat(x.reshape(h, w, 1), 3, -1).'
    elif a.ndim == 3 and a.shape[-1] == 4:
      hint = ' RGBA? Drop alpha: x[..., :3].'
    raise ValueError(f'Input {index} has shape {a.shape}; an image must be '
                     f'RGB [H, W, 3] (a batch: [B, H, W, 3]).{hint}')
  if min(a.shape[:2]) < 1:
    raise ValueError(f'Input {index} is an empty image of shape {a.shape}.')
  if not (np.issubdtype(a.dtype, np.integer) or
          np.issubdtype(a.dtype, np.floating)):
    raise ValueError(f'Input {index} has dtype {a.dtype}; use uint8 or float '
                     'pixel values in [0, 255].')
  check_pixel_range(a, index)
  return preprocess.image_eval(a, size, augment)


def check_pixel_range(a: np.ndarray, index: int) -> None:
  """Raises ValueError unless image ``a`` [H, W, 3] holds finite pixel
  values in [0, 255], and, if float, not all <= 1.0 (a [0, 1] image)."""
  if a.dtype == np.uint8:
    return
  if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
    bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
    raise ValueError(f'Input {index} has {bad} non-finite pixel values (NaN '
                     'or inf); pixels must be finite values in [0, 255].')
  low, high = a.min().item(), a.max().item()
  if np.issubdtype(a.dtype, np.floating) and high <= 1.0:
    raise ValueError(
        f'Input {index} is a float image with values in [{low:g}, {high:g}]; '
        'pixel values are read as [0, 255], so it would be a near-black '
        'image. Multiply a [0, 1] image by 255 (x * 255), or pass uint8.')
  if low < 0 or high > 255:
    raise ValueError(
        f'Input {index} has pixel values in [{low:g}, {high:g}]; they must be '
        'in [0, 255] (uint8 range). Rescale first (16-bit: x / 257).')


def waveform_list(audio) -> list:
  """One waveform [n] or a list of waveforms -> a list of 1-D arrays."""
  if isinstance(audio, np.ndarray) or hasattr(audio, '__array__'):
    a = np.asarray(audio)
    if a.ndim != 1:
      raise ValueError(
          f'Got a waveform of shape {a.shape}; pass one mono waveform '
          '[samples] or a list of them (average stereo channels first: '
          'x.mean(axis=-1)).')
    return [a]
  return as_list(audio, lambda _: False)


def log_mel(waveform, sample_rate: int, index: int, *, deltas: bool
            ) -> np.ndarray:
  """A mono waveform -> float32 [A, 80, I] log-mel (as in training).

  Float samples are in [-1, 1]; integer samples are int16-scaled (/ 32768).
  """
  wav = np.asarray(waveform)
  if wav.ndim != 1:
    raise ValueError(f'Input {index} has shape {wav.shape}; a waveform must '
                     'be mono [samples] (average channels: x.mean(axis=-1)).')
  if wav.size == 0:
    raise ValueError(f'Input {index} is an empty waveform.')
  if not (np.issubdtype(wav.dtype, np.integer) or
          np.issubdtype(wav.dtype, np.floating)):
    raise ValueError(f'Input {index} has dtype {wav.dtype}; use float '
                     'samples in [-1, 1] or int16.')
  if int(sample_rate) <= 0:
    raise ValueError(f'sample_rate must be positive, got {sample_rate}.')
  feats = preprocess.audio_features(wav, int(sample_rate), deltas=deltas,
                                    max_frames=np.iinfo(np.int32).max)
  if isinstance(feats, preprocess.Skip):
    raise ValueError(f'Input {index}: {feats.detail}.')
  return feats


# ----------------------------------------------------------------- batches --

def pad_batch(examples: Sequence[np.ndarray], batch: int, modality: str,
              buckets: Optional[Sequence[int]] = None) -> dict:
  """Processed inputs -> {'inputs', ['inputs_mask']} of batch size ``batch``.

  Args:
    examples: int32 [L_i] ids | uint8 [Y, X, 3] images | float32
      [A_i, M, I] log-mel, at most ``batch`` of them.
    batch: B, padded batch size (rows past ``len(examples)`` are padding).
    modality: 'text' | 'image' | 'audio'.
    buckets: lengths (text) or frame counts (audio) to pad to.

  Returns:
    inputs int32 [B, L] | float32 [B, Y, X, 3] | float32 [B, A, M, I];
    inputs_mask bool [B, A] for audio.
  """
  if modality == 'image':
    y, *tail = examples[0].shape                              # [B, Y, X, 3]
    return {'inputs': batching.stack_padded(examples, y, batch, tail,
                                            np.float32)}
  length = batching.bucket_length(max(len(x) for x in examples), buckets)
  dtype = np.int32 if modality == 'text' else np.float32
  out = batching.stack_padded(examples, length, batch,        # [B, L, ...]
                              examples[0].shape[1:], dtype)
  if modality == 'text':
    return {'inputs': out}
  frames = np.asarray([len(x) for x in examples] +
                      [0] * (batch - len(examples)))
  return {'inputs': out,
          'inputs_mask': np.arange(length)[None, :] < frames[:, None]}
