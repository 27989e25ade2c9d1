"""The batch contract (mm_jax/contract.py): declared once, example batches
of every modality pair, and a config whose model disagrees with its data is
refused before anything runs."""

import ast
import os

import flax.linen as nn
import numpy as np
import pytest

import mm_jax
from mm_jax import config as base
from mm_jax import contract
from mm_jax.data import batching
from mm_jax.data import plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = {'PAD_ID', 'EOS_ID', 'UNK_ID', 'MEL_BINS', 'INPUT_MODALITIES',
         'OUTPUT_MODALITIES'}


def test_constants_are_declared_only_in_the_contract():
  found = []
  for dirpath, _, files in os.walk(os.path.join(REPO, 'mm_jax')):
    for name in sorted(files):
      path = os.path.join(dirpath, name)
      if not name.endswith('.py') or name == 'contract.py':
        continue
      with open(path) as f:
        tree = ast.parse(f.read(), path)
      for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
          for leaf in ast.walk(target):
            if isinstance(leaf, ast.Name) and leaf.id in NAMES:
              found.append(f'{os.path.relpath(path, REPO)}:{node.lineno}')
  assert not found, f'Declared again (use mm_jax.contract): {found}'


@pytest.mark.parametrize('inp,out', [('text', 'text'), ('image', 'class'),
                                     ('image', 'text'), ('audio', 'text')])
def test_example_batch_shapes_and_content(inp, out):
  const = contract.example_batch(inp, out, 2, length=5, target_length=3,
                                 image_size=8, frames=6, channels=3,
                                 target_space=4)
  rand = contract.example_batch(inp, out, 2, length=5, target_length=3,
                                image_size=8, frames=6, channels=3,
                                target_space=4, vocab_size=50,
                                num_classes=7, seed=0)
  want_inputs = {'text': ((2, 5), np.int32),
                 'image': ((2, 8, 8, 3), np.float32),
                 'audio': ((2, 6, contract.MEL_BINS, 3), np.float32)}[inp]
  want_targets = ((2,), np.int32) if out == 'class' else ((2, 3), np.int32)
  for batch in (const, rand):
    assert (batch['inputs'].shape, batch['inputs'].dtype) == want_inputs
    assert (batch['targets'].shape,
            batch['targets'].dtype) == want_targets
    assert ('inputs_mask' in batch) == (inp == 'audio')
    if out == 'text':
      np.testing.assert_array_equal(batch['target_space'], [4, 4])
    else:
      assert 'target_space' not in batch
  if out == 'text':
    assert rand['targets'].min() >= 3 and rand['targets'].max() < 50
  else:
    assert 0 <= rand['targets'].min() and rand['targets'].max() < 7
  again = contract.example_batch(inp, out, 2, length=5, target_length=3,
                                 image_size=8, frames=6, channels=3,
                                 target_space=4, vocab_size=50,
                                 num_classes=7, seed=0)
  for k in rand:
    np.testing.assert_array_equal(rand[k], again[k])


def test_example_batch_errors():
  with pytest.raises(ValueError, match="input modality 'video'"):
    contract.example_batch('video', 'text', 1)
  with pytest.raises(ValueError, match='vocab_size and num_classes'):
    contract.example_batch('text', 'text', 1, seed=0)


def test_the_pipeline_spec_gives_its_largest_batch():
  config = base.get_config('tiny')
  speech = plan.for_task(config, 'speech_en')
  batch = batching.example_batch(speech.spec, 3)
  assert batch['inputs'].shape == (
      3, config.data.audio_max_frames, contract.MEL_BINS, 1)
  assert batch['targets'].shape == (3, config.data.max_target_length)
  np.testing.assert_array_equal(batch['target_space'],
                                speech.spec.target_space)
  model_batch = mm_jax.dummy_batch(config.model, 'audio', 'text')
  assert model_batch['inputs'].shape[2:] == (contract.MEL_BINS, 1)


def test_the_model_reads_its_audio_channels_from_the_data_config():
  """One home: the channels follow config.data.audio_deltas; the model
  section has no key that could disagree with the data."""
  for key in ('pad_id', 'audio_mel_bins', 'audio_channels'):
    assert key not in base.get_config('tiny').model
  for deltas, channels in ((False, 1), (True, 3)):
    config = base.override(base.get_config('tiny'),
                           {'data.audio_deltas': deltas})
    model = mm_jax.create_model(config)
    assert model.audio_channels == channels
    speech = plan.for_task(config, 'speech_en')
    assert speech.spec.audio_channels == channels
    shapes = nn.unbox(mm_jax.abstract_variables(model))['params']
    first = shapes['audio']['res_0']['conv_0']['conv']
    assert first['depthwise'].shape == (3, 3, 1, channels)
    assert first['pointwise'].shape == (channels, 2)
