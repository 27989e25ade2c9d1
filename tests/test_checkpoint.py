"""Tests for mm_jax/train/checkpoint.py on a small fake TrainState sharded
over 8 fake CPU devices."""

import gc
import glob
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import types
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mm_jax.train import checkpoint

VOCAB_SHA = 'a' * 64


@flax.struct.dataclass
class FakeState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def _mesh():
  return jax.make_mesh((8,), ('data',))


def _make_state(seed, step=0, kernel_shape=(8, 4)):
  sharded = jax.NamedSharding(_mesh(), jax.P('data'))
  keys = jax.random.split(jax.random.key(seed), 3)
  params = {'dense': {
      'kernel': jax.device_put(jax.random.normal(keys[0], kernel_shape),
                               sharded),
      'bias': jax.random.normal(keys[1], (kernel_shape[1],))}}
  opt_state = optax.adam(1e-3).init(params)
  return FakeState(step=jnp.int32(step), params=params, opt_state=opt_state,
                   rng=jax.random.key_data(keys[2]))


def _abstract(state):
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
      state)


def _meta(sha=VOCAB_SHA):
  return {'vocab_path': '/data/vocab/spm.model', 'vocab_sha256': sha,
          'config': {'seed': 0}, 'mm_jax_version': '0.1.0'}


def _assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(
      np.asarray(x), np.asarray(y)), a, b)


def test_save_restore_roundtrip(tmp_path):
  state = _make_state(0, step=5)
  with checkpoint.Checkpointer(str(tmp_path), keep=3, every=5) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(5, state, {'position': 17}, _meta())
    ckpt.wait()
    assert ckpt.latest_step() == 5
    restored, data_state, meta = ckpt.restore(None, _abstract(state))
  assert isinstance(restored, FakeState)
  _assert_trees_equal(restored, state)
  assert int(restored.step) == 5
  np.testing.assert_array_equal(restored.rng, state.rng)
  kernel = restored.params['dense']['kernel']
  assert kernel.sharding == state.params['dense']['kernel'].sharding
  assert kernel.sharding.spec == jax.P('data')
  assert data_state == {'position': 17}
  assert meta['vocab_sha256'] == VOCAB_SHA and meta['step'] == 5
  assert abs(meta['wall_time'] - time.time()) < 60
  assert meta['config'] == {'seed': 0}


def test_keep_every_and_force(tmp_path):
  state = _make_state(0)
  with checkpoint.Checkpointer(str(tmp_path), keep=2, every=2) as ckpt:
    saved = [ckpt.save(s, state, None, _meta()) for s in range(1, 7)]
    assert saved == [False, True, False, True, False, True]
    ckpt.wait()
    assert ckpt.all_steps() == [4, 6]
    assert not ckpt.save(6, state, None, _meta(), force=True)   # exists
    assert not ckpt.save(5, state, None, _meta(), force=True)   # older
    assert ckpt.save(7, state, None, _meta(), force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [6, 7]
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['6', '7']


def test_async_save_then_wait(tmp_path):
  state = _make_state(1, step=3)
  expected = jax.device_get(state)
  abstract = _abstract(state)
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, every=1,
                                 async_save=True)
  assert ckpt.save(3, state, {'a': [1, 2]}, _meta())
  # The loop donates the state to the next step right after save returns.
  jax.tree.map(lambda a: a.delete(), state)
  ckpt.wait()
  assert ckpt.latest_step() == 3
  assert os.listdir(tmp_path / 'checkpoints') == ['3']
  ckpt.close()
  # A fresh manager (a restarted run) sees the same checkpoint.
  with checkpoint.Checkpointer(str(tmp_path), keep=2, every=1) as again:
    restored, data_state, _ = again.restore(3, abstract)
  _assert_trees_equal(restored, expected)
  assert data_state == {'a': [1, 2]}


