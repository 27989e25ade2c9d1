"""TFDS dataset builders of the built-in tiny suite.

Four datasets, generated locally (nothing is downloaded) and written as
ArrayRecord, so ``tfds.data_source`` reads them exactly like real data:

  tiny_images       {'image': uint8 [Y, X, 3], 'label': int in [0, 48)}
  tiny_captions     {'image': uint8 [Y, X, 3], 'captions': [str]}
  tiny_translation  {'en', 'de', 'fr': str, 'tree': str (PTB bracketed)}
  tiny_speech       {'audio': int16 [n] at 16 kHz, 'text': str}

Splits 'train', 'validation', 'test' share no scene or sentence (the
generators hash each candidate to one split). Sizes come from
``config.data.tiny`` (``seed``, ``num_eval``, and ``num_train`` per task: a
dataset's train split is the largest size of the tasks that read it,
``DATASET_TASKS``, and each task reads its own prefix) and
``config.data.image_size``; they are part of the builder-config name, e.g.
``tiny_images/seed1234_train4000_eval200_img64``, so changing a size builds
a new dataset beside the old one. Data lives in
``config.data.data_dir``, else $MM_JAX_DATA_DIR, else ~/mm_jax_data.

Speech synthesis runs in parallel over fixed chunks of sentences (one
eSpeak worker process per thread); each chunk's voices depend only on
(seed, split, chunk), so the bytes do not depend on the number of workers.
"""

import concurrent.futures
import dataclasses
import logging
import os
import time

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from mm_jax.data import sources
from mm_jax.data.tiny import grammar
from mm_jax.data.tiny import speech
from mm_jax.data.tiny import vision

DATASETS = ('tiny_images', 'tiny_captions', 'tiny_translation', 'tiny_speech')
# The built-in tasks that read each dataset (for its train size).
DATASET_TASKS = {
    'tiny_images': ('imagenet',),
    'tiny_captions': ('caption_en',),
    'tiny_translation': ('parse_en', 'translate_en_de', 'translate_de_en',
                         'translate_en_fr', 'translate_fr_en',
                         'translate_de_fr'),
    'tiny_speech': ('speech_en',),
}
VERSION = '1.0.0'
SAMPLE_RATE = 16000
SPEECH_CHUNK = 16          # sentences per synthesis task (fixed: determinism)


class _QuietTinyConfig(logging.Filter):
  """Drops TFDS's 'Using custom data configuration' warning for TinyConfig,
  logged each time a source is opened (the config is custom by design)."""

  def filter(self, record):
    return 'custom data configuration: TinyConfig' not in record.getMessage()


logging.getLogger('absl').addFilter(_QuietTinyConfig())


def tiny_data_dir(data_cfg) -> str:
  """``data_cfg.data_dir``, else $MM_JAX_DATA_DIR, else ~/mm_jax_data."""
  return os.path.expanduser(data_cfg.data_dir or os.environ.get(
      'MM_JAX_DATA_DIR', '~/mm_jax_data'))


@dataclasses.dataclass
class TinyConfig(tfds.core.BuilderConfig):
  """Generation parameters of one tiny dataset (all in the config name)."""
  seed: int = 0
  num_train: int = 0
  num_eval: int = 0
  image_size: int = 64

  def split_sizes(self) -> dict[str, int]:
    return {'train': self.num_train, 'validation': self.num_eval,
            'test': self.num_eval}


def tiny_config(dataset: str, data_cfg) -> TinyConfig:
  """The builder config of ``dataset`` for ``config.data``."""
  if dataset not in DATASETS:
    raise ValueError(f'Unknown tiny dataset {dataset!r}; one of {DATASETS}.')
  t = data_cfg.tiny
  num_train = train_size(dataset, data_cfg)
  name = f'seed{t.seed}_train{num_train}_eval{t.num_eval}'
  image_size = 64
  if dataset in ('tiny_images', 'tiny_captions'):
    image_size = int(data_cfg.image_size)
    name += f'_img{image_size}'
  return TinyConfig(name=name, seed=int(t.seed), num_train=int(num_train),
                    num_eval=int(t.num_eval), image_size=image_size)


