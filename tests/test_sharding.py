"""Tests for mm_jax.sharding: mesh from config, rule presets, resolution."""

import flax.linen as nn
import jax
import pytest

from mm_jax import config as base
from mm_jax import sharding

P = jax.sharding.PartitionSpec


def _mesh_cfg(data=-1, expert=1, model=1, preset='dp', rules=()):
  m = base.get_config('tiny').mesh
  m.shape.data, m.shape.expert, m.shape.model = data, expert, model
  m.preset, m.rules = preset, rules
  return m


def _need8():
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (tests/conftest.py fakes 8 CPU devices)')


def test_mesh_fills_minus_one_with_the_rest():
  _need8()
  mesh = sharding.make_mesh(_mesh_cfg(data=-1, expert=4))
  assert mesh.axis_names == ('data', 'expert', 'model')
  assert dict(mesh.shape) == {'data': 2, 'expert': 4, 'model': 1}
  assert sharding.mesh_shape(_mesh_cfg(data=2, expert=-1, model=2), 8) == (
      2, 2, 2)


def test_mesh_on_given_devices_keeps_their_order():
  _need8()
  devices = jax.devices()[:4][::-1]
  mesh = sharding.make_mesh(_mesh_cfg(data=2, expert=2), devices=devices)
  assert list(mesh.devices.flat) == devices
  one = sharding.make_mesh(_mesh_cfg(), devices=jax.devices()[:1])
  assert dict(one.shape) == {'data': 1, 'expert': 1, 'model': 1}


@pytest.mark.parametrize('shape, match', [
    ((3, 1, 1), 'needs 3 devices'),
    ((-1, 3, 1), 'do not divide'),
    ((-1, -1, 1), 'more than one -1'),
    ((0, 1, 1), 'positive'),
])
def test_mesh_shape_errors_name_the_problem(shape, match):
  with pytest.raises(ValueError, match=match):
    sharding.mesh_shape(_mesh_cfg(*shape), 8)


def test_presets_and_custom_rules():
  assert sharding.rules(_mesh_cfg(preset='dp')) == (('batch', 'data'),)
  ep = sharding.rules(_mesh_cfg(preset='dp+ep'))
  # The order matters (see module docstring): expert first, then batch over
  # both axes, then the fallback batch -> data.
  assert ep[:3] == (('expert', 'expert'), ('batch', ('data', 'expert')),
                    ('batch', 'data'))
  custom = sharding.rules(_mesh_cfg(
      preset='custom', rules=(('batch', 'data'), ('mlp', 'model'),
                              ('heads', None))))
  assert custom == (('batch', 'data'), ('mlp', 'model'), ('heads', None))


@pytest.mark.parametrize('preset, rules, match', [
    ('zero', (), 'Unknown config.mesh.preset'),
    ('custom', (), 'rules is empty'),
    ('custom', (('batch', 'pod'),), "mesh axes \\['pod'\\]"),
    ('custom', (('tokens', 'data'),), "unknown logical axis 'tokens'"),
])
def test_rule_errors_name_the_problem(preset, rules, match):
  with pytest.raises(ValueError, match=match):
    sharding.rules(_mesh_cfg(preset=preset, rules=rules))


def test_resolve_matches_flax_and_handles_repeated_names():
  ep = sharding.param_rules(_mesh_cfg(preset='fsdp+ep'))
  for names in [('batch', 'length', 'embed'), ('expert', 'batch', 'capacity',
                                               'embed'),
                ('expert', 'embed', 'mlp'), ('embed', 'expert'), ('vocab',),
                ('batch', None, 'capacity', 'embed')]:
    assert sharding.resolve(names, ep) == nn.logical_to_mesh_axes(names, ep)
  # [E, G, C, D]: E takes 'expert', so G falls back to 'data' (all-to-all).
  assert sharding.resolve(('expert', 'batch', 'capacity', 'embed'), ep) == P(
      'expert', 'data', None, None)
  # Flax raises on repeated names; the second 'embed' stays unsharded here.
  assert sharding.resolve(('embed', 'embed'), ep) == P('data', None)
  assert sharding.resolve(('kernel', 'kernel', None, 'channels'), ep) == P(
      None, None, None, None)


def test_logical_to_sharding_and_batch_sharding():
  _need8()
  mesh = sharding.make_mesh(_mesh_cfg(data=2, expert=4))
  rules = sharding.rules(_mesh_cfg(preset='dp+ep'))
  tree = {'wi': P('expert', 'embed', 'mlp'), 'norm': P('embed'), 'count': P()}
  out = sharding.logical_to_sharding(tree, mesh, rules)
  assert out['wi'].spec == P('expert', None, None)
  assert out['norm'].spec == P(None)
  assert out['count'].spec == P()
  assert out['wi'].mesh == mesh
  assert sharding.batch_sharding(mesh, rules, 3).spec == P(
      ('data', 'expert'), None, None)
  assert sharding.batch_shards(mesh, rules) == 8
  dp = sharding.rules(_mesh_cfg(preset='dp'))
  assert sharding.batch_shards(mesh, dp) == 2
  with pytest.raises(ValueError, match='batch dimension'):
    sharding.batch_sharding(mesh, rules, 0)


def test_fsdp_stores_embed_over_data_and_computes_without_it():
  _need8()
  fsdp = _mesh_cfg(preset='fsdp+ep')
  assert sharding.rules(fsdp) == sharding.rules(_mesh_cfg(preset='dp+ep'))
  assert sharding.param_rules(fsdp) == sharding.rules(fsdp) + (
      ('embed', 'data'),)
  assert sharding.storage_only_axes(fsdp) == ('data',)
  assert sharding.storage_only_axes(_mesh_cfg(preset='dp+ep')) == ()
  assert sharding.param_rules(_mesh_cfg(preset='dp')) == (('batch', 'data'),)
  mesh = sharding.make_mesh(_mesh_cfg(data=2, expert=4))
  named = jax.sharding.NamedSharding
  tree = {'wi': named(mesh, P('expert', 'data', None)),
          'both': named(mesh, P(('data', 'expert'))), 'rep': named(mesh, P())}
  out = sharding.without_axes(tree, ('data',))
  assert out['wi'].spec == P('expert', None, None)
  assert out['both'].spec == P('expert')
  assert out['rep'].spec == P()