def test_partial_checkpoint_is_ignored(tmp_path):
  state = _make_state(2, step=2)
  with checkpoint.Checkpointer(str(tmp_path), keep=3, every=1) as ckpt:
    ckpt.save(2, state, None, _meta())
  root = tmp_path / 'checkpoints'
  # A save killed mid-write (orbax's temporary name) and a directory
  # without orbax's commit marker (e.g. an interrupted copy).
  os.makedirs(root / '7.orbax-checkpoint-tmp-1234' / 'state')
  os.makedirs(root / '9' / 'state')
  with checkpoint.Checkpointer(str(tmp_path), keep=3, every=1) as ckpt:
    assert ckpt.latest_step() == 2
    assert ckpt.all_steps() == [2]
    out = ckpt.restore_or_init(_abstract(state), lambda: _make_state(5),
                               vocab_sha256=VOCAB_SHA)
    assert out.source == 'workdir' and int(out.state.step) == 2
    with pytest.raises(FileExistsError, match='not a finalised'):
      ckpt.save(9, state, None, _meta(), force=True)


def test_precedence_workdir_init_from_scratch(tmp_path):
  run_a, run_b = str(tmp_path / 'a'), str(tmp_path / 'b')
  trained = _make_state(0, step=50)
  with checkpoint.Checkpointer(run_a, keep=1, every=1) as ckpt:
    ckpt.save(50, trained, None, _meta())
  fresh = _make_state(7)
  abstract = _abstract(fresh)
  with checkpoint.Checkpointer(run_b, keep=1, every=1) as ckpt:
    scratch = ckpt.restore_or_init(abstract, lambda: fresh,
                                   vocab_sha256=VOCAB_SHA)
    assert scratch.source == 'scratch' and scratch.state is fresh
    for init_from in (run_a, os.path.join(run_a, 'checkpoints'),
                      os.path.join(run_a, 'checkpoints', '50')):
      out = ckpt.restore_or_init(abstract, lambda: fresh, init_from=init_from,
                                 vocab_sha256=VOCAB_SHA)
      assert out.source == 'init_from', init_from
      _assert_trees_equal(out.state.params, trained.params)
      kernel = out.state.params['dense']['kernel']
      assert kernel.sharding.spec == jax.P('data')
      # Optimiser, step and rng are the fresh ones.
      assert int(out.state.step) == 0
      _assert_trees_equal(out.state.opt_state, fresh.opt_state)
      np.testing.assert_array_equal(out.state.rng, fresh.rng)
      assert out.data_state is None
    ckpt.save(3, out.state.replace(step=jnp.int32(3)), {'p': 1}, _meta())
    ckpt.wait()
    resumed = ckpt.restore_or_init(abstract, lambda: fresh, init_from=run_a,
                                   vocab_sha256=VOCAB_SHA)
  assert resumed.source == 'workdir' and int(resumed.state.step) == 3
  assert resumed.data_state == {'p': 1}
  _assert_trees_equal(resumed.state.params, trained.params)


def test_init_from_mismatch_lists_differences(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path / 'a'), keep=1, every=1) as ckpt:
    ckpt.save(1, _make_state(0), None, _meta())
  other = _make_state(1, kernel_shape=(16, 4))
  other_params = dict(other.params, extra={'w': jnp.zeros(3)})
  abstract = _abstract(other.replace(params=other_params))
  with checkpoint.Checkpointer(str(tmp_path / 'b'), keep=1, every=1) as ckpt:
    with pytest.raises(ValueError) as error:
      ckpt.restore_or_init(abstract, lambda: other,
                           init_from=str(tmp_path / 'a'),
                           vocab_sha256=VOCAB_SHA)
  message = str(error.value)
  assert '2 differences' in message
  assert 'missing in checkpoint: extra/w (3,)' in message
  assert 'shape of dense/kernel: checkpoint (8, 4), expected (16, 4)' in message


