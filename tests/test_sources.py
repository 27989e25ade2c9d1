"""Tests for the real-data sources (mm_jax/data/sources.py).

TFDS code paths run under ``tfds.testing.mock_data`` with
``MockPolicy.USE_CODE``: ``tfds.data_source`` then returns a real
``ArrayRecordDataSource`` over random examples shaped by the builder's
features, and accepts any split name (so the tests check which split each
task asked for via ``source.base.split``). Three tests need TensorFlow
(the ``[tfds-build]`` extra) and are skipped without it: the code of
tfds' coco_captions and librispeech builders imports it, and so does
writing TFRecord files.
"""

import functools
import importlib.util
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mm_jax import config as base
from mm_jax.data import registry
from mm_jax.data import real_sources
from mm_jax.data import sources
from mm_jax.data.tiny import builders


needs_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec('tensorflow') is None,
    reason="needs TensorFlow: pip install -e '.[tfds-build]'")


@pytest.fixture
def cfg(tmp_path):
  data = base.data_config('base')
  data.data_dir = str(tmp_path)
  return data


@pytest.fixture
def mock():
  with tfds.testing.mock_data(num_examples=3,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _check_text(ex):
  assert set(ex) == {'inputs', 'targets'}
  assert isinstance(ex['inputs'], str) and isinstance(ex['targets'], str)


def test_imagenet(cfg, mock):
  task = registry.get('imagenet')
  for split, tfds_split in [('train', 'train'), ('validation', 'validation'),
                            ('test', 'validation')]:
    src = task.source('real', split, cfg)
    assert len(src) == 3 and src.base.split == tfds_split
    ex = src[0]
    assert set(ex) == {'inputs', 'targets'} and type(ex['targets']) is int
    assert ex['inputs'].dtype == np.uint8 and ex['inputs'].ndim == 3
    assert ex['inputs'].shape[-1] == 3


@pytest.mark.parametrize('name,dataset,src_key,tgt_key', [
    ('translate_en_de', 'wmt14_translate/de-en', 'en', 'de'),
    ('translate_de_en', 'wmt14_translate/de-en', 'de', 'en'),
    ('translate_en_fr', 'wmt14_translate/fr-en', 'en', 'fr'),
    ('translate_fr_en', 'wmt14_translate/fr-en', 'fr', 'en'),
    ('translate_de_fr', 'wmt19_translate/fr-de', 'de', 'fr'),
])
def test_translation(cfg, mock, name, dataset, src_key, tgt_key):
  task = registry.get(name)
  raw = tfds.data_source(dataset, split='train', data_dir=cfg.data_dir,
                         download=False)
  src = task.source('real', 'train', cfg)
  ex = src[1]
  _check_text(ex)
  assert ex == {'inputs': sources.as_str(raw[1][src_key]),
                'targets': sources.as_str(raw[1][tgt_key])}
  # newstest2014 is the TFDS 'test' split; WMT19 fr-de has none.
  want = 'validation' if dataset.startswith('wmt19') else 'test'
  assert task.source('real', 'test', cfg).base.split == want
  assert task.source('real', 'validation', cfg).base.split == 'validation'


@needs_tensorflow
def test_coco_one_example_per_caption(cfg, mock):
  task = registry.get('caption_en')
  train = task.source('real', 'train', cfg)
  assert train.base.split == 'train+restval'
  counts = [len(sources.coco_captions(train.base[j])) for j in range(3)]
  assert len(train) == sum(counts) > 3
  np.testing.assert_array_equal(train.counts, counts)
  seen = []
  for i in range(len(train)):
    ex = train[i]
    assert ex['inputs'].dtype == np.uint8 and ex['inputs'].shape[-1] == 3
    assert ex['targets'] in ex['references']
    seen.append(ex['targets'])
  assert seen == [c for j in range(3)
                  for c in sources.coco_captions(train.base[j])]
  cache = os.listdir(os.path.join(cfg.data_dir, 'mm_jax_index'))
  assert len(cache) == 1 and cache[0].endswith('.n3.counts.npy')
  assert len(task.source('real', 'train', cfg)) == len(train)   # cached

  val = task.source('real', 'validation', cfg)
  assert val.base.split == 'val' and len(val) == 3
  ex = val[2]
  assert ex['targets'] == ex['references'][0]
  assert all(isinstance(r, str) for r in ex['references'])
  assert task.source('real', 'test', cfg).base.split == 'test'


@needs_tensorflow
def test_librispeech(cfg, mock):
  src = registry.get('speech_en').source('real', 'validation', cfg)
  assert src.base.split == 'dev_clean'
  ex = src[0]
  assert set(ex) == {'inputs', 'sample_rate', 'targets'}
  assert ex['inputs'].dtype == np.int16 and ex['inputs'].ndim == 1
  assert ex['sample_rate'] == 16000
  assert ex['targets'] == ex['targets'].lower()
  train = registry.get('speech_en').source('real', 'train', cfg)
  assert train.base.split.startswith('train_clean100+')


def test_missing_dataset_message(tmp_path, cfg):
  with pytest.raises(sources.MissingDatasetError) as e:
    registry.get('translate_en_de').source('real', 'train', cfg)
  msg = str(e.value)
  assert "'wmt14_translate/de-en'" in msg and str(tmp_path) in msg
  assert 'tfds build wmt14_translate/de-en' in msg
  assert '--file_format=array_record' in msg
  with pytest.raises(sources.MissingDatasetError, match='downloads/manual'):
    registry.get('imagenet').source('real', 'validation', cfg)


@needs_tensorflow
def test_tfrecord_only_dataset_says_how_to_convert(tmp_path):
  data = base.data_config('tiny')
  data.data_dir = str(tmp_path)
  data.tiny.num_train.update({t: 2 for t in data.tiny.num_train})
  data.tiny.num_eval = 1
  config = builders.tiny_config('tiny_translation', data)
  builder = builders.TinyTranslation(config=config, data_dir=str(tmp_path),
                                     file_format='tfrecord')
  builder.download_and_prepare()
  with pytest.raises(sources.MissingDatasetError) as e:
    sources.open_tfds(f'tiny_translation/{config.name}', 'train',
                      str(tmp_path))
  assert 'tfds convert_format' in str(e.value)
  assert str(builder.data_path) in str(e.value)


MRG = """\
( (S
    (NP-SBJ (DT The) (NN cat) )
    (VP (VBZ sees)
      (NP (DT a) (NN dog) ))
    (. .) ))
( (S
    (NP-SBJ-1 (PRP It) )
    (VP (VBD left)
      (NP (-NONE- *-1) ))
    (. .) ))
"""


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)


