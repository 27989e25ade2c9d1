"""Random-access example sources: TFDS data sources, user files and lists.

A *source* is any object with ``__len__`` and ``__getitem__(i) -> dict``
holding one raw example in the keys of ``mm_jax.data.registry`` (``inputs``,
``targets``, optional ``references`` / ``sample_rate``). This module adapts
the underlying data to those keys:

* ``open_tfds`` opens a prepared TFDS dataset with ``tfds.data_source`` (the
  ArrayRecord reader), never downloading. A missing dataset or one prepared
  only as TFRecord raises ``MissingDatasetError`` saying what to run.
* ``MappedSource`` maps a base source's records to raw examples and turns a
  read/decode failure of the base into ``CorruptExample``.
* ``CaptionSource`` gives one example per caption (training) or per image
  with all references (evaluation).
* ``mm_jax.data.real_sources`` holds the paper's real datasets (COCO,
  the user's Penn Treebank files, WSJ or LibriSpeech).
* ``from_examples`` / ``from_tfds`` build a task's source loader
  ``fn(split, data_cfg) -> source`` for user-registered tasks.

Every mapping function is a module-level function (or a ``functools.partial``
of one), so sources pickle into grain worker processes.
"""

import functools
import operator
import os
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

SPLITS = ('train', 'validation', 'test')
SAMPLE_RATE = 16000


class CorruptExample(Exception):
  """An example could not be read or decoded; the pipeline skips and counts."""


class MissingDatasetError(FileNotFoundError):
  """A dataset the task needs is not prepared in the data directory."""


# The default install has no TensorFlow; preparing real TFDS datasets (and
# reading a few, see ``open_tfds``) needs it.
TF_EXTRA = "pip install -e '.[tfds-build]'"


def is_tensorflow_missing(error: BaseException) -> bool:
  """Whether ``error`` (or its cause) is the failed import of TensorFlow.

  TFDS re-raises import errors with the dataset in the message and without
  ``name``, so the message counts too.
  """
  while error is not None:
    if isinstance(error, ImportError) and (
        (error.name or '').partition('.')[0] == 'tensorflow'
        or "No module named 'tensorflow" in str(error)):
      return True
    error = error.__cause__ or error.__context__
  return False


def tensorflow_needed(what: str) -> ModuleNotFoundError:
  """The error for ``what`` needing TensorFlow, with how to install it."""
  return ModuleNotFoundError(
      f'{what} needs TensorFlow, which the default install leaves out. '
      f'Install it with `{TF_EXTRA}` in the mm_jax checkout.',
      name='tensorflow')


def real_data_dir(data_cfg) -> str:
  """``data_cfg.data_dir``, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(data_cfg.data_dir or os.environ.get(
      'TFDS_DATA_DIR', '~/tensorflow_datasets'))


def as_str(value) -> str:
  """TFDS Text features decode to bytes from ArrayRecord, str from mocks."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _index(i, n: int, name: str) -> int:
  i = operator.index(i)
  if i < 0:
    i += n
  if not 0 <= i < n:
    raise IndexError(f'{name}: index {i} out of range for {n} examples.')
  return i


class ExampleSource:
  """An in-memory list of raw example dicts (user data, tests)."""

  def __init__(self, examples: Iterable[dict], name: str = 'examples'):
    self.examples = list(examples)
    self.name = name
    for k, ex in enumerate(self.examples[:1]):
      if not isinstance(ex, Mapping) or 'targets' not in ex:
        raise ValueError(f'{name}[{k}] is {type(ex).__name__} without a '
                         "'targets' key; raw examples are dicts with "
                         "'inputs' and 'targets' (see mm_jax.data.registry).")

  def __len__(self) -> int:
    return len(self.examples)

  def __getitem__(self, i) -> dict:
    return self.examples[_index(i, len(self.examples), self.name)]

  def __repr__(self):
    return f'ExampleSource({self.name!r}, {len(self)} examples)'


class MappedSource:
  """``base[i]`` mapped by ``fn`` to a raw example.

  Any exception from reading ``base[i]`` (undecodable JPEG, truncated record)
  becomes ``CorruptExample``, except an ``ImportError`` (a missing library,
  not a bad record; for TensorFlow it says what to install); an exception
  raised by ``fn`` itself is a bug and propagates unchanged, unless ``fn``
  raises ``CorruptExample``.
  """

  def __init__(self, base: Sequence[Any], fn: Callable[[Any], dict],
               name: str):
    self.base, self.fn, self.name = base, fn, name
    self._len = len(base)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i) -> dict:
    i = _index(i, self._len, self.name)
    try:
      record = self.base[i]
    except ImportError as e:     # not the record's fault: stop, say why
      if is_tensorflow_missing(e):
        raise tensorflow_needed(f'Decoding {self.name}') from e
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptExample(f'{self.name}[{i}]: cannot read or decode the '
                           f'record ({type(e).__name__}: {e})') from e
    return self.fn(record)

  def __repr__(self):
    return f'MappedSource({self.name!r}, {self._len} examples)'