def test_resume_with_a_changed_state_lists_differences(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path), keep=1, every=1) as ckpt:
    ckpt.save(1, _make_state(0), None, _meta())
    changed = _make_state(0, kernel_shape=(16, 4))
    with pytest.raises(ValueError, match='does not fit') as error:
      ckpt.restore_or_init(_abstract(changed), lambda: changed,
                           vocab_sha256=VOCAB_SHA)
  message = str(error.value)
  assert 'shape of params/dense/kernel: checkpoint (8, 4)' in message
  assert 'shape of opt_state/0/mu/dense/kernel' in message


def test_init_from_without_checkpoint_is_an_error(tmp_path):
  os.makedirs(tmp_path / 'empty')
  with checkpoint.Checkpointer(str(tmp_path / 'b'), keep=1, every=1) as ckpt:
    with pytest.raises(FileNotFoundError, match='no finalised checkpoint'):
      ckpt.restore_or_init(_abstract(_make_state(0)), lambda: None,
                           init_from=str(tmp_path / 'empty'),
                           vocab_sha256=VOCAB_SHA)


def test_vocabulary_mismatch_is_refused(tmp_path):
  state = _make_state(0, step=4)
  run_a = str(tmp_path / 'a')
  with checkpoint.Checkpointer(run_a, keep=1, every=1) as ckpt:
    ckpt.save(4, state, None, _meta())
    with pytest.raises(ValueError, match='/data/vocab/spm.model') as error:
      ckpt.restore_or_init(_abstract(state), lambda: state,
                           vocab_sha256='b' * 64)
  assert VOCAB_SHA in str(error.value) and 'b' * 64 in str(error.value)
  # Checked before the state: a new vocabulary often changes shapes too.
  resized = _make_state(0, kernel_shape=(16, 4))
  with checkpoint.Checkpointer(run_a, keep=1, every=1) as ckpt:
    with pytest.raises(ValueError, match='trained with the vocabulary'):
      ckpt.restore_or_init(_abstract(resized), lambda: resized,
                           vocab_sha256='b' * 64)
  with checkpoint.Checkpointer(str(tmp_path / 'b'), keep=1, every=1) as ckpt:
    with pytest.raises(ValueError, match='trained with the vocabulary'):
      ckpt.restore_or_init(_abstract(state), lambda: state, init_from=run_a,
                           vocab_sha256='b' * 64)


# ------------------------------------------------------ damaged checkpoints --

DAMAGE_KINDS = ('truncated', 'deleted', 'garbled_json')