def test_ptb_sections_layout(tmp_path, cfg):
  wsj = tmp_path / 'treebank_3' / 'parsed' / 'mrg' / 'wsj'
  for section in ('00', '02', '21', '22', '23', '24'):
    _write(str(wsj / section / f'wsj_{section}01.mrg'), MRG)
  cfg.ptb_dir = str(tmp_path / 'treebank_3')
  files = real_sources.ptb_split_files(cfg.ptb_dir)
  assert [os.path.basename(f) for f in files['train']] == [
      'wsj_0201.mrg', 'wsj_2101.mrg']
  assert [os.path.basename(f) for f in files['test']] == ['wsj_2301.mrg']
  src = registry.get('parse_en').source('real', 'train', cfg)
  assert len(src) == 4
  assert src[0] == {'inputs': 'The cat sees a dog .',
                    'targets': '(S (NP XX XX /NP (VP XX (NP XX XX /NP /VP '
                               'XX /S'}
  assert src[1] == {'inputs': 'It left .',
                    'targets': '(S (NP XX /NP (VP XX /VP XX /S'}
  assert len(registry.get('parse_en').source('real', 'validation', cfg)) == 2


def test_ptb_named_files_and_errors(tmp_path, cfg):
  one_per_line = '(S (NP (DT The) (NN cat)) (VP (VBZ sleeps)) (. .))\n' * 3
  _write(str(tmp_path / 'ptb' / 'train.trees'), one_per_line)
  _write(str(tmp_path / 'ptb' / 'dev.trees'), one_per_line)
  cfg.ptb_dir = str(tmp_path / 'ptb')
  with pytest.raises(sources.MissingDatasetError, match=r"\['test'\]"):
    registry.get('parse_en').source('real', 'train', cfg)
  _write(str(tmp_path / 'ptb' / 'test.trees'), one_per_line.splitlines()[0])
  assert len(registry.get('parse_en').source('real', 'train', cfg)) == 3
  assert registry.get('parse_en').source('real', 'test', cfg)[0][
      'targets'] == '(S (NP XX XX /NP (VP XX /VP XX /S'
  cfg.ptb_dir = ''
  with pytest.raises(sources.MissingDatasetError, match='ptb_dir'):
    registry.get('parse_en').source('real', 'train', cfg)


def test_from_tfds_user_task(cfg, mock):
  loader = sources.from_tfds(
      'wmt14_translate/de-en', {'train': 'test'},
      functools.partial(sources.translation, source='de', target='en'))
  src = loader('train', cfg)
  assert src.base.split == 'test'
  _check_text(src[0])


def _write_wav(path, seconds, rate=16000):
  import wave  # pylint: disable=g-import-not-at-top
  t = np.arange(int(seconds * rate)) / rate
  samples = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with wave.open(path, 'wb') as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(samples.tobytes())


def test_wsj_replaces_librispeech(tmp_path, cfg):
  wsj = tmp_path / 'wsj'
  for split in ('train', 'dev', 'test'):
    _write_wav(str(wsj / split / 'spk1' / '4k0c0301.wav'), 0.5)
    _write_wav(str(wsj / split / 'spk1' / '4k0c0302.wav'), 0.25)
    _write(str(wsj / split / 'transcripts.txt'),
           '4k0c0301 THE CAT ,COMMA SAID HE [loud_breath] SLEEPS\n'
           '4k0c0302 STOCKS FELL \\PERIOD\n')
  cfg.wsj_dir = str(wsj)
  src = registry.get('speech_en').source('real', 'train', cfg)
  assert len(src) == 2 and src.name == 'wsj[train]'
  ex = src[0]
  assert set(ex) == {'inputs', 'sample_rate', 'targets'}
  assert ex['inputs'].dtype == np.float32 and ex['inputs'].shape == (8000,)
  assert ex['sample_rate'] == 16000
  assert ex['targets'] == 'the cat said he sleeps'
  assert src[1]['targets'] == 'stocks fell'
  assert len(registry.get('speech_en').source('real', 'test', cfg)) == 2
  # A file that cannot be decoded is a CorruptExample, not a crash.
  with open(str(wsj / 'dev' / 'spk1' / '4k0c0302.wav'), 'wb') as f:
    f.write(b'RIFF0000WAVEjunk')
  dev = registry.get('speech_en').source('real', 'validation', cfg)
  with pytest.raises(registry.CorruptExample):
    dev[1]
