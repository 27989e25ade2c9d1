"""Per-example preprocessing: a raw source record -> model-ready numpy arrays.

Raw records (what a task's random-access source returns):

  text input    'inputs': str
  image input   'inputs': uint8 [Y, X, 3] (grey [Y, X] / [Y, X, 1] and RGBA
                [Y, X, 4] are converted; encoded JPEG/PNG bytes are decoded)
  audio input   'inputs': float32 in [-1, 1] or int16 [samples] (stereo
                [samples, 2] is averaged), 'sample_rate': int
  text output   'targets': str, optional 'references': list[str]
  class output  'targets': int

Processed examples (one task, before batching):

  'inputs'   int32 [L] (EOS last) | uint8 [Y, X, 3] (batches hold float32;
             uint8 keeps grain's read-ahead buffers small) |
             float32 [A, 80, I] log-mel (A frames; I = 3 with deltas, else 1)
  'targets'  int32 [T] (EOS last) | int32 [] class id
  'references' list[str] (evaluation only, text outputs)

A record that cannot be used becomes a ``Skip`` marker with a reason
(``'corrupt'``, ``'empty'`` or ``'too_long'``); the pipeline counts and drops
it. Nothing is truncated.

Images, by ``data.image_augment`` (``IMAGE_AUGMENTS``):

- ``'inception'``: training takes an Inception-style random crop (area and
  aspect ratio sampled) resized to ``image_size`` and a horizontal flip;
  evaluation resizes the central ``EVAL_CROP_FRACTION`` square. Caption
  tasks are not flipped and are cropped only mildly: their captions name
  left/right relations and objects that a tight crop would remove.
- ``'t2t'``: T2T's, for ImageNet and COCO alike (utils/data_reader.py at
  3d9c62f2, ``common_layers.image_augmentation``): in training, with
  probability 0.8 the whole image is resized to ``360/299 * image_size``
  square, a random ``image_size`` square cropped and flipped at random;
  otherwise, and in evaluation, the whole image is resized to
  ``image_size`` square. Aspect ratios are not kept.
"""

import dataclasses
import io
import math
from typing import Any, Mapping, Optional, Union

import numpy as np
from PIL import Image

from mm_jax import contract
from mm_jax.data import audio

SAMPLE_RATE = audio.SAMPLE_RATE