def damage_checkpoint(step_dir, kind):
  """Damages one file of checkpoint ``step_dir``: the state's data file
  that every read goes through (the OCDBT index in ``state/d/``) cut to half
  its size or deleted, or the meta / state metadata JSON garbled."""
  step_dir = str(step_dir)
  files = glob.glob(os.path.join(step_dir, 'state', 'd', '*'))
  assert files, f'no OCDBT data file in {step_dir}/state/d (orbax layout?)'
  largest = max(files, key=os.path.getsize)
  if kind == 'truncated':
    os.truncate(largest, os.path.getsize(largest) // 2)
  elif kind == 'deleted':
    os.remove(largest)
  elif kind == 'garbled_json':
    with open(os.path.join(step_dir, 'meta', 'metadata'), 'w') as f:
      f.write('{"vocab_sha256": "a')
  elif kind == 'garbled_state_metadata':
    with open(os.path.join(step_dir, 'state', '_METADATA'), 'w') as f:
      f.write('{"tree_metadata": ')
  else:
    raise ValueError(kind)


def damage_warnings(caplog):
  """The warnings about damaged checkpoints."""
  return [r.getMessage() for r in caplog.records
          if r.levelno >= logging.WARNING and ' is damaged (' in
          r.getMessage()]


@pytest.fixture
def asyncio_noise(monkeypatch, capfd):
  """() -> what was printed or reported as unraisable about closed event
  loops (orbax + tensorstore callbacks after a failed read)."""
  unraisable = []
  monkeypatch.setattr(sys, 'unraisablehook', unraisable.append)

  def noise():
    gc.collect()
    text = '\n'.join([*capfd.readouterr()] + [
        f'{u.exc_type.__name__}: {u.exc_value}' for u in unraisable])
    return [line for line in text.splitlines()
            if 'Event loop is closed' in line or 'never retrieved' in line]
  return noise


def _wide_state(seed, step=0):
  """A state with 150 more leaves, too big to be inlined in orbax's index:
  a damaged file fails some reads while others are in flight."""
  state = _make_state(seed, step, kernel_shape=(64, 64))
  rng = np.random.default_rng(seed)
  wide = {f'w{i}': jnp.asarray(rng.normal(size=(16, 32)), jnp.float32)
          for i in range(150)}
  return state.replace(params={**state.params, 'wide': wide})


def _two_checkpoints(workdir):
  """Checkpoints 5 and 10 of ``_wide_state``."""
  with checkpoint.Checkpointer(workdir, keep=3, every=5) as ckpt:
    for step in (5, 10):
      ckpt.save(step, _wide_state(step, step=step), {'position': step},
                _meta())
      ckpt.wait()
  return _wide_state(0)


@pytest.mark.parametrize('kind', DAMAGE_KINDS + ('garbled_state_metadata',))
def test_damaged_newest_checkpoint_falls_back(tmp_path, caplog, asyncio_noise,
                                              kind):
  template = _two_checkpoints(str(tmp_path))
  root = tmp_path / 'checkpoints'
  damage_checkpoint(root / '10', kind)
  caplog.set_level(logging.WARNING)
  with checkpoint.Checkpointer(str(tmp_path), keep=3, every=5) as ckpt:
    out = ckpt.restore_or_init(_abstract(template), lambda: None,
                               vocab_sha256=VOCAB_SHA)
    assert out.source == 'workdir' and int(out.state.step) == 5
    assert out.data_state == {'position': 5}
    _assert_trees_equal(out.state.params, _wide_state(5).params)
    assert ckpt.all_steps() == [5]
    # The run goes on: step 10 is written again next to the damaged copy.
    assert ckpt.save(10, out.state, {'position': 10}, _meta())
    ckpt.wait()
    assert ckpt.all_steps() == [5, 10]
  (warning,) = damage_warnings(caplog)
  assert 'step 10' in warning and 'corrupt-' in warning
  aside = [n for n in os.listdir(root) if n.startswith('10.corrupt-')]
  assert len(aside) == 1 and sorted(set(os.listdir(root)) - set(aside)) == [
      '10', '5']
  assert os.path.exists(root / aside[0] / 'commit_success.txt')  # kept whole
  assert not asyncio_noise()


def test_damaged_step_error_names_it_and_is_not_a_mismatch(tmp_path,
                                                          asyncio_noise):
  template = _two_checkpoints(str(tmp_path))
  damage_checkpoint(tmp_path / 'checkpoints' / '10', 'truncated')
  with checkpoint.Checkpointer(str(tmp_path), keep=3, every=5) as ckpt:
    with pytest.raises(checkpoint.DamagedCheckpointError,
                       match=r'checkpoints/10 is damaged: ValueError: '
                       'OUT_OF_RANGE') as error:
      ckpt.restore(10, _abstract(template))
    assert error.value.step == 10
    assert 'tensorstore_spec' not in str(error.value)
    assert ckpt.all_steps() == [5, 10]         # restore() moves nothing
  # init_from another run's damaged checkpoint: an error, nothing moved.
  with checkpoint.Checkpointer(str(tmp_path / 'b'), keep=1, every=1) as ckpt:
    with pytest.raises(checkpoint.DamagedCheckpointError, match='10 is dam'):
      ckpt.restore_or_init(_abstract(template), lambda: None,
                           init_from=str(tmp_path), vocab_sha256=VOCAB_SHA)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10', '5']
  assert not asyncio_noise()


def test_every_checkpoint_damaged_is_an_error(tmp_path, caplog):
  template = _two_checkpoints(str(tmp_path))
  for step in ('5', '10'):
    damage_checkpoint(tmp_path / 'checkpoints' / step, 'garbled_json')
  caplog.set_level(logging.WARNING)
  with checkpoint.Checkpointer(str(tmp_path), keep=3, every=5) as ckpt:
    with pytest.raises(RuntimeError, match=r'None of the checkpoints '
                       r'\[5, 10\].*moved aside'):
      ckpt.restore_or_init(_abstract(template), lambda: template,
                           vocab_sha256=VOCAB_SHA)
  assert len(damage_warnings(caplog)) == 2
  assert all('.corrupt-' in n for n in os.listdir(tmp_path / 'checkpoints'))


def test_make_meta():
  config = ml_collections.ConfigDict({'train': {'learning_rate': 0.2},
                                      'data': {'suite': 'tiny'}})
  vocab = types.SimpleNamespace(path='/v/spm.model', sha256='c' * 64)
  meta = checkpoint.make_meta(config, vocab)
  assert meta['vocab_path'] == '/v/spm.model'
  assert meta['vocab_sha256'] == 'c' * 64
  assert meta['config']['train']['learning_rate'] == 0.2
  assert meta['class_names'] is None
  named = checkpoint.make_meta(config, vocab, ('red star', 'blue circle'))
  assert json.loads(json.dumps(named))['class_names'] == ['red star',
                                                          'blue circle']
  assert meta['mm_jax_version'] == checkpoint.mm_jax_version() != ''


def test_abstract_state_needs_shardings(tmp_path):
  state = _make_state(0, step=1)
  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                        state)
  with checkpoint.Checkpointer(str(tmp_path), keep=1, every=1) as ckpt:
    ckpt.save(1, state, None, _meta())
    with pytest.raises(ValueError, match='need a .sharding'):
      ckpt.restore(1, shapes)


