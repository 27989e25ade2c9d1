"""Every experiment config builds (tiny and full size); full-size models
build abstractly; the command line rejects misspelt overrides."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import pytest

import mm_jax
from mm_jax import config as base
from mm_jax import sharding
from mm_jax.perf import tpu_topology

joint8 = base.load_module('joint8')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ('tiny', 'base', 'paper')
# Every config file and the args it takes; a new file must be listed here.
ARGS = {
    'base': [*SIZES, *(f'{s},single' for s in SIZES)],
    'joint8': list(SIZES) + [f'{s},{p}' for s, pods in
                             joint8.POD_MESHES.items() for p in pods],
    'single': [f'{t},{s}' for t in base.ALL_TASKS for s in SIZES] + [
        'parse_en'],
    'table3': [f'{v},{s}' for v in ('parse', 'parse+imagenet', 'all8')
               for s in SIZES] + ['all8'],
    'table4': [f'{v},{s}' for v in ('all', 'no_moe', 'no_attention')
               for s in SIZES] + ['no_moe'],
    'ladder': ['tiny_recipe', 'paper_recipe', 'base', 'paper_width'],
}


def _module(name):
  return base.load_module(name)


def test_every_config_file_is_listed():
  files = {f[:-3] for f in os.listdir(os.path.join(REPO, 'configs'))
           if f.endswith('.py') and f != '__init__.py'}
  assert files == set(ARGS)


@pytest.mark.parametrize('name,arg', [(n, a) for n, args in ARGS.items()
                                      for a in args])
def test_config_builds(name, arg):
  config = _module(name).get_config(arg)
  size = arg.split(',')[-1] if arg.split(',')[-1] in SIZES else 'tiny'
  if name in ('base', 'joint8'):
    size = arg.split(',')[0]
  if name == 'ladder':          # every rung trains the tiny suite
    size = {'base': 'base', 'paper_width': 'paper'}.get(arg, 'tiny')
    assert config.data.suite == 'tiny'
  else:
    assert config.data.suite == ('tiny' if size == 'tiny' else 'real')
  assert config.model.size == size
  enabled = [t for t, w in config.data.mixture.items() if w > 0]
  assert enabled and set(enabled) <= set(base.ALL_TASKS)
  with pytest.raises(AttributeError):       # locked: no new keys
    config.train.num_train_step = 1


def test_mixtures_and_switches():
  single = _module('single').get_config('speech_en,paper')
  assert {t for t, w in single.data.mixture.items() if w} == {'speech_en'}
  assert single.model.moe.num_experts == base.SIZES['paper']['experts_single']
  assert _module('joint8').get_config('paper').model.moe.num_experts == 120
  t3 = _module('table3')
  assert {t for t, w in t3.get_config('parse+imagenet').data.mixture.items()
          if w} == {'parse_en', 'imagenet'}
  # Every joint 8-task run mixes and weighs its losses alike: evenly and
  # T2T's weights at real sizes; the tiny demo gives ImageNet 5 of every 12
  # steps and captioning loss weight 0.1 (docs/experiments.md, "ImageNet in
  # the joint run").
  for size, weights, caption in (('base', 8.0, 1.0), ('tiny', 12.0, 0.1)):
    configs = [m.get_config(a) for m, a in (
        (_module('joint8'), size), (t3, f'all8,{size}'),
        (_module('table4'), f'no_moe,{size}'))]
    mixtures = [dict(c.data.mixture) for c in configs]
    losses = [dict(c.task_loss_weights) for c in configs]
    assert mixtures[0] == mixtures[1] == mixtures[2]
    assert losses[0] == losses[1] == losses[2]
    assert sum(mixtures[0].values()) == weights
    assert losses[0] == {**base.TASK_LOSS_WEIGHTS, 'caption_en': caption}
  # Single-task and the other Table 3 runs keep T2T's loss weights.
  assert dict(t3.get_config('parse+imagenet').task_loss_weights) == (
      base.TASK_LOSS_WEIGHTS)
  t4 = _module('table4')
  assert not t4.get_config('no_moe').model.use_moe
  assert not t4.get_config('no_attention').model.use_attention
  assert t4.get_config('all').model.use_moe


def test_tiny_imagenet_trains_at_32_px_on_4x_the_batch():
  """Every tiny config, single-task too: same images per ImageNet step cost,
  4x the images; captioning and the real sizes keep image_size and batch."""
  from mm_jax.data import plan
  for config in (_module('joint8').get_config('tiny'),
                 _module('single').get_config('imagenet')):
    imagenet = plan.for_task(config, 'imagenet')
    caption = plan.for_task(config, 'caption_en')
    assert (imagenet.image_size, imagenet.batch_size) == (32, 128)
    assert (caption.image_size, caption.batch_size) == (64, 32)
  imagenet = plan.for_task(_module('joint8').get_config('base'), 'imagenet')
  assert (imagenet.image_size, imagenet.batch_size) == (299, 256)


@pytest.mark.parametrize('size,pod', [(s, p) for s, pods in
                                      joint8.POD_MESHES.items()
                                      for p in pods])
def test_pod_mesh_plans_fit_their_slice(size, pod):
  """'<size>,<slice>' sets the planned mesh; it covers exactly the slice's
  chips, and the global batch and the experts divide over it."""
  config = joint8.get_config(f'{size},{pod}')
  plan = joint8.POD_MESHES[size][pod]
  assert config.mesh.preset == plan['preset']
  chips = tpu_topology.parse_topology(pod).num_chips
  shape = sharding.mesh_shape(config.mesh, chips)
  assert shape == (plan['data'], plan['expert'], 1)
  assert config.data.batch_size % (plan['data'] * plan['expert']) == 0
  assert config.model.moe.num_experts % plan['expert'] == 0
  assert dict(config.data.mixture) == dict(joint8.get_config(size)
                                           .data.mixture)
  with pytest.raises(ValueError, match='devices'):   # another slice size
    sharding.mesh_shape(config.mesh, 2 * chips)


@pytest.mark.parametrize('arg', ['tiny,v5p-64', 'paper,v5p-8', 'paper,x,y'])
def test_unknown_pod_plans_list_the_choices(arg):
  with pytest.raises(ValueError, match='one of'):
    joint8.get_config(arg)


@pytest.mark.parametrize('name,arg', [('joint8', 'bogus'), ('single', 'x'),
                                      ('single', 'parse_en,huge'),
                                      ('table3', 'parse,tiny,extra'),
                                      ('table4', None)])
def test_unknown_args_list_the_choices(name, arg):
  with pytest.raises(ValueError, match='choose one of|one of'):
    _module(name).get_config(arg)


@pytest.mark.parametrize('name,arg', [('joint8', 'paper'),
                                      ('single', 'imagenet,paper'),
                                      ('table4', 'no_moe,paper'),
                                      ('table4', 'no_attention,paper')])
def test_full_size_models_build_abstractly(name, arg):
  config = _module(name).get_config(arg)
  shapes = mm_jax.abstract_variables(mm_jax.create_model(config))
  leaves = jax.tree.leaves(nn.unbox(shapes['params']))
  assert all(x.dtype == 'float32' for x in leaves)
  assert mm_jax.param_count(shapes) > 50_000_000
  moe = [x for x in jax.tree.leaves(nn.unbox(shapes['params']['encoder']))
         if x.shape and x.shape[0] == config.model.moe.num_experts]
  assert bool(moe) == config.model.use_moe


@pytest.mark.e2e
def test_misspelt_override_names_the_key(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch', 'train.py'),
       '--config=configs/joint8.py:tiny', '--config.train.num_train_step=5',
       f'--workdir={tmp_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode != 0
  assert 'num_train_step' in result.stderr
  assert not os.listdir(tmp_path)