class PrefixSource:
  """The first ``n`` examples of ``base`` (all of them if it has fewer)."""

  def __init__(self, base: Sequence[Any], n: int):
    self.base, self._len = base, min(int(n), len(base))
    self.name = f'{getattr(base, "name", type(base).__name__)}[:{self._len}]'

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i) -> dict:
    return self.base[_index(i, self._len, self.name)]

  def __repr__(self):
    return f'PrefixSource({self.name!r}, {self._len} examples)'


# ------------------------------------------------------- raw-example maps --

def _rgb(image) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise CorruptExample(f'image of shape {image.shape} / {image.dtype} is '
                         'not uint8 [Y, X, 3].')
  return image


def image_class(record, image_key='image', label_key='label') -> dict:
  """{'image': uint8 [Y, X, 3], 'label'} -> {'inputs', 'targets': int}."""
  return {'inputs': _rgb(record[image_key]), 'targets': int(record[label_key])}


def translation(record, source: str, target: str) -> dict:
  """{'en': ..., 'de': ...} -> {'inputs': record[source], 'targets': ...}."""
  return {'inputs': as_str(record[source]), 'targets': as_str(record[target])}


_PUNCT = re.compile(r"[^\w\s'-]|(?<!\w)['-]|['-](?!\w)")


def spoken_words(text: str) -> str:
  """'The cat, I think, sleeps.' -> 'the cat i think sleeps' (apostrophes
  and inner hyphens kept): what a listener can transcribe."""
  return ' '.join(_PUNCT.sub(' ', text.lower()).split())


def speech(record, audio_key='audio', text_key='text',
           lowercase=False, words_only=False) -> dict:
  """{'audio': int16/float32 [n], 'text'} -> {'inputs', 'sample_rate',
  'targets'}. ``lowercase``: LibriSpeech's upper-case transcripts;
  ``words_only``: also drop punctuation (``spoken_words``)."""
  text = as_str(record[text_key])
  audio = np.asarray(record[audio_key])
  if audio.ndim != 1 or audio.size == 0:
    raise CorruptExample(f'audio of shape {audio.shape} is not a non-empty '
                         'mono waveform [n].')
  rate = int(record.get('sample_rate', SAMPLE_RATE))
  if words_only:
    text = spoken_words(text)
  elif lowercase:
    text = text.lower()
  return {'inputs': audio, 'sample_rate': rate, 'targets': text}


def parse_tree(record, tree_key='tree') -> dict:
  """{'tree': PTB bracketed str} -> {'inputs': words, 'targets': linearised}."""
  from mm_jax.data import trees  # pylint: disable=g-import-not-at-top
  tree = trees.parse_bracketed(as_str(record[tree_key]))
  return {'inputs': ' '.join(trees.words(tree)),
          'targets': trees.linearize(tree)}


# ------------------------------------------------------------------ TFDS --

def missing_message(name: str, data_dir: str, path: str) -> str:
  """What to run to prepare TFDS dataset ``name`` under ``data_dir``."""
  base = name.split('/')[0].split(':')[0]
  lines = [f'Dataset {name!r} is not prepared: searched {path} (data_dir '
           f'{data_dir}; set config.data.data_dir or $TFDS_DATA_DIR). Nothing '
           'is downloaded at run time. Prepare it once as ArrayRecord (tfds '
           f'build needs TensorFlow: {TF_EXTRA}):',
           f'  tfds build {name} --data_dir={data_dir} '
           '--file_format=array_record']
  if base == 'imagenet2012':
    lines.append('imagenet2012 needs the manual downloads ILSVRC2012_img_'
                 'train.tar and ILSVRC2012_img_val.tar (from image-net.org) '
                 f'in {data_dir}/downloads/manual first.')
  return '\n'.join(lines)


def convert_message(name: str, path: str) -> str:
  return (f'Dataset {name!r} at {path} is prepared as TFRecord only, but '
          'the input pipeline reads random-access ArrayRecord files. Convert '
          'it in place (keeps the TFRecord files; needs TensorFlow: '
          f'{TF_EXTRA}):\n'
          f'  tfds convert_format --dataset_version_dir={path} '
          '--out_file_format=array_record\n'
          'or rebuild it with `tfds build ... --file_format=array_record`.')


