"""Two JAX processes on localhost (4 fake CPU devices each, gloo collectives)
train like one process with 8 devices fed the same global batches."""

import json
import os
import sys

import jax
import numpy as np
import pytest

from mm_jax import config as base
from mm_jax import sharding
import mm_jax
from mm_jax.data import pipeline
from mm_jax.data import plan
from mm_jax.data import prepare
from mm_jax.train import optim
from mm_jax.train import state as state_lib
from mm_jax.train import step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'launch'))
import multihost_local  # pylint: disable=g-import-not-at-top,wrong-import-position

single = base.load_module('single')

STEPS = 4
COMPARED = ('loss', 'grad_norm', 'param_norm')
OVERRIDES = {
    **base.tiny_sizes(64, 16),
    'data.batch_size': 8, 'data.length_buckets': (),
    'model.d_model': 32, 'model.num_heads': 2, 'model.moe.num_experts': 4,
    'model.moe.hidden': 32, 'model.num_encoder_blocks_before_moe': 1,
    'model.num_encoder_blocks_after_moe': 1,
    'model.num_decoder_blocks_before_moe': 1,
    'model.num_decoder_blocks_after_moe': 1,
    'eval.batch_size': 8, 'eval.max_batches': 1, 'eval.max_decode_length': 8,
    'eval.beam_size': 2, 'train.log_every': 1, 'train.checkpoint_every': 2,
    'train.num_train_steps': STEPS, 'train.warmup_steps': 4,
    'mesh.preset': 'dp+ep',
    'mesh.shape.expert': 2,
}


def _config(overrides):
  return base.override(single.get_config('translate_en_de,tiny'), overrides)


def _flag(key, value):
  if isinstance(value, tuple):
    value = '(' + ','.join(map(str, value)) + ')'
  return f'--config.{key}={value}'


def _reference_metrics(config, vocab):
  """One process, 8 devices, fed the two processes' batches concatenated:
  [step][COMPARED]."""
  model = mm_jax.create_model(config)
  mesh = sharding.make_mesh(config.mesh)
  tx, schedule = optim.make_optimizer(config.train, config.model.d_model)
  state, shardings = state_lib.create_train_state(config, model, mesh, tx)
  plans = plan.resolve(config)
  compiler = step_lib.StepCompiler(model, config, mesh, shardings, tx,
                                   schedule, plans=plans)
  its = [pipeline.make_train_iterator(config.data, vocab, plans,
                                      process_index=p, process_count=2,
                                      pad_sync=lambda x: x)
         for p in range(2)]
  out = []
  for _ in range(STEPS):
    (task, b0), (task1, b1) = next(its[0]), next(its[1])
    assert task == task1
    batch = {k: np.concatenate([b0[k], b1[k]]) for k in b0}
    state, metrics = compiler.train(state, task, batch)
    out.append([float(metrics[k]) for k in COMPARED])
  for it in its:
    it.close()
  return out


def test_flags_before_the_separator_train_flags_after():
  fv, train = multihost_local.parse_flags(
      ['--num_processes=3', '--timeout=5', '--', '--workdir=/w', '--x=1'])
  assert (fv.num_processes, fv.devices_per_process, fv.timeout) == (3, 4, 5.0)
  assert train == ['--workdir=/w', '--x=1']
  with pytest.raises(SystemExit, match="Unknown command line flag 'bogus'"):
    multihost_local.parse_flags(['--bogus=1', '--', '--workdir=/w'])


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  data = {'data.data_dir': str(tmp_path / 'data')}
  config = _config({**OVERRIDES, **data})
  vocab = prepare.ensure_prepared(config.data)
  data['model.vocab_size'] = vocab.size
  workdir = tmp_path / 'work'
  args = ['--config=configs/single.py:translate_en_de,tiny',
          f'--workdir={workdir}'] + [
              _flag(k, v) for k, v in {**OVERRIDES, **data}.items()]
  code = multihost_local.run(args, num_processes=2, devices_per_process=4,
                             timeout=900)
  logs = {p: (workdir / 'logs' / f'process_{p}.log').read_text()
          for p in range(2)}
  assert code == 0, logs[0][-3000:] + logs[1][-3000:]
  assert 'JAX process 1 of 2; 4 local / 8 global devices' in logs[1]
  records = {}
  with open(workdir / 'metrics.jsonl') as f:
    for line in f:
      record = json.loads(line)
      records.setdefault(record['step'], {}).update(record)
  got = [[records[s][k] for k in COMPARED] for s in range(1, STEPS + 1)]
  assert records[STEPS]['validation/translate_en_de/examples'] == 8
  assert np.isfinite(records[STEPS]['validation/translate_en_de/bleu'])
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
  want = _reference_metrics(_config({**OVERRIDES, **data}), vocab)
  np.testing.assert_allclose(got, want, rtol=1e-4)
  assert jax.device_count() == 8