def train_size(dataset: str, data_cfg) -> int:
  """Train examples of ``dataset``: the largest ``data.tiny.num_train`` of
  the tasks that read it (``DATASET_TASKS``)."""
  sizes = [int(data_cfg.tiny.num_train[t]) for t in DATASET_TASKS[dataset]
           if t in data_cfg.tiny.num_train]
  if not sizes or min(sizes) < 1:
    raise ValueError(
        f'config.data.tiny.num_train needs a positive size for the tasks of '
        f'{dataset} ({", ".join(DATASET_TASKS[dataset])}); got '
        f'{dict((t, data_cfg.tiny.num_train.get(t)) for t in DATASET_TASKS[dataset])}.')
  return max(sizes)


def _png(image: np.ndarray) -> Image.Image:
  """uint8 [Y, X, 3] as a PIL image: TFDS then PNG-encodes it with PIL, far
  faster than its per-image TensorFlow graph for numpy arrays (lossless)."""
  return Image.fromarray(np.asarray(image, np.uint8))


class _TinyBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared split logic; subclasses define features and examples."""
  VERSION = tfds.core.Version(VERSION)
  # No download checksums to look up. (TFDS would search them beside the
  # code through `importlib_resources`, which tfds 4.9.10 does not install.)
  code_path = None

  def _features(self, **features) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated locally.
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.split_sizes().items()}


class TinyImages(_TinyBuilder):
  """Procedural objects, 48 classes (colour x shape)."""

  def _info(self):
    s = self.builder_config.image_size
    return self._features(
        image=tfds.features.Image(shape=(s, s, 3)),
        label=tfds.features.ClassLabel(names=list(vision.CLASS_NAMES)))

  def _generate_examples(self, split, num_examples):
    c = self.builder_config
    for i, ex in enumerate(vision.generate_images(
        split, num_examples, c.seed, c.image_size)):
      yield i, {'image': _png(ex['image']), 'label': ex['label']}


class TinyCaptions(_TinyBuilder):
  """Scenes of 1-3 objects with several grammar captions each."""

  def _info(self):
    s = self.builder_config.image_size
    return self._features(
        image=tfds.features.Image(shape=(s, s, 3)),
        captions=tfds.features.Sequence(tfds.features.Text()))

  def _generate_examples(self, split, num_examples):
    c = self.builder_config
    for i, ex in enumerate(vision.generate_captions(
        split, num_examples, c.seed, c.image_size)):
      yield i, {'image': _png(ex['image']), 'captions': list(ex['captions'])}


class TinyTranslation(_TinyBuilder):
  """One sentence in EN, DE, FR with its English PTB tree."""

  def _info(self):
    text = tfds.features.Text()
    return self._features(en=text, de=text, fr=text, tree=text)

  def _generate_examples(self, split, num_examples):
    c = self.builder_config
    for i, ex in enumerate(grammar.generate_sentences(
        split, num_examples, c.seed)):
      yield i, {k: str(ex[k]) for k in ('en', 'de', 'fr', 'tree')}


def _to_int16(audio) -> np.ndarray:
  audio = np.asarray(audio)
  if audio.dtype == np.int16:
    return audio
  return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def _speak_chunk(sentences: list[str], seed: int) -> list[dict]:
  """Synthesises one chunk; eSpeak runs in a worker process of its own."""
  return [{'audio': _to_int16(ex['audio']), 'text': str(ex['text'])}
          for ex in speech.generate_speech(sentences, seed)]


def _chunk_seed(seed: int, split: str, chunk: int) -> int:
  split_id = sources.SPLITS.index(split)
  return int(np.random.SeedSequence([seed, split_id, chunk]).generate_state(
      1)[0])


class TinySpeech(_TinyBuilder):
  """The tiny English sentences spoken by eSpeak NG (16 kHz, int16)."""

  def _info(self):
    # A plain Tensor, not tfds.features.Audio: Audio imports TensorFlow when
    # constructed (tfds 4.9.10, tensorflow/datasets#11233), also to read.
    # Both serialise an int16 [n] array the same way, so datasets built
    # with Audio read unchanged.
    return self._features(
        audio=tfds.features.Tensor(
            shape=(None,), dtype=np.int16,
            doc=f'int16 waveform at {SAMPLE_RATE} Hz'),
        text=tfds.features.Text())

  def _generate_examples(self, split, num_examples):
    c = self.builder_config
    english = [ex['en'] for ex in grammar.generate_sentences(
        split, num_examples, c.seed)]
    chunks = [english[k:k + SPEECH_CHUNK]
              for k in range(0, len(english), SPEECH_CHUNK)]
    seeds = [_chunk_seed(c.seed, split, k) for k in range(len(chunks))]
    # Threads suffice: each generate_speech call checks out its own eSpeak
    # worker process, where the synthesis runs.
    workers = max(1, min(len(chunks), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      results = pool.map(_speak_chunk, chunks, seeds)
      yield from enumerate(ex for chunk in results for ex in chunk)


_BUILDERS = {'tiny_images': TinyImages, 'tiny_captions': TinyCaptions,
             'tiny_translation': TinyTranslation, 'tiny_speech': TinySpeech}


def tiny_builder(dataset: str, data_cfg) -> tfds.core.DatasetBuilder:
  """The (possibly unprepared) builder of ``dataset`` for ``config.data``."""
  return _BUILDERS[dataset](config=tiny_config(dataset, data_cfg),
                            data_dir=tiny_data_dir(data_cfg),
                            file_format='array_record')


def is_complete(builder) -> bool:
  """Prepared, with every split's size as configured and its files present."""
  if not builder.is_prepared():
    return False
  splits = builder.info.splits
  for split, n in builder.builder_config.split_sizes().items():
    if split not in splits or splits[split].num_examples != n:
      return False
    if not all(p.exists() for p in splits[split].filepaths):
      return False
  return True


