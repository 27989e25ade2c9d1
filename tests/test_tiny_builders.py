"""Tests for the tiny-suite TFDS builders (mm_jax/data/tiny/builders.py),
the tiny task sources and ``prepare.ensure_prepared``."""

import hashlib
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mm_jax import config as base
from mm_jax.data import prepare
from mm_jax.data import registry
from mm_jax.data import sources
from mm_jax.data.tiny import builders

KEYS = {'tiny_images': {'image', 'label'},
        'tiny_captions': {'image', 'captions'},
        'tiny_translation': {'en', 'de', 'fr', 'tree'},
        'tiny_speech': {'audio', 'text'}}


def _cfg(data_dir, num_train=8, num_eval=4, num_speech_train=3):
  cfg = base.data_config('tiny')
  cfg.data_dir = str(data_dir)
  cfg.tiny.num_train.update({t: num_train for t in cfg.tiny.num_train})
  cfg.tiny.num_train.speech_en = num_speech_train
  cfg.tiny.num_eval = num_eval
  cfg.vocab_size = 400
  return cfg


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
  """Images, captions and translation built once at 8 / 4 / 4 examples."""
  cfg = _cfg(tmp_path_factory.mktemp('tiny'))
  for dataset in ('tiny_images', 'tiny_captions', 'tiny_translation'):
    assert builders.prepare(dataset, cfg) > 0
  return cfg


def _read(dataset, cfg):
  name = f'{dataset}/{builders.tiny_config(dataset, cfg).name}'
  return {s: tfds.data_source(name, split=s, data_dir=cfg.data_dir,
                              download=False) for s in sources.SPLITS}


def _key(dataset, record):
  """What must not repeat across splits: the scene / sentence."""
  if dataset == 'tiny_images':
    return hashlib.sha1(record['image'].tobytes()).hexdigest()
  if dataset == 'tiny_captions':
    return record['captions'][0]
  if dataset == 'tiny_translation':
    return record['en']
  return record['text']


@pytest.mark.parametrize('dataset', ['tiny_images', 'tiny_captions',
                                     'tiny_translation'])
def test_records_and_disjoint_splits(cfg, dataset):
  data = _read(dataset, cfg)
  assert {s: len(d) for s, d in data.items()} == {
      'train': 8, 'validation': 4, 'test': 4}
  keys = {}
  for split, source in data.items():
    records = [source[i] for i in range(len(source))]
    assert all(set(r) == KEYS[dataset] for r in records)
    keys[split] = {_key(dataset, r) for r in records}
  assert not keys['train'] & keys['validation']
  assert not keys['train'] & keys['test']
  assert not keys['validation'] & keys['test']
  path = os.path.join(cfg.data_dir, dataset,
                      builders.tiny_config(dataset, cfg).name, '1.0.0')
  assert any(f.endswith('array_record-00000-of-00001')
             for f in os.listdir(path))


def test_record_types(cfg):
  image = _read('tiny_images', cfg)['train'][0]
  assert image['image'].shape == (64, 64, 3)
  assert image['image'].dtype == np.uint8 and 0 <= image['label'] < 48
  caption = _read('tiny_captions', cfg)['test'][0]
  assert len(caption['captions']) > 1
  sentence = _read('tiny_translation', cfg)['validation'][0]
  assert sources.as_str(sentence['tree']).startswith('(')


def test_tiny_task_sources(cfg):
  for name in registry.names():
    task = registry.get(name)
    if name == 'speech_en' or 'tiny' not in task.sources:
      continue
    src = task.source('tiny', 'validation', cfg)
    assert len(src) == 4, name
    ex = src[3]
    if task.output_modality == 'class':
      assert type(ex['targets']) is int
    else:
      assert isinstance(ex['targets'], str) and ex['targets']
    if task.input_modality == 'text':
      assert isinstance(ex['inputs'], str) and ex['inputs']
    else:
      assert ex['inputs'].shape == (64, 64, 3)
  cap = registry.get('caption_en').source('tiny', 'train', cfg)[0]
  assert cap['targets'] == cap['references'][0] and len(cap['references']) > 1
  parse = registry.get('parse_en').source('tiny', 'test', cfg)[0]
  assert parse['targets'].startswith('(S') and '/S' in parse['targets']
  en = registry.get('translate_en_fr').source('tiny', 'test', cfg)[0]
  assert registry.get('translate_fr_en').source(
      'tiny', 'test', cfg)[0]['targets'] == en['inputs']


def test_idempotent_and_partial_rebuild(cfg):
  assert builders.prepare('tiny_translation', cfg) == 0.0
  before = [sources.as_str(_read('tiny_translation', cfg)['train'][i]['en'])
            for i in range(8)]
  builder = builders.tiny_builder('tiny_translation', cfg)
  shard = builder.info.splits['train'].filepaths[0]
  shard.unlink()                                   # a damaged build ...
  assert not builders.is_complete(builders.tiny_builder('tiny_translation',
                                                        cfg))
  assert builders.prepare('tiny_translation', cfg) > 0   # ... is rebuilt
  after = [sources.as_str(_read('tiny_translation', cfg)['train'][i]['en'])
           for i in range(8)]
  assert after == before                           # deterministic


def test_sizes_are_part_of_the_config_name(tmp_path):
  a = builders.tiny_config('tiny_images', _cfg(tmp_path))
  b = builders.tiny_config('tiny_images', _cfg(tmp_path, num_train=9))
  s = builders.tiny_config('tiny_speech', _cfg(tmp_path))
  assert a.name != b.name and 'img64' in a.name
  assert s.num_train == 3 and 'img' not in s.name
  with pytest.raises(ValueError, match='tiny_audio'):
    builders.tiny_config('tiny_audio', _cfg(tmp_path))


