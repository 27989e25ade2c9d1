"""Tests for the train/eval steps, the sharded state and the StepCompiler.

Losses are checked on hand examples. The step runs on a small MultiModel
(d 32, one short ConvBlock each side of each MoE, 4 experts, vocabulary 64)
on 8 fake CPU devices: a 1-device mesh and the 'dp' / 'dp+ep' meshes give the
same loss and gradients, expert weights are sharded and the expert-parallel
step contains an all-to-all. Compiled steps are shared through module-scoped
fixtures; XLA compiles at a low optimisation level to save CPU time.
"""

import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mm_jax import config as base
import mm_jax
from mm_jax import sharding
from mm_jax.eval import sums as sums_lib
from mm_jax.model import factory
from mm_jax.model import losses
from mm_jax.train import optim
from mm_jax.train import state as state_lib
from mm_jax.train import step as step_lib

P = jax.sharding.PartitionSpec
FAST = {'xla_backend_optimization_level': 0,
        'xla_llvm_disable_expensive_passes': True}
SGD = optax.sgd(1.0)      # new params = params - grads: exposes the gradients
TASK = 'translate_en_de'


# ------------------------------------------------------------------ losses --

def test_label_smoothing_by_hand():
  # Uniform logits over V = 4: NLL = ln 4. Soft target (0.9, 0.1/3 x 3) has
  # entropy H = -(0.9 ln 0.9 + 0.1 ln(0.1 / 3)) = 0.0948245 + 0.3401197;
  # T2T's smoothed loss = cross-entropy - H = ln 4 - H = 0.9513501.
  logits = jnp.zeros((1, 4))
  targets = jnp.array([2])
  weights = jnp.ones((1,))
  loss, nll, n = losses.cross_entropy(logits, targets, weights, 0.1)
  np.testing.assert_allclose(nll, np.log(4.0), rtol=1e-6)
  np.testing.assert_allclose(loss, 0.9513501, rtol=1e-6)
  assert float(n) == 1.0
  # Logits equal to the log soft target: a perfect fit has loss 0.
  soft = np.array([[0.1 / 3, 0.1 / 3, 0.9, 0.1 / 3]], np.float32)
  loss, nll, _ = losses.cross_entropy(jnp.log(soft), targets, weights, 0.1)
  np.testing.assert_allclose(loss, 0.0, atol=1e-6)
  np.testing.assert_allclose(nll, -np.log(0.9), rtol=1e-6)
  # No smoothing: loss == NLL.
  loss, nll, _ = losses.cross_entropy(jnp.log(soft), targets, weights, 0.0)
  np.testing.assert_allclose(loss, nll)


