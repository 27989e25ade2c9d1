"""Tests for mm_jax/config/validate.py: bad config values fail at once, naming the
key and the allowed range (8 fake CPU devices, see conftest.py)."""

import jax
import pytest

from mm_jax import config as base
from mm_jax.config import validate

joint8 = base.load_module('joint8')
single = base.load_module('single')
table3 = base.load_module('table3')
table4 = base.load_module('table4')


def _config(overrides):
  return base.override(joint8.get_config('tiny'), overrides)


@pytest.mark.parametrize('get_config,arg', [
    (base.get_config, 'tiny'), (base.get_config, 'base'),
    (base.get_config, 'paper'), (joint8.get_config, 'tiny'),
    (joint8.get_config, 'paper'), (single.get_config, 'parse_en,tiny'),
    (single.get_config, 'imagenet,base'), (table3.get_config, 'all8'),
    (table4.get_config, 'no_moe,base')])
def test_shipped_configs_pass(get_config, arg):
  validate.check_config(get_config(arg))


@pytest.mark.parametrize('overrides,match', [
    ({'train.eval_every': -1}, r'config\.train\.eval_every=-1: must be an '
     r'integer >= 0 \(0: only at the end\)'),
    ({'train.log_every': -5}, r'config\.train\.log_every=-5: .*>= 0'),
    ({'train.checkpoint_every': -1}, r'config\.train\.checkpoint_every=-1'),
    ({'train.num_train_steps': -1}, r'config\.train\.num_train_steps=-1'),
    ({'train.keep_checkpoints': 0}, r'config\.train\.keep_checkpoints=0: '
     'must be an integer >= 1'),
    ({'data.batch_size': 0}, r'config\.data\.batch_size=0: .*>= 1'),
    ({'eval.batch_size': -8}, r'config\.eval\.batch_size=-8'),
    ({'eval.beam_size': 0}, r'config\.eval\.beam_size=0'),
    ({'data.batch_size_multiplier.imagenet': 0},
     r'config\.data\.batch_size_multiplier\.imagenet=0: .*>= 1'),
    ({'data.max_input_length': 0}, r'config\.data\.max_input_length=0'),
    ({'data.audio_max_frames': -1}, r'config\.data\.audio_max_frames=-1'),
    ({'data.length_buckets': (32, 16)}, r'config\.data\.length_buckets='
     r'\(32, 16\): must be positive integers in strictly ascending order'),
    ({'data.length_buckets': (0, 16)}, r'config\.data\.length_buckets'),
    ({'data.length_buckets': (16, 16)}, r'config\.data\.length_buckets'),
    ({'data.length_buckets': (16, 128)}, r'config\.data\.length_buckets=\(16,'
     r' 128\): buckets must be <= config\.data\.max_input_length or '
     r'data\.max_target_length \(64\)'),
    ({'data.audio_frame_buckets': (400, 1600)},
     r'config\.data\.audio_frame_buckets=.*<= config\.data\.audio_max_frames'
     r' \(800\)'),
    ({'data.mixture.imagenet': -1.0}, r'config\.data\.mixture\.imagenet=-1\.0'
     r': must be a number >= 0'),
    ({f'data.mixture.{t}': 0.0 for t in base.ALL_TASKS},
     r'config\.data\.mixture: every weight is 0'),
    ({'task_loss_weights.speech_en': -2.0},
     r'config\.task_loss_weights\.speech_en=-2\.0'),
    ({'mesh.shape.data': 3}, r"config\.mesh\.shape=\{'data': 3, 'expert': 1, "
     r"'model': 1\}: needs 3 devices, but jax\.device_count\(\) is 8"),
    ({'mesh.shape.data': 0}, r'config\.mesh\.shape=.*integer >= 1, or -1'),
    ({'mesh.shape.expert': -1}, r'config\.mesh\.shape=.*-1 may appear once'),
    ({'mesh.shape.expert': 3}, r'config\.mesh\.shape=.*multiple of 3 '
     r'devices, but jax\.device_count\(\) is 8'),
])
def test_bad_values_name_the_key_and_range(overrides, match):
  assert jax.device_count() == 8
  with pytest.raises(ValueError, match=match):
    validate.check_config(_config(overrides))


def test_every_problem_is_reported_at_once():
  config = _config({'train.eval_every': -1, 'data.batch_size': 0,
                    'mesh.shape.data': 5})
  with pytest.raises(ValueError, match='^3 bad config values:') as error:
    validate.check_config(config)
  assert len(str(error.value).splitlines()) == 4


def test_zero_cadences_are_allowed():
  validate.check_config(_config({'train.eval_every': 0,
                                 'train.log_every': 0,
                                 'train.checkpoint_every': 0}))