def test_chunk_seeds_do_not_depend_on_workers():
  seeds = [builders._chunk_seed(1234, 'train', k) for k in range(4)]
  assert len(set(seeds)) == 4
  assert seeds == [builders._chunk_seed(1234, 'train', k) for k in range(4)]
  assert builders._chunk_seed(1234, 'test', 0) != seeds[0]
  audio = np.array([0.0, 0.5, -1.5], np.float32)
  np.testing.assert_array_equal(builders._to_int16(audio),
                                np.array([0, 16384, -32767], np.int16))


def test_tiny_speech(tmp_path):
  cfg = _cfg(tmp_path, num_speech_train=3, num_eval=1)
  assert builders.prepare('tiny_speech', cfg) > 0
  data = _read('tiny_speech', cfg)
  assert [len(data[s]) for s in sources.SPLITS] == [3, 1, 1]
  ex = registry.get('speech_en').source('tiny', 'train', cfg)[0]
  assert set(ex) == {'inputs', 'sample_rate', 'targets'}
  assert ex['inputs'].dtype == np.int16 and ex['inputs'].size > 1600
  assert ex['sample_rate'] == 16000 and ex['targets']
  keys = {s: {_key('tiny_speech', data[s][i]) for i in range(len(data[s]))}
          for s in sources.SPLITS}
  assert not keys['train'] & (keys['validation'] | keys['test'])


def test_ensure_prepared(cfg):
  cfg = cfg.copy_and_resolve_references()
  cfg.mixture.speech_en = 0.0
  lines = []
  vocab = prepare.ensure_prepared(cfg, report=lines.append)
  assert any('complete, kept' in l for l in lines)
  assert any('trained' in l for l in lines)
  assert 100 < vocab.size <= 400
  assert vocab.path.startswith(os.path.join(cfg.data_dir, 'vocab'))
  parse = registry.get('parse_en').source('tiny', 'train', cfg)[0]['targets']
  assert vocab.decode(vocab.encode(parse)) == parse
  assert len(vocab.encode(parse)) == len(parse.split())
  lines.clear()
  again = prepare.ensure_prepared(cfg, report=lines.append)
  assert again.sha256 == vocab.sha256 and any('kept' in l for l in lines
                                               if l.startswith('vocab'))


def test_prepare_command(tmp_path, capsys):
  config = tmp_path / 'small.py'
  config.write_text(
      'from mm_jax import config as base\n\n'
      'def get_config(arg=None):\n'
      '  c = base.get_config(arg)\n'
      '  c.data.tiny.num_train.update({t: 6 for t in c.data.tiny.num_train})\n'
      '  c.data.tiny.num_eval = 2\n'
      '  c.data.vocab_size = 300\n'
      '  for name in c.data.mixture:\n'
      "    c.data.mixture[name] = float(name == 'translate_en_de')\n"
      '  return c\n')
  args = ['--suite=tiny', f'--config={config}:tiny',
          f'--data_dir={tmp_path / "data"}']
  prepare.main(args)
  out = capsys.readouterr().out
  assert 'tiny_translation/seed1234_train6_eval2: built in' in out
  assert 'vocabulary' in out and 'trained' in out and 'total' in out
  assert 'tiny_images' not in out                  # not in the mixture
  prepare.main(args)
  out = capsys.readouterr().out
  assert 'complete, kept' in out and 'pieces, kept' in out
  with pytest.raises(SystemExit, match='real'):
    prepare.main(['--suite=real', f'--config={config}:tiny'])
  with pytest.raises(SystemExit, match='data_dri'):
    prepare.main(['--data_dri=/tmp/x'])             # a typo is named
  with pytest.raises(SystemExit, match='suite'):
    prepare.main(['--suite=large'])


def test_tiny_datasets_of_tasks():
  tasks = [registry.get(n) for n in ('translate_de_fr', 'imagenet',
                                     'speech_en', 'parse_en')]
  assert prepare.tiny_datasets(tasks) == ['tiny_images', 'tiny_translation',
                                          'tiny_speech']


def test_tasks_read_prefixes_of_one_dataset_sized_for_the_largest(cfg):
  from mm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  small = cfg.copy_and_resolve_references()
  small.tiny.num_train.parse_en = 3          # a low-data task
  # The dataset is sized for its largest task: the fixture's 8 examples.
  assert builders.train_size('tiny_translation', small) == 8
  parse = pipeline.task_source(registry.get('parse_en'), 'train', small)
  en_de = pipeline.task_source(registry.get('translate_en_de'), 'train',
                               small)
  assert (len(parse), len(en_de)) == (3, 8)
  # Parsing reads the first 3 of the shared sentences.
  full = registry.get('parse_en').source('tiny', 'train', small)
  assert len(full) == 8
  for i in range(3):
    assert parse[i] == full[i]
  with pytest.raises(IndexError, match='out of range'):
    parse[3]
  # Evaluation splits are not cut.
  assert len(pipeline.task_source(registry.get('parse_en'), 'validation',
                                  small)) == 4
  bad = cfg.copy_and_resolve_references()
  bad.tiny.num_train.update({t: 0 for t in builders.DATASET_TASKS[
      'tiny_translation']})
  with pytest.raises(ValueError, match='num_train needs a positive size'):
    builders.train_size('tiny_translation', bad)


def test_default_tiny_sizes_follow_the_papers_data_regime():
  sizes = base.get_config('tiny').data.tiny.num_train
  assert sizes.parse_en == sizes.speech_en == 300
  assert sizes.translate_en_de == sizes.imagenet == sizes.caption_en == 4000
