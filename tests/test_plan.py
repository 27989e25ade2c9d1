"""The task plan (mm_jax/data/plan.py): every per-task fact of a run, from
one place, and nothing else in the library recomputing it."""

import ast
import os

import jax
import pytest

from mm_jax import config as base
from mm_jax import sharding
from mm_jax.data import plan
from mm_jax.data import registry
from mm_jax.train import optim
from mm_jax.train import step as step_lib

joint8 = base.load_module('joint8')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_joint_tiny_plan():
  config = joint8.get_config('tiny')
  plans = plan.resolve(config)
  assert [p.name for p in plans] == sorted(base.PAPER_TASKS)
  by = plan.by_name(plans)
  imagenet, caption = by['imagenet'], by['caption_en']
  speech, parse = by['speech_en'], by['parse_en']
  assert (imagenet.mixture_weight, imagenet.loss_weight) == (5.0, 0.7)
  assert (imagenet.batch_size, imagenet.image_size) == (128, 32)
  assert imagenet.spec.target_space is None
  assert imagenet.signature == plan.Signature('image', 'class', 0.7)
  assert (caption.batch_size, caption.image_size) == (32, 64)
  assert caption.loss_weight == 0.1            # the tiny demo's caption weight
  assert speech.signature == plan.Signature('audio', 'text', 2.0)
  assert speech.spec.audio_channels == 1
  assert parse.spec.target_space == registry.TARGET_SPACES['parse']
  assert imagenet.local_batch_size(4) == 32
  with pytest.raises(ValueError, match='imagenet training batch.*3 proc'):
    imagenet.local_batch_size(3)


def test_weights_and_errors():
  config = base.override(joint8.get_config('tiny'), {
      'data.mixture.imagenet': 0.0, 'task_loss_weights.parse_en': 3.0,
      'data.batch_size_multiplier.parse_en': 2})
  names = [p.name for p in plan.resolve(config)]
  assert 'imagenet' not in names and len(names) == 7
  parse = plan.for_task(config, 'parse_en')
  assert (parse.loss_weight, parse.batch_size) == (3.0, 64)
  off = plan.for_task(config, 'imagenet')            # any task, weight 0 too
  assert off.mixture_weight == 0.0 and off.image_size == 32
  assert [p.name for p in plan.resolve(config, ['imagenet', 'parse_en'])] == [
      'parse_en']
  with pytest.raises(ValueError, match='weight 0'):
    plan.resolve(config, ['imagenet'])
  bad = config.copy_and_resolve_references()
  with bad.unlocked():
    bad.data.batch_size_multiplier.parse_en = 0
  with pytest.raises(ValueError, match='batch_size_multiplier.parse_en'):
    plan.resolve(bad)
  with bad.unlocked():
    bad.data.batch_size_multiplier.parse_en = 1
    del bad.task_loss_weights['parse_en']
  with pytest.raises(ValueError, match='task_loss_weights'):
    plan.resolve(bad)
  with bad.unlocked():
    bad.data.mixture.parse_en = -1.0
  with pytest.raises(ValueError, match=r'mixture\.parse_en=-1\.0'):
    plan.enabled_names(bad.data)


def test_the_step_takes_its_signature_from_the_plan():
  """A loss weight set in the config reaches the compiled step's
  signature; a task outside the plan is refused by name."""
  config = base.override(base.get_config('tiny'), {
      'task_loss_weights.translate_en_de': 1.5,
      'data.mixture': {t: float(t == 'translate_en_de')
                       for t in base.ALL_TASKS}})
  model = None                  # reading signatures needs no model
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  tx, _ = optim.make_optimizer(config.train, config.model.d_model)
  compiler = step_lib.StepCompiler(model, config, mesh, None, tx)
  assert compiler.signature('translate_en_de') == plan.Signature(
      'text', 'text', 1.5)
  with pytest.raises(ValueError, match="'imagenet' is not in"):
    compiler.signature('imagenet')


# Keys only the plan reads (config/validate.py checks their values and
# config/defaults.py sets them), and the mixture weights it alone compares.
_PLAN_KEYS = {'batch_size_multiplier', 'class_image_size',
              'task_loss_weights'}
_ALLOWED = {os.path.join('mm_jax', 'data', 'plan.py'),
            os.path.join('mm_jax', 'config', 'defaults.py'),
            os.path.join('mm_jax', 'config', 'validate.py')}


def _recomputations(path):
  """Lines of ``path`` that read a plan key or a mixture weight."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for parent in ast.walk(tree):
    for child in ast.iter_child_nodes(parent):
      child.parent = parent
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and node.attr in _PLAN_KEYS:
      yield node.lineno
    elif isinstance(node, ast.Attribute) and node.attr == 'mixture':
      parent = getattr(node, 'parent', None)
      if isinstance(parent, ast.Subscript) or (
          isinstance(parent, ast.Attribute) and parent.attr in (
              'items', 'values', 'get')):
        yield node.lineno


def test_no_other_module_recomputes_a_task_fact():
  found = []
  for root in ('mm_jax', 'launch'):
    for dirpath, _, files in os.walk(os.path.join(REPO, root)):
      for name in sorted(files):
        path = os.path.relpath(os.path.join(dirpath, name), REPO)
        if name.endswith('.py') and path not in _ALLOWED:
          found += [f'{path}:{n}' for n in _recomputations(
              os.path.join(REPO, path))]
  assert not found, ('Per-task facts are resolved in mm_jax/data/plan.py '
                     f'only; read them from its TaskPlan instead: {found}')


def test_the_recomputation_check_finds_one(tmp_path):
  path = tmp_path / 'x.py'
  path.write_text('a = [t for t, w in config.data.mixture.items() if w > 0]\n'
                  'b = config.task_loss_weights[t]\n'
                  'c = [t for t in config.data.mixture]\n')
  assert sorted(_recomputations(str(path))) == [1, 2]