_TWO_PROCESS = textwrap.dedent('''
    import os, sys
    os.environ['JAX_PLATFORMS'] = 'cpu'
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
    import jax, jax.numpy as jnp, numpy as np
    index, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'localhost:{port}', num_processes=2,
                               process_id=index)
    from mm_jax.train import checkpoint
    mesh = jax.make_mesh((4,), ('data',))
    sharding = jax.NamedSharding(mesh, jax.P('data'))
    w = jax.make_array_from_callback(
        (8, 2), sharding, lambda i: np.arange(16.).reshape(8, 2)[i])
    replicated = jax.NamedSharding(mesh, jax.P())
    step = jax.make_array_from_callback((), replicated,
                                        lambda i: np.int32(2))
    state = {'w': w, 'step': step}
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(
        a.shape, a.dtype, sharding=a.sharding), state)
    meta = {'vocab_sha256': 'v', 'vocab_path': 'p'}
    with checkpoint.Checkpointer(workdir, keep=2, every=1) as ckpt:
      ckpt.save(2, state, {'me': index, 'pad': 'x' * (10 * index)}, meta)
      ckpt.wait()
      out = ckpt.restore_or_init(abstract, lambda: None, vocab_sha256='v')
    assert out.source == 'workdir', out
    assert out.data_state == {'me': index, 'pad': 'x' * (10 * index)}, out
    got = np.concatenate([np.asarray(s.data) for s in
                          out.state['w'].addressable_shards])
    print('OK', index, got.shape, flush=True)
''')


@pytest.mark.slow
@pytest.mark.e2e
def test_two_processes_keep_their_own_data_state(tmp_path):
  script = tmp_path / 'worker.py'
  script.write_text(_TWO_PROCESS)
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  port = str(20000 + os.getpid() % 20000)
  workers = [subprocess.Popen(
      [sys.executable, str(script), str(i), port, str(tmp_path / 'w')],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
  outputs = [w.communicate(timeout=240)[0] for w in workers]
  for i, (worker, output) in enumerate(zip(workers, outputs)):
    assert worker.returncode == 0 and f'OK {i}' in output, output[-3000:]