def _tfds_builder(name: str, data_dir: str):
  """``tfds.builder(name)``; without TensorFlow, where the dataset's code
  needs it (``coco_captions`` builds its features with ``tf`` dtypes), the
  builder of the prepared files (features from their features.json)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.builder(name, data_dir=data_dir)
  except ImportError as e:
    if not is_tensorflow_missing(e):
      raise
  from tensorflow_datasets.core import read_only_builder  # pylint: disable=g-import-not-at-top
  try:
    return read_only_builder.builder_from_files(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    path = os.path.join(data_dir, *name.split(':')[0].split('/'))
    raise MissingDatasetError(missing_message(name, data_dir, path)) from None


def open_tfds(name: str, split: str, data_dir: str):
  """``tfds`` data source of a prepared dataset; never downloads.

  Reads without TensorFlow, except datasets with ``tfds.features.Audio``
  (LibriSpeech), which imports it (tensorflow/datasets#11233).

  Raises ``MissingDatasetError`` naming the dataset, the directory searched
  and the command to run when the data is absent or is TFRecord only, and
  ``ModuleNotFoundError`` saying what to install when TensorFlow is needed.
  """
  try:
    builder = _tfds_builder(name, data_dir)
    try:
      return builder.as_data_source(split=split)
    except (NotImplementedError, ValueError, FileNotFoundError) as e:
      path = str(builder.data_path)
      if not builder.is_prepared():
        raise MissingDatasetError(missing_message(name, data_dir,
                                                  path)) from None
      formats = {f.value for f in builder.info.available_file_formats()}
      if 'array_record' not in formats:
        raise MissingDatasetError(convert_message(name, path)) from e
      raise
  except ImportError as e:
    if is_tensorflow_missing(e):
      raise tensorflow_needed(f'Reading TFDS dataset {name!r}') from e
    raise


def from_tfds(name: str, split_map: Optional[Mapping[str, str]],
              fn: Callable[[Any], dict]):
  """Loader ``(split, data_cfg) -> source`` over TFDS dataset ``name``.

  ``split_map`` maps 'train' / 'validation' / 'test' to TFDS split strings
  (e.g. ``{'test': 'validation'}``, ``{'train': 'train+restval'}``); splits
  not in it are used as named. ``fn`` maps a TFDS record to a raw example
  (Text features arrive as bytes: ``as_str``); it must be module-level or a
  ``functools.partial`` to pickle. The data directory is
  ``config.data.data_dir`` / $TFDS_DATA_DIR.
  """
  return functools.partial(tfds_loader, name, dict(split_map or {}), fn)


def tfds_loader(name, split_map, fn, split, data_cfg):
  tfds_split = split_map.get(split, split)
  base = open_tfds(name, tfds_split, real_data_dir(data_cfg))
  return MappedSource(base, fn, f'{name}[{tfds_split}]')


def from_examples(examples: Union[Iterable[dict], Mapping[str, Iterable]]):
  """Loader ``(split, data_cfg) -> source`` over in-memory raw examples.

  ``examples`` is one iterable of raw example dicts (used for every split) or
  a mapping split -> iterable.
  """
  if isinstance(examples, Mapping):
    per_split = {k: ExampleSource(v, f'examples[{k}]')
                 for k, v in examples.items()}
  else:
    shared = ExampleSource(examples)
    per_split = {s: shared for s in SPLITS}
  return functools.partial(_example_loader, per_split)


def _example_loader(per_split, split, data_cfg):
  del data_cfg
  if split not in per_split:
    raise KeyError(f'No examples for split {split!r}; have '
                   f'{sorted(per_split)}.')
  return per_split[split]


# -------------------------------------------------------------- captions --

class CaptionSource:
  """Image-caption records -> raw examples with all captions as references.

  ``per_caption=True`` (COCO training): one example per caption, so
  ``len`` is the total number of captions; ``counts[j]`` is the number of
  captions of image ``j``. Otherwise one example per image whose target is
  the first caption. Every example carries ``'references'``: all captions.
  """

  def __init__(self, base, name: str, counts: Optional[np.ndarray] = None,
               captions_fn=None):
    self.base, self.name = base, name
    self.captions_fn = captions_fn or coco_captions
    self.counts = None if counts is None else np.asarray(counts, np.int64)
    if self.counts is None:
      self._len = len(base)
    else:
      if len(self.counts) != len(base):
        raise ValueError(f'{name}: {len(self.counts)} caption counts for '
                         f'{len(base)} images.')
      self._ends = np.cumsum(self.counts)   # [images]
      self._len = int(self._ends[-1]) if len(self._ends) else 0

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i) -> dict:
    i = _index(i, self._len, self.name)
    image_index, caption = i, 0
    if self.counts is not None:
      image_index = int(np.searchsorted(self._ends, i, side='right'))
      caption = i - int(self._ends[image_index] - self.counts[image_index])
    try:
      record = self.base[image_index]
    except ImportError as e:     # not the record's fault: stop, say why
      if is_tensorflow_missing(e):
        raise tensorflow_needed(f'Decoding {self.name}') from e
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptExample(f'{self.name}[{image_index}]: cannot read or '
                           f'decode ({type(e).__name__}: {e})') from e
    refs = self.captions_fn(record)
    if not refs:
      raise CorruptExample(f'{self.name}[{image_index}] has no captions.')
    return {'inputs': _rgb(record['image']),
            'targets': refs[min(caption, len(refs) - 1)], 'references': refs}


def coco_captions(record) -> list[str]:
  """COCO ``{'captions': {'text': [n]}}`` -> list of caption strings."""
  return [as_str(t) for t in np.asarray(record['captions']['text']).ravel()]
