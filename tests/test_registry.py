"""Tests for the task registry (mm_jax/data/registry.py) and the generic
source adapters of mm_jax/data/sources.py."""

import pickle

import numpy as np
import pytest

from mm_jax import config as base
from mm_jax.data import registry
from mm_jax.data import sources
from mm_jax.data.tiny import vision

EXPECTED = {  # name: (input, output, target space, loss weight)
    'speech_en': ('audio', 'text', 'en', 2.0),
    'parse_en': ('text', 'text', 'parse', 1.0),
    'imagenet': ('image', 'class', None, 0.7),
    'caption_en': ('image', 'text', 'en', 1.0),
    'translate_en_de': ('text', 'text', 'de', 1.0),
    'translate_de_en': ('text', 'text', 'en', 1.0),
    'translate_en_fr': ('text', 'text', 'fr', 1.0),
    'translate_de_fr': ('text', 'text', 'fr', 1.0),
    'translate_fr_en': ('text', 'text', 'en', 1.0),
}


def test_builtin_tasks():
  assert set(EXPECTED) <= set(registry.names())
  assert set(base.PAPER_TASKS) <= set(registry.names())
  for name, (inp, out, space, weight) in EXPECTED.items():
    task = registry.get(name)
    assert (task.input_modality, task.output_modality,
            task.target_space) == (inp, out, space), name
    assert base.TASK_LOSS_WEIGHTS[name] == weight, name
    assert set(task.sources) == {'tiny', 'real'}, name
    assert 'log_ppl' in task.metrics
    assert bool(task.text_fields) == (out == 'text' or inp == 'text')
  assert not hasattr(registry.get('imagenet'), 'loss_weight')   # config's
  assert 'bleu' in registry.get('translate_de_fr').metrics
  assert 'wer' in registry.get('speech_en').metrics
  assert 'sequence_accuracy' in registry.get('parse_en').metrics
  assert {'top1', 'top5'} <= set(registry.get('imagenet').metrics)
  assert registry.TARGET_SPACES == {'generic': 0, 'en': 1, 'de': 2, 'fr': 3,
                                    'parse': 4}


def test_class_names_of_a_run():
  """The labels checkpoints store: the first class task's, on its suite."""
  tiny = registry.class_names(['parse_en', 'imagenet'], 'tiny')
  assert tiny == vision.CLASS_NAMES and tiny[0] == 'red circle'
  assert registry.class_names(['imagenet'], 'real') is None   # not named
  assert registry.class_names(['parse_en', 'translate_en_de'], 'tiny') is None


def test_unknown_task_lists_known_names():
  with pytest.raises(KeyError) as e:
    registry.get('translate_en_xx')
  assert 'translate_en_de' in str(e.value) and 'imagenet' in str(e.value)


def test_task_validation():
  ok = sources.from_examples([{'inputs': 'a', 'targets': 'b'}])
  with pytest.raises(ValueError, match='target_space'):
    registry.Task('t', 'text', 'text', 'klingon', {'tiny': ok})
  with pytest.raises(ValueError, match='input_modality'):
    registry.Task('t', 'video', 'text', 'en', {'tiny': ok})
  with pytest.raises(ValueError, match='class output'):
    registry.Task('t', 'image', 'class', 'en', {'tiny': ok})
  with pytest.raises(ValueError, match='suites'):
    registry.Task('t', 'text', 'text', 'en', {'laptop': ok})


def test_user_task_from_examples():
  data = {'train': [{'inputs': f'w{i} x', 'targets': f'x w{i}'}
                    for i in range(10)],
          'validation': [{'inputs': 'a b', 'targets': 'b a'}],
          'test': [{'inputs': 'c d', 'targets': 'd c'}]}
  task = registry.Task(
      name='test_reverse_words', input_modality='text',
      output_modality='text', target_space='generic',
      sources={'tiny': sources.from_examples(data)},
      metrics=('token_accuracy',), text_fields=('inputs', 'targets'))
  registry.register(task)
  try:
    assert 'test_reverse_words' in registry.names()
    cfg = base.data_config('tiny')
    train = registry.get('test_reverse_words').source('tiny', 'train', cfg)
    assert len(train) == 10 and train[3] == {'inputs': 'w3 x',
                                             'targets': 'x w3'}
    assert train[-1]['inputs'] == 'w9 x'
    with pytest.raises(IndexError):
      train[10]
    assert registry.get('test_reverse_words').source(
        'tiny', 'test', cfg)[0]['targets'] == 'd c'
    with pytest.raises(KeyError, match="no 'real' data"):
      task.source('real', 'train', cfg)
    with pytest.raises(ValueError, match='already registered'):
      registry.register(task)
    registry.register(task, overwrite=True)
    # Loaders pickle (grain worker processes).
    loader = pickle.loads(pickle.dumps(task.sources['tiny']))
    assert len(loader('validation', cfg)) == 1
  finally:
    registry._TASKS.pop('test_reverse_words', None)


def test_from_examples_single_list_serves_every_split():
  loader = sources.from_examples([{'inputs': 'a', 'targets': 1}] * 3)
  assert all(len(loader(s, None)) == 3 for s in sources.SPLITS)
  with pytest.raises(ValueError, match="'targets'"):
    sources.from_examples([{'text': 'no targets'}])


class _Flaky:
  def __len__(self):
    return 3

  def __getitem__(self, i):
    if i == 1:
      raise OSError('truncated record')
    return {'image': np.zeros([4, 4, 3], np.uint8), 'label': np.int64(i)}


def test_mapped_source_wraps_read_errors():
  src = sources.MappedSource(_Flaky(), sources.image_class, 'flaky')
  assert src[0]['targets'] == 0 and isinstance(src[2]['targets'], int)
  with pytest.raises(registry.CorruptExample, match=r'flaky\[1\].*truncated'):
    src[1]
  with pytest.raises(IndexError):
    src[3]
  bad = sources.MappedSource(
      [{'image': np.zeros([4, 4], np.uint8), 'label': 0}],
      sources.image_class, 'grey')
  with pytest.raises(registry.CorruptExample, match='not uint8'):
    bad[0]


def test_raw_maps():
  assert sources.translation({'de': b'Hallo', 'en': 'hello'}, 'en', 'de') == {
      'inputs': 'hello', 'targets': 'Hallo'}
  ex = sources.speech({'speech': np.ones([5], np.int16), 'text': b'HI THERE'},
                      audio_key='speech', lowercase=True)
  assert ex['targets'] == 'hi there' and ex['sample_rate'] == 16000
  assert ex['inputs'].dtype == np.int16
  tiny = sources.speech({'audio': np.ones([5], np.float32),
                         'text': "The owl's cat, I think, sleeps."},
                        words_only=True)
  assert tiny['targets'] == "the owl's cat i think sleeps"
  with pytest.raises(registry.CorruptExample, match='waveform'):
    sources.speech({'audio': np.zeros([0], np.float32), 'text': 'x'})
  parse = sources.parse_tree(
      {'tree': '(S (NP (DT The) (NN cat)) (VP (VBZ sleeps)) (. .))'})
  assert parse == {'inputs': 'The cat sleeps .',
                   'targets': '(S (NP XX XX /NP (VP XX /VP XX /S'}