def test_padding_weights_and_counts():
  targets = jnp.array([[5, 3, 1, 0], [4, 1, 0, 0]])
  w = losses.target_weights(targets)
  np.testing.assert_array_equal(w, [[1, 1, 1, 0], [1, 1, 0, 0]])
  w_masked = losses.target_weights(targets, jnp.array([True, False]))
  np.testing.assert_array_equal(w_masked, [[1, 1, 1, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(
      losses.target_weights(jnp.array([3, 0]), jnp.array([True, False])),
      [1, 0])   # class targets: 0 is a class, not padding
  # Padding positions change nothing, whatever their logits.
  rng = np.random.RandomState(0)
  logits = rng.randn(2, 4, 8).astype(np.float32)
  other = logits.copy()
  other[0, 3] = 100.0
  other[1, 2:] = -100.0
  for lg in (logits, other):
    out = losses.cross_entropy(jnp.asarray(lg), targets, w, 0.1)
    np.testing.assert_allclose(out, losses.cross_entropy(
        jnp.asarray(logits), targets, w, 0.1), rtol=1e-6)
  # Counts: row 0 right everywhere it counts, row 1 wrong at position 1.
  logits = np.zeros((2, 4, 8), np.float32)
  for b, t in np.ndindex(2, 4):
    logits[b, t, int(targets[b, t])] = 1.0
  logits[1, 1, 7] = 2.0          # target 1 now ranks second
  counts = losses.correct_counts(jnp.asarray(logits), targets, w)
  assert float(counts['token_correct']) == 4.0
  assert float(counts['top5_correct']) == 5.0
  assert float(counts['sequence_correct']) == 1.0
  with pytest.raises(ValueError, match='example_mask shape'):
    losses.target_weights(targets, jnp.array([True]))


def test_split_metrics_and_moe_stats():
  collection = {'encoder': {'moe': {'aux_loss': (jnp.array(1.0),
                                                 jnp.array(2.0)),
                                    'expert_load': (jnp.array([0.5, 0.5]),)}}}
  stats = step_lib.moe_stats(collection)
  assert float(stats['encoder/moe']['aux_loss']) == 3.0   # summed
  scalars, hists = step_lib.split_metrics(
      {'loss': 1.0, 'moe_load/encoder/moe': np.ones(4)})
  assert list(scalars) == ['loss'] and list(hists) == ['moe_load/encoder/moe']


# ------------------------------------------------------------ small model --

def _config(preset='dp', data=-1, expert=1):
  config = base.get_config('tiny')
  m = config.model
  m.d_model, m.num_heads, m.vocab_size, m.num_classes = 32, 2, 64, 10
  m.num_encoder_blocks_before_moe = m.num_encoder_blocks_after_moe = 1
  m.num_decoder_blocks_before_moe = m.num_decoder_blocks_after_moe = 1
  m.encoder_conv = m.decoder_conv = ((3, 1), (5, 1))
  m.image_entry_filters = (8, 8, 16, 16)
  m.moe.num_experts, m.moe.hidden = 4, 32
  m.moe.group_size = 8        # one group per sequence: 8 groups shard 8 ways
  config.data.image_size = 16
  config.train.learning_rate, config.train.warmup_steps = 0.05, 1
  config.mesh.preset = preset
  config.mesh.shape.data, config.mesh.shape.expert = data, expert
  return config


def _text_batch(batch=8, length=8, seed=0):
  rng = np.random.RandomState(seed)
  out = {}
  for key in ('inputs', 'targets'):
    ids = rng.randint(2, 64, (batch, length)).astype(np.int32)
    ends = rng.randint(length // 2, length, batch)
    for b, e in enumerate(ends):
      ids[b, e] = 1                                   # EOS
      ids[b, e + 1:] = 0                              # padding
    out[key] = ids
  out['target_space'] = np.ones((batch,), np.int32)
  return out


def _need8():
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (tests/conftest.py fakes 8 CPU devices)')


@pytest.fixture(scope='module')
def ep():
  """Config, model and a state created sharded on the (data 2, expert 4)
  mesh with 'dp+ep' and the real optimiser; ``host`` is a host copy."""
  _need8()
  config = _config('dp+ep', data=2, expert=4)
  model = mm_jax.create_model(config)
  mesh = sharding.make_mesh(config.mesh)
  tx, schedule = optim.make_optimizer(config.train, config.model.d_model)
  state, shardings = state_lib.create_train_state(
      config, model, mesh, tx, compiler_options=FAST)
  return dict(config=config, model=model, mesh=mesh, tx=tx,
              schedule=schedule, state=state, shardings=shardings,
              host=jax.device_get(state))


def test_state_is_created_sharded(ep):
  state, shardings = ep['state'], ep['shardings']
  wi = state.params['encoder']['moe']['wi']
  assert wi.shape == (4, 32, 32)
  assert wi.sharding.spec == P('expert', None, None)
  assert {s.data.shape for s in wi.addressable_shards} == {(1, 32, 32)}
  mu = state.opt_state[1].mu['encoder']['moe']['wi']   # Adam moment
  assert mu.sharding.spec == P('expert', None, None)
  assert state.params['language']['softmax'].sharding.spec == P(None, None)
  assert int(state.step) == 0 and state.step.dtype == jnp.int32
  assert state.rng.dtype == jnp.uint32
  abstract = state_lib.abstract_train_state(ep['config'], ep['model'],
                                            ep['mesh'], ep['tx'])
  for a, x in zip(jax.tree.leaves(abstract), jax.tree.leaves(state)):
    assert (a.shape, a.dtype, a.sharding) == (x.shape, x.dtype, x.sharding)
  assert 'image' in state.params and 'class_output' in state.params


# Modules on the text -> text path: the equivalence steps train only these
# (a smaller parameter tree compiles faster; the step is generic in it).
TEXT_MODULES = ('language', 'task_token', 'encoder', 'mixer', 'decoder')


def _sgd_step(config, model, params, mesh):
  """One train step with SGD(1) on ``mesh`` -> (metrics, grads, compiler,
  new state); ``params`` is a host tree of the text-path modules."""
  specs = nn.get_partition_spec(jax.eval_shape(
      functools.partial(factory.init_variables, model,
                        paths=(('text', 'text'),)), jax.random.key(0)))
  rules = sharding.param_rules(config.mesh)
  rep = sharding.replicated(mesh)
  state = state_lib.TrainState(
      step=np.int32(0), params=params, opt_state=SGD.init(params),
      rng=jax.random.key_data(jax.random.key(7)))
  shardings = state_lib.TrainState(
      step=rep, params=sharding.logical_to_sharding(specs['params'], mesh,
                                                    rules),
      opt_state=jax.tree.map(lambda _: rep, state.opt_state), rng=rep)
  state = jax.device_put(state, shardings)
  compiler = step_lib.StepCompiler(model, config, mesh, shardings, SGD,
                                   compiler_options=FAST)
  new, metrics = compiler.train(state, TASK, _text_batch())
  grads = jax.tree.map(lambda a, b: a - b, params,
                       jax.device_get(new.params))
  return jax.device_get(metrics), grads, compiler, new


@pytest.fixture(scope='module')
def text_params(ep):
  return {k: ep['host'].params[k] for k in TEXT_MODULES}


@pytest.fixture(scope='module')
def one_device(ep, text_params):
  config = _config('dp', data=1)
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  return _sgd_step(config, ep['model'], text_params, mesh)


@pytest.mark.parametrize('preset, data, expert', [
    ('dp', 8, 1), ('dp+ep', 2, 4),
    pytest.param('fsdp+ep', 2, 4, marks=pytest.mark.slow)])
def test_mesh_step_matches_one_device(ep, text_params, one_device, preset,
                                      data, expert):
  config = _config(preset, data=data, expert=expert)
  mesh = sharding.make_mesh(config.mesh)
  metrics, grads, compiler, new = _sgd_step(config, ep['model'], text_params,
                                            mesh)
  want_metrics, want_grads = one_device[0], one_device[1]
  for k in ('loss', f'{TASK}/loss', 'moe/aux_loss', 'grad_norm'):
    np.testing.assert_allclose(metrics[k], want_metrics[k], rtol=1e-5,
                               err_msg=k)
  flat = jax.tree_util.tree_leaves_with_path(grads)
  for (path, g), w in zip(flat, jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))
  assert float(metrics['grad_norm']) > 0.1
  wi = new.params['decoder']['moe']['wi']
  hlo = next(iter(compiler.executables.values())).as_text()
  emb = new.params['language']['input_embedding']
  if preset == 'dp':
    assert wi.sharding.spec == P(None, None, None)
  elif preset == 'dp+ep':
    assert wi.sharding.spec == P('expert', None, None)
  else:   # fsdp+ep: 'embed' of parameters over 'data' as well
    assert wi.sharding.spec == P('expert', 'data', None)
    assert emb.sharding.spec == P(None, 'data')
  if preset != 'dp':
    assert 'all-to-all' in hlo


@pytest.fixture(scope='module')
def trained(ep):
  """Adam steps on the state made by create_train_state ('dp+ep' mesh): six
  steps of one batch, then one of another task with the same signature."""
  compiler = step_lib.StepCompiler(ep['model'], ep['config'], ep['mesh'],
                                   ep['shardings'], ep['tx'], ep['schedule'],
                                   compiler_options=FAST)
  state = jax.device_put(ep['host'], ep['shardings'])
  first, batch, history = state, _text_batch(), []
  for _ in range(6):
    state, metrics = compiler.train(state, TASK, batch)
    history.append(jax.device_get(metrics))
  state, other = compiler.train(state, 'translate_de_en', batch)
  return dict(compiler=compiler, state=state, first=first, history=history,
              other=jax.device_get(other))


def test_train_step_learns_and_counts_steps(ep, trained):
  history = trained['history']
  loss = [float(m['loss']) for m in history]
  assert loss[-1] < loss[0] - 0.3, loss
  assert int(trained['state'].step) == 7
  m = history[0]
  for k in ('loss', f'{TASK}/loss', f'{TASK}/nll', f'{TASK}/token_accuracy',
            'moe/aux_loss', 'moe/drop_fraction', 'grad_norm', 'param_norm',
            'update_norm', 'learning_rate'):
    assert np.ndim(m[k]) == 0 and np.isfinite(m[k]), k
  assert float(m[f'{TASK}/nll']) > float(m[f'{TASK}/loss'])  # smoothing KL
  np.testing.assert_allclose(m['learning_rate'], ep['schedule'](0))
  np.testing.assert_allclose(history[3]['learning_rate'], ep['schedule'](3))
  load = m['moe_load/encoder/moe']
  assert load.shape == (4,)
  np.testing.assert_allclose(load.sum(), 1.0, rtol=1e-5)
  assert 'moe_load/decoder/moe' in m
  # translate_de_en shares the executable but reports under its own name.
  assert len(trained['compiler'].compilations) == 1
  assert 'translate_de_en/loss' in trained['other']
  assert 'task/loss' not in trained['other']


def test_state_is_donated(trained):
  leaf = trained['first'].params['encoder']['moe']['wi']
  assert leaf.is_deleted()
  new_leaf = trained['state'].params['encoder']['moe']['wi']
  assert np.all(np.isfinite(np.asarray(new_leaf)))


def test_compiles_once_per_signature_and_bucket(one_device, caplog):
  compiler, state = one_device[2], one_device[3]
  assert len(compiler.compilations) == 1              # the first step
  counts = []
  with caplog.at_level(logging.INFO):
    for task, length in [(TASK, 8), ('translate_de_en', 8), (TASK, 16),
                         (TASK, 16), (TASK, 8)]:
      state, _ = compiler.train(state, task, _text_batch(length=length))
      counts.append(len(compiler.compilations))
  assert counts == [1, 1, 2, 2, 2]
  assert int(state.step) == 6
  second = compiler.compilations[1]
  assert second['task'] == TASK and second['seconds'] > 0
  assert ('targets', (8, 16), 'int32') in second['shapes']
  logged = [r.getMessage() for r in caplog.records
            if 'Compiled the train step' in r.getMessage()]
  assert len(logged) == 1 and 'targets int32[8, 16]' in logged[0]


def test_eval_step_ignores_padding_examples(ep, trained):
  compiler = trained['compiler']
  params = trained['state'].params
  real = _text_batch(seed=3)
  mask = np.array([True] * 5 + [False] * 3)
  a = dict(real, example_mask=mask, references=[['x']] * 8)
  b = {k: v.copy() for k, v in a.items() if k != 'references'}
  junk = _text_batch(seed=4)
  for key in ('inputs', 'targets'):
    b[key][5:] = junk[key][5:]
  sums_a = jax.device_get(compiler.eval(params, TASK, a))
  sums_b = jax.device_get(compiler.eval(params, TASK, b))
  assert len(compiler.compilations) == 2          # one eval compilation
  for k in sums_a:
    np.testing.assert_allclose(sums_a[k], sums_b[k], rtol=1e-5, err_msg=k)
  assert sorted(sums_a) == sorted(sums_lib.SUMS)      # what sums.py documents
  assert float(sums_a['examples']) == 5.0
  assert float(sums_a['tokens']) == float(np.sum(real['targets'][:5] != 0))
  assert 0 <= float(sums_a['top1_correct']) <= float(sums_a['top5_correct'])
  assert float(sums_a['top5_correct']) <= float(sums_a['tokens'])
  assert float(sums_a['sequence_correct']) <= 5.0
  assert float(sums_a['loss_sum']) > 0


def test_batch_that_does_not_divide_the_mesh_names_the_fix(trained):
  with pytest.raises(ValueError, match='config.data.batch_size'):
    trained['compiler'].device_batch(_text_batch(batch=6))


def test_sharding_that_does_not_divide_names_the_parameter():
  _need8()
  config = _config('dp+ep', data=1, expert=8)     # 4 experts on 8 shards
  mesh = sharding.make_mesh(config.mesh)
  with pytest.raises(ValueError, match=r"\['moe'\]\['w_gate'\] has shape "
                     r'\(32, 4\).*does not divide'):
    state_lib.state_shardings(config, mm_jax.create_model(config), mesh, SGD)
