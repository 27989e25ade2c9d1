"""The default install has no TensorFlow (setup.py; ``[tfds-build]`` adds it).

A subprocess hides every ``tensorflow*`` module, as an environment without
it would (``importlib.util.find_spec`` gives None, ``import`` raises
ModuleNotFoundError), then builds all four tiny datasets and reads each,
trains two steps (TensorBoard events, a checkpoint) and imports evaluation
and inference. Nothing may import TensorFlow. XLA compiles with LLVM's
optimisations off (half the time; the test is about imports, not speed).
Evaluating and predicting are only imported: their compilation would
double the test's time, and they touch no TFDS or TensorBoard API beyond
what training does.

The other tests fake TFDS failing for want of TensorFlow (real datasets):
a prepared dataset whose builder code needs it is read from its files, and
what cannot be read says to install the ``[tfds-build]`` extra.
"""

import json
import os
import subprocess
import sys

import pytest

import conftest
from mm_jax import config as base
from mm_jax.data import sources
from mm_jax.data.tiny import builders
from mm_jax.train import events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run first in the subprocess: every meta-path finder finds no tensorflow.
HIDE_TENSORFLOW = '''
import sys


class _HideTensorFlow:
  """A meta-path finder that finds nothing named tensorflow[.*]."""

  def __init__(self, finder):
    self._finder = finder

  def find_spec(self, name, path=None, target=None):
    if name.partition('.')[0] == 'tensorflow':
      return None
    find = getattr(self._finder, 'find_spec', None)
    return find(name, path, target) if find else None

  def __getattr__(self, name):
    return getattr(self._finder, name)


sys.meta_path[:] = [_HideTensorFlow(f) for f in sys.meta_path]
'''

RUN = '''
import importlib.util
import json
import sys

assert importlib.util.find_spec('tensorflow') is None
try:
  import tensorflow  # pylint: disable=unused-import
  raise AssertionError('tensorflow imported')
except ModuleNotFoundError:
  pass

import mm_jax  # pylint: disable=unused-import
from mm_jax import config as base
from mm_jax.data import registry
from mm_jax.eval import evaluate  # pylint: disable=unused-import
from mm_jax.inference import predictor  # pylint: disable=unused-import
from mm_jax.train import loop

single = base.load_module('single')

overrides, workdir = json.loads(sys.argv[1]), sys.argv[2]
config = base.override(single.get_config('translate_en_de,tiny'), overrides)
for task in ('imagenet', 'caption_en', 'translate_en_de', 'speech_en'):
  example = registry.get(task).source('tiny', 'validation', config.data)[0]
  assert example['targets'] != '', task
result = loop.train_and_evaluate(config, workdir)
print(json.dumps({
    'step': result['step'], 'loss': result['loss'],
    'tensorflow': sorted(m for m in sys.modules
                         if m.partition('.')[0] == 'tensorflow')}))
'''


@pytest.mark.e2e
def test_tiny_data_and_training_without_tensorflow(tmp_path):
  overrides = {
      **conftest.SMALL, **base.tiny_sizes(8, 2, speech_en=2),
      'data.data_dir': str(tmp_path / 'data'), 'data.vocab_size': 200,
      'model.vocab_size': 200, 'train.num_train_steps': 2,
      'eval.splits': ()}
  script = tmp_path / 'run.py'
  script.write_text(HIDE_TENSORFLOW + RUN)
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO,
         'XLA_FLAGS': '--xla_backend_optimization_level=0 '
                      '--xla_llvm_disable_expensive_passes=true'}
  done = subprocess.run(
      [sys.executable, str(script), json.dumps(overrides),
       str(tmp_path / 'work')], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result['tensorflow'] == []
  assert result['step'] == 2 and result['loss'] > 0
  [path] = [os.path.join(tmp_path / 'work', f)
            for f in os.listdir(tmp_path / 'work')
            if f.startswith(events.FILE_PREFIX)]
  tags = {v.tag for e in events.read_events(path) for v in e.summary.value}
  assert 'loss' in tags


def _no_tensorflow_in_code(*args, **kwargs):
  """tfds.builder of a dataset whose code imports TensorFlow (coco_captions),
  as tfds re-raises it: the dataset in the message, no ``name``."""
  del args, kwargs
  raise ModuleNotFoundError('Failed to construct dataset "x": No module '
                            "named 'tensorflow'")


def test_prepared_dataset_whose_code_needs_tensorflow_reads_from_files(
    tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data = base.data_config('tiny')
  data.data_dir = str(tmp_path)
  data.tiny.num_train.update({t: 2 for t in data.tiny.num_train})
  data.tiny.num_eval = 1
  assert builders.prepare('tiny_translation', data) > 0
  config = builders.tiny_config('tiny_translation', data)
  name = f'tiny_translation/{config.name}'
  monkeypatch.setattr(tfds, 'builder', _no_tensorflow_in_code)
  source = sources.open_tfds(name, 'train', str(tmp_path))
  assert len(source) == 2 and set(source[0]) == {'en', 'de', 'fr', 'tree'}
  with pytest.raises(sources.MissingDatasetError) as error:
    sources.open_tfds('coco_captions/2014', 'val', str(tmp_path))
  assert 'tfds build coco_captions/2014' in str(error.value)
  assert "pip install -e '.[tfds-build]'" in str(error.value)


def test_tensorflow_errors_say_what_to_install(monkeypatch):
  """LibriSpeech: its Audio feature imports TensorFlow, from files too."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import read_only_builder  # pylint: disable=g-import-not-at-top

  def audio_feature(*args, **kwargs):
    del args, kwargs
    raise ModuleNotFoundError("No module named 'tensorflow'",
                              name='tensorflow')

  monkeypatch.setattr(tfds, 'builder', _no_tensorflow_in_code)
  monkeypatch.setattr(read_only_builder, 'builder_from_files', audio_feature)
  with pytest.raises(ModuleNotFoundError, match=r"'librispeech' needs "
                     r"TensorFlow.*pip install -e '\.\[tfds-build\]'"):
    sources.open_tfds('librispeech', 'dev_clean', '/nonexistent')
  mapped = sources.MappedSource(_Undecodable(), dict, 'librispeech[test]')
  with pytest.raises(ModuleNotFoundError, match=r'Decoding librispeech\[test\] '
                     'needs TensorFlow'):
    mapped[0]                              # not a CorruptExample: stops
  assert "'.[tfds-build]'" in sources.convert_message('coco', '/d/c')


class _Undecodable:
  """One record whose decoding needs TensorFlow."""

  def __len__(self):
    return 1

  def __getitem__(self, i):
    raise ModuleNotFoundError("No module named 'tensorflow'",
                              name='tensorflow')