def prepare(dataset: str, data_cfg) -> float:
  """Builds ``dataset`` unless complete; returns seconds spent (0 if kept).

  A partial or inconsistent build (interrupted run, missing shard) is
  deleted and rebuilt.
  """
  builder = tiny_builder(dataset, data_cfg)
  if is_complete(builder):
    return 0.0
  path = builder.data_path
  for stale in list(path.parent.glob(f'incomplete.*{path.name}')) + (
      [path] if path.exists() else []):
    logging.warning('Removing partial tiny dataset %s', stale)
    stale.rmtree()
  start = time.perf_counter()
  builder = tiny_builder(dataset, data_cfg)   # fresh info after the cleanup
  builder.download_and_prepare()
  if not is_complete(builder):
    raise RuntimeError(f'Building {dataset} at {path} did not produce the '
                       'configured splits; delete the folder and rerun.')
  return time.perf_counter() - start


def open_split(dataset: str, split: str, data_cfg):
  """``tfds.data_source`` of a tiny split, building the dataset on first use."""
  spent = prepare(dataset, data_cfg)
  if spent:
    logging.info('Built %s in %.1f s.', dataset, spent)
  # The builder of this code, not tfds.data_source('name/config:version'):
  # that one takes the features from the files' features.json, where a
  # tiny_speech built before its audio became a Tensor names
  # tfds.features.Audio, which imports TensorFlow.
  return tiny_builder(dataset, data_cfg).as_data_source(split=split)


def tiny_loader(dataset: str, fn, split: str, data_cfg):
  """Task loader: tiny ``dataset`` split mapped to raw examples by ``fn``."""
  return sources.MappedSource(open_split(dataset, split, data_cfg), fn,
                              f'{dataset}[{split}]')


def tiny_caption_source(split: str, data_cfg):
  """Tiny captions: one example per scene; the target is the first
  (canonical) caption and all captions are references."""
  return sources.CaptionSource(open_split('tiny_captions', split, data_cfg),
                               f'tiny_captions[{split}]',
                               captions_fn=_captions)


def _captions(record) -> list[str]:
  return [sources.as_str(t) for t in record['captions']]
