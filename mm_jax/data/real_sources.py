"""The paper's real datasets as sources: COCO captions (one example per
caption in training, counted once and cached), the user's Penn Treebank
files, WSJ or LibriSpeech audio (docs/data.md, "Real data")."""

import functools
import logging
import os
import re
from typing import Optional

from etils import epath
import numpy as np

from mm_jax.data.sources import CaptionSource
from mm_jax.data.sources import coco_captions
from mm_jax.data.sources import ExampleSource
from mm_jax.data.sources import MappedSource
from mm_jax.data.sources import MissingDatasetError
from mm_jax.data.sources import open_tfds
from mm_jax.data.sources import real_data_dir
from mm_jax.data.sources import speech
from mm_jax.data.sources import SPLITS
from mm_jax.data.sources import tfds_loader


class _SkipImages:
  """A TFDS data source's records with the image left encoded (no decode).

  Reads ``base.data_source`` (the raw ArrayRecord reader) and deserialises
  with ``SkipDecoding`` for 'image', so scanning captions costs one read of
  the split, not a JPEG decode per image.
  """

  def __init__(self, base):
    self.base = base

  def __len__(self):
    return len(self.base)

  def __getitem__(self, i):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    record = self.base.data_source[i]
    return self.base.dataset_info.features.deserialize_example_np(
        record, decoders={'image': tfds.decode.SkipDecoding()})


def caption_counts(base, cache_dir: Optional[str], name: str,
                   captions_fn=coco_captions) -> np.ndarray:
  """Captions per image: int64 [images], cached as .npy in ``cache_dir``.

  For a TFDS data source the scan skips image decoding. The cache is keyed
  by the split's length; an unwritable cache directory only costs a rescan.
  """
  n = len(base)
  path = None
  if cache_dir:
    safe = re.sub(r'[^A-Za-z0-9_.+-]', '_', name)
    path = epath.Path(cache_dir) / f'{safe}.n{n}.counts.npy'
    if path.exists():
      with path.open('rb') as f:
        return np.load(f)
  logging.info('Counting captions of %s (%d images) once.', name, n)
  if hasattr(base, 'data_source') and hasattr(base, 'dataset_info'):
    base = _SkipImages(base)
  counts = np.zeros([n], np.int64)
  for k in range(n):
    counts[k] = len(captions_fn(base[k]))
  if path is not None:
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.parent / (path.name + '.tmp')
      with tmp.open('wb') as f:
        np.save(f, counts)
      tmp.rename(path)
    except OSError as e:
      logging.warning('Cannot cache caption counts at %s: %s', path, e)
  return counts


# -------------------------------------------------------------------- PTB --

_SECTION = re.compile(r'^\d\d$')
_NAME_SPLITS = {'train': re.compile(r'train|02-21', re.I),
                'validation': re.compile(r'dev|valid|(^|\D)22(\D|$)', re.I),
                'test': re.compile(r'test|(^|\D)23(\D|$)', re.I)}


def ptb_split_files(ptb_dir: str) -> dict[str, list[str]]:
  """Tree files per split under a user-supplied Penn Treebank directory.

  Standard layout (``.../wsj/00 ... 24/wsj_*.mrg``): WSJ sections 02-21
  train, 22 validation, 23 test. Otherwise files are split by name: 'train'
  or '02-21' -> train; 'dev', 'valid' or a '22' -> validation; 'test' or a
  '23' -> test (e.g. ``train.trees``, ``22.auto.clean``).
  """
  root = os.path.expanduser(ptb_dir)
  if not os.path.isdir(root):
    raise MissingDatasetError(
        f'config.data.ptb_dir={ptb_dir!r} is not a directory. Point it at '
        'your Penn Treebank copy (LDC99T42): treebank_3/parsed/mrg/wsj with '
        'section folders 00-24, or files named train/dev/test.')
  sections, named = {}, {s: [] for s in SPLITS}
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    files = sorted(os.path.join(dirpath, f) for f in filenames
                   if not f.startswith('.'))
    base = os.path.basename(dirpath)
    if _SECTION.match(base) and files:
      sections.setdefault(int(base), []).extend(
          f for f in files if f.endswith('.mrg') or len(files) == 1)
      continue
    for f in files:
      hits = [s for s, pat in _NAME_SPLITS.items()
              if pat.search(os.path.basename(f))]
      if len(hits) == 1:
        named[hits[0]].append(f)
  if sections:
    ranges = {'train': range(2, 22), 'validation': [22], 'test': [23]}
    out = {s: [f for k in r for f in sections.get(k, [])]
           for s, r in ranges.items()}
  else:
    out = named
  empty = [s for s in SPLITS if not out[s]]
  if empty:
    raise MissingDatasetError(
        f'No Penn Treebank files for split(s) {empty} under {root}. Expected '
        'WSJ section folders 02-21/22/23 holding .mrg files, or tree files '
        "whose names contain 'train', 'dev' and 'test' (one tree per line "
        'or .mrg bracketing).')
  return out


def ptb_source(ptb_dir: str, split: str) -> ExampleSource:
  """Raw parse examples {'inputs': words, 'targets': linearised tree}."""
  from mm_jax.data import trees  # pylint: disable=g-import-not-at-top
  examples = []
  for path in ptb_split_files(ptb_dir)[split]:
    for tree in trees.read_trees(path):
      examples.append({'inputs': ' '.join(trees.words(tree)),
                       'targets': trees.linearize(tree)})
  return ExampleSource(examples, f'ptb[{split}]')


# --------------------------------------------------------- the loaders --

COCO = 'coco_captions/2014'
# Karpathy & Li splits; 'restval' joins training as is customary.
COCO_SPLITS = {'train': 'train+restval', 'validation': 'val', 'test': 'test'}
LIBRISPEECH_SPLITS = {
    'train': 'train_clean100+train_clean360+train_other500',
    'validation': 'dev_clean', 'test': 'test_clean'}


def coco_source(split: str, data_cfg) -> CaptionSource:
  """COCO 2014 captions: one example per caption for 'train'."""
  data_dir, tfds_split = real_data_dir(data_cfg), COCO_SPLITS[split]
  base = open_tfds(COCO, tfds_split, data_dir)
  counts = None
  if split == 'train':
    counts = caption_counts(base, os.path.join(data_dir, 'mm_jax_index'),
                            f'{COCO}[{tfds_split}]')
  return CaptionSource(base, f'{COCO}[{tfds_split}]', counts)


def speech_source(split: str, data_cfg) -> MappedSource:
  """WSJ from ``config.data.wsj_dir`` when set, else LibriSpeech (TFDS)."""
  lower = functools.partial(speech, lowercase=True)
  if data_cfg.wsj_dir:
    from mm_jax.data import wsj  # pylint: disable=g-import-not-at-top
    return MappedSource(wsj.WsjSource(data_cfg.wsj_dir, split), lower,
                        f'wsj[{split}]')
  return tfds_loader('librispeech', LIBRISPEECH_SPLITS,
                      functools.partial(lower, audio_key='speech'), split,
                      data_cfg)


def parse_source(split: str, data_cfg) -> ExampleSource:
  """Penn Treebank trees from ``config.data.ptb_dir`` (LDC-licensed)."""
  if not data_cfg.ptb_dir:
    raise MissingDatasetError(
        'Task parse_en (real suite) reads the Penn Treebank, which is '
        'LDC-licensed and cannot be downloaded: set config.data.ptb_dir to '
        'your copy (WSJ section folders 00-24 of .mrg files, or files named '
        'train/dev/test with one tree per line).')
  return ptb_source(data_cfg.ptb_dir, split)
