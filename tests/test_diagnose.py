"""The per-task diagnosis of a checkpoint (``mm_jax.experiments.diagnose``)."""

import numpy as np
import pytest

import conftest
from mm_jax import config as base
from mm_jax.experiments import diagnose
from mm_jax.train import loop

joint8 = base.load_module('joint8')


def test_group_of_splits_the_moe_from_its_stack():
  assert diagnose.group_of(('encoder', 'block_0', 'kernel')) == 'encoder'
  assert diagnose.group_of(('encoder', 'moe', 'wi')) == 'encoder/moe'
  assert diagnose.group_of(('decoder', 'moe', 'wi')) == 'decoder/moe'
  assert diagnose.group_of(('image', 'conv', 'kernel')) == 'image'


def test_adam_step_is_the_rms_of_g_over_sqrt_v():
  grads = {'encoder': {'k': np.array([3.0, 4.0])},
           'encoder_moe_free': {'k': np.array([1.0])},
           'decoder': {'moe': {'w': np.array([2.0, 0.0])}}}
  nu = {('encoder', 'k'): np.array([9.0, 64.0]),      # ratios 1, 0.5
        ('encoder_moe_free', 'k'): np.array([4.0]),
        ('decoder', 'moe', 'w'): np.array([1.0, 1.0])}  # ratios 2, 0
  steps = diagnose._adam_steps(grads, nu, eps=0.0)  # pylint: disable=protected-access
  assert steps['encoder'] == pytest.approx(np.sqrt((1 + 0.25) / 2))
  assert steps[diagnose.SHARED] == pytest.approx(np.sqrt((1 + 0.25) / 2))
  assert steps['decoder/moe'] == pytest.approx(np.sqrt(2.0))
  assert steps['encoder_moe_free'] == pytest.approx(0.5)


def test_stream_order_follows_the_encoder():
  names = ['encoder', 'encoder/block_2', 'encoder/moe', 'encoder/block_0',
           'encoder/block_1']
  order = sorted(names, key=lambda n: diagnose._stream_order(n, 2))  # pylint: disable=protected-access
  assert order == ['encoder/block_0', 'encoder/block_1', 'encoder/moe',
                   'encoder/block_2', 'encoder']


@pytest.mark.e2e
def test_diagnose_a_two_task_checkpoint(data, xla_cache, tmp_path):
  tasks = ('imagenet', 'parse_en')
  config = conftest.small_config(data, joint8.get_config('tiny'), {
      **{f'data.mixture.{t}': float(t in tasks)
         for t in joint8.get_config('tiny').data.mixture},
      'train.num_train_steps': 2, 'eval.splits': ()})
  loop.train_and_evaluate(config, str(tmp_path))
  result = diagnose.diagnose(str(tmp_path), batches=1)
  assert result['step'] == 2 and result['adam_count'] == 2
  assert list(result['tasks']) == list(tasks)
  image, parse = result['tasks']['imagenet'], result['tasks']['parse_en']
  assert 'decoder' not in image['group_norm']       # class output: no decoder
  assert 'image' in image['group_norm'] and 'language' in parse['group_norm']
  for r in (image, parse):
    assert r['adam_step'][diagnose.SHARED] > 0 and r['loss'] > 0
    assert list(r['rms'])[-1] == 'encoder'
    assert 0 <= r['clipped'] <= 1
  assert result['cosine']['imagenet']['imagenet'] == pytest.approx(1.0)
  assert result['cosine']['imagenet']['parse_en'] == pytest.approx(
      result['cosine']['parse_en']['imagenet'])
  load = result['moe']['encoder/moe']
  assert np.sum(load['imagenet']) == pytest.approx(1.0, abs=1e-5)
  text = diagnose.markdown(result)
  assert '**Expert load of `encoder/moe`**' in text
  assert '| imagenet |' in text