# Train-time random crop: kept fraction of the image area, and aspect range.
# Inception used area (0.08, 1.0); the tiny suite's small objects need more
# context, so classification keeps at least 35%.
CLASS_CROP_AREA = (0.35, 1.0)
CAPTION_CROP_AREA = (0.8, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
EVAL_CROP_FRACTION = 0.875   # central square side / shorter image side
IMAGE_AUGMENTS = ('inception', 't2t')
# T2T (utils/data_reader.py@3d9c62f2): 80% of training images are resized to
# 360 x 360 and cropped to 299 x 299 at random; scaled here to any size.
T2T_AUGMENT_PROBABILITY = 0.8
T2T_RESIZE = 360 / 299


@dataclasses.dataclass(frozen=True)
class Skip:
  """Marks a record the pipeline must drop; ``reason`` names the counter."""
  reason: str            # 'corrupt' | 'empty' | 'too_long'
  detail: str = ''


def encode_text(text: Union[str, bytes], vocab, max_length: int):
  """Tokenises ``text`` and appends EOS.

  Returns int32 [L] with L <= ``max_length``, or a ``Skip`` for an empty text
  or one longer than ``max_length`` tokens (EOS included).
  """
  if isinstance(text, bytes):
    text = text.decode('utf-8')
  if not isinstance(text, str):
    return Skip('corrupt', f'text field is {type(text).__name__}, not str')
  if not text.strip():
    return Skip('empty', 'empty text')
  ids = list(vocab.encode(text)) + [contract.EOS_ID]
  if len(ids) > max_length:
    return Skip('too_long', f'{len(ids)} tokens > {max_length}')
  return np.asarray(ids, np.int32)


def to_rgb(image) -> np.ndarray:
  """Raw image (array or encoded bytes) -> uint8 [Y, X, 3]."""
  if isinstance(image, (bytes, bytearray)):
    with Image.open(io.BytesIO(image)) as im:
      return np.asarray(im.convert('RGB'))
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or min(
      image.shape[:2]) < 1:
    raise ValueError(f'image of shape {image.shape} is not [Y, X, 1|3|4]')
  if image.dtype != np.uint8:
    image = np.clip(image, 0, 255).astype(np.uint8)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image[..., :3]


def _resize_box(image: np.ndarray, box, size: int) -> np.ndarray:
  """Bilinear resize of ``box`` (x0, y0, x1, y1) of uint8 [Y, X, 3] to
  uint8 [size, size, 3] (antialiased when shrinking)."""
  im = Image.fromarray(image)
  out = im.resize((size, size), Image.BILINEAR, box=tuple(map(float, box)))
  return np.asarray(out, np.uint8)


def random_crop_box(height: int, width: int, rng: np.random.Generator, *,
                    area=CLASS_CROP_AREA, aspect=CROP_ASPECT):
  """Samples an Inception-style crop box (x0, y0, x1, y1) inside the image.

  Ten tries at a box with area fraction in ``area`` and width/height ratio in
  ``aspect``; falls back to the largest central square.
  """
  log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
  for _ in range(10):
    target = rng.uniform(*area) * height * width
    ratio = math.exp(rng.uniform(log_lo, log_hi))
    w = math.sqrt(target * ratio)
    h = math.sqrt(target / ratio)
    if w <= width and h <= height:
      x0 = rng.uniform(0, width - w)
      y0 = rng.uniform(0, height - h)
      return (x0, y0, x0 + w, y0 + h)
  return central_box(height, width, 1.0)


def central_box(height: int, width: int, fraction: float):
  """The central square (x0, y0, x1, y1), side = fraction * shorter side."""
  side = fraction * min(height, width)
  x0, y0 = (width - side) / 2, (height - side) / 2
  return (x0, y0, x0 + side, y0 + side)


def image_train(image, size: int, rng: np.random.Generator, *,
                area=CLASS_CROP_AREA, flip: bool = True) -> np.ndarray:
  """Random crop (+ random horizontal flip) -> uint8 [size, size, 3]."""
  image = to_rgb(image)
  box = random_crop_box(image.shape[0], image.shape[1], rng, area=area)
  out = _resize_box(image, box, size)
  if flip and rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def image_eval(image, size: int, augment: str = 'inception') -> np.ndarray:
  """-> uint8 [size, size, 3]; deterministic: the central crop resized
  (``'inception'``), or the whole image resized (``'t2t'``)."""
  image = to_rgb(image)
  height, width = image.shape[:2]
  if _check_augment(augment) == 't2t':
    return _resize_box(image, (0, 0, width, height), size)
  box = central_box(height, width, EVAL_CROP_FRACTION)
  return _resize_box(image, box, size)


def image_train_t2t(image, size: int, rng: np.random.Generator
                    ) -> np.ndarray:
  """T2T's training image (module docstring) -> uint8 [size, size, 3]."""
  image = to_rgb(image)
  whole = (0, 0, image.shape[1], image.shape[0])
  if rng.random() >= T2T_AUGMENT_PROBABILITY:
    return _resize_box(image, whole, size)
  big = max(size, round(size * T2T_RESIZE))
  out = _resize_box(image, whole, big)
  y0, x0 = rng.integers(0, big - size + 1, size=2)
  out = out[y0:y0 + size, x0:x0 + size]
  if rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def _check_augment(augment: str) -> str:
  if augment not in IMAGE_AUGMENTS:
    raise ValueError(f'Unknown data.image_augment {augment!r}; choose one of '
                     f'{IMAGE_AUGMENTS}.')
  return augment


def audio_features(waveform, sample_rate: int, *, deltas: bool,
                   max_frames: int):
  """Waveform -> log-mel float32 [A, 80, I] (I = 3 with deltas, else 1).

  Returns a ``Skip`` for an empty clip or one longer than ``max_frames``.
  """
  wav = np.asarray(waveform)
  if wav.ndim == 2:                     # [samples, channels] -> mono
    wav = wav.mean(axis=-1)
  if wav.ndim != 1:
    return Skip('corrupt', f'waveform of shape {wav.shape} is not [samples]')
  if np.issubdtype(wav.dtype, np.integer):
    wav = wav.astype(np.float32) / 32768.0
  wav = wav.astype(np.float32)
  if wav.size == 0:
    return Skip('empty', 'empty waveform')
  if not np.all(np.isfinite(wav)):
    return Skip('corrupt', 'non-finite waveform samples')
  feats = audio.log_mel(wav, sample_rate=int(sample_rate),
                        num_mel_bins=contract.MEL_BINS, deltas=deltas)
  frames = feats.shape[0]
  if frames == 0:
    return Skip('empty', 'waveform shorter than one frame')
  if frames > max_frames:
    return Skip('too_long', f'{frames} frames > {max_frames}')
  return np.asarray(feats, np.float32)


class Preprocessor:
  """Turns one task's raw records into processed examples.

  Call as ``preprocessor(raw, rng)``; ``rng`` (a ``np.random.Generator``)
  drives the training image augmentation and is ignored otherwise. Returns a
  dict of arrays (see the module docstring) or a ``Skip``.
  """

  def __init__(self, task, data_cfg, vocab, *, train: bool,
               image_size: int):
    self.task = task
    self.vocab = vocab
    self.train = train
    self.image_size = int(image_size)     # ``plan.image_size``
    self.max_input_length = int(data_cfg.max_input_length)
    self.max_target_length = int(data_cfg.max_target_length)
    self.audio_max_frames = int(data_cfg.audio_max_frames)
    self.audio_deltas = bool(data_cfg.audio_deltas)
    self.augment = _check_augment(data_cfg.image_augment)
    is_class = task.output_modality == 'class'
    self.crop_area = CLASS_CROP_AREA if is_class else CAPTION_CROP_AREA
    self.flip = is_class
    try:
      contract.check_modalities(task.input_modality, task.output_modality)
    except ValueError as e:
      raise ValueError(f'Task {task.name!r}: {e}') from None

  def __call__(self, raw: Any, rng: Optional[np.random.Generator] = None):
    if isinstance(raw, Skip):
      return raw
    try:
      return self._process(raw, rng)
    except Exception as e:  # pylint: disable=broad-except
      return Skip('corrupt', f'{type(e).__name__}: {e}')

  def _process(self, raw: Mapping[str, Any], rng):
    inputs = self._inputs(raw, rng)
    if isinstance(inputs, Skip):
      return inputs
    targets = self._targets(raw['targets'])
    if isinstance(targets, Skip):
      return targets
    example = {'inputs': inputs, 'targets': targets}
    if not self.train and self.task.output_modality == 'text':
      refs = raw.get('references')
      example['references'] = list(refs) if refs else [str(raw['targets'])]
    return example

  def _inputs(self, raw, rng):
    kind, value = self.task.input_modality, raw['inputs']
    if kind == 'text':
      return encode_text(value, self.vocab, self.max_input_length)
    if kind == 'image':
      if not self.train:
        return image_eval(value, self.image_size, self.augment)
      if rng is None:
        raise ValueError('Training image preprocessing needs an rng.')
      if self.augment == 't2t':
        return image_train_t2t(value, self.image_size, rng)
      return image_train(value, self.image_size, rng,
                         area=self.crop_area, flip=self.flip)
    return audio_features(value, raw.get('sample_rate', SAMPLE_RATE),
                          deltas=self.audio_deltas,
                          max_frames=self.audio_max_frames)

  def _targets(self, value):
    if self.task.output_modality == 'text':
      return encode_text(value, self.vocab, self.max_target_length)
    label = int(value)
    if label < 0:
      return Skip('corrupt', f'negative class label {label}')
    return np.asarray(label, np.int32)
