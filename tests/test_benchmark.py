"""The benchmark harness at tiny size (one run, shared by the tests): every
JSON field is there and consistent with the others."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import conftest
from mm_jax import config as base
from mm_jax.perf import benchmark

joint8 = base.load_module('joint8')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ('translate_en_de', 'imagenet')


@pytest.fixture(scope='module')
def run(data):
  """One harness run at tiny size: two tasks, a ragged-dispatch variant of
  one, the MoE micro-benchmark and the input pipeline."""
  # Capacity for every token-slot, so that the capacity and ragged
  # dispatches compute the same loss (below); 8 fake devices route each
  # sequence in its own group.
  config = conftest.small_config(data, joint8.get_config('tiny'), {
      'model.moe.capacity_factor_train': 8.0,
      'model.moe.capacity_factor_eval': 8.0})
  result = benchmark.run(
      config, steps=2, warmup=1, input_steps=2, moe_tokens=512, tasks=TASKS,
      variants=benchmark.parse_variants(
          ['default:', 'ragged:model.moe.dispatch=ragged,'
           '@tasks=translate_en_de']))
  return config, result


@pytest.mark.e2e
def test_result_is_json_and_names_its_machine(run):
  _, result = run
  json.loads(json.dumps(result))
  assert result['device'].startswith('cpu') and result['dtype'] == 'float32'
  assert result['batch_size'] == 8 and result['num_devices'] >= 1
  assert result['peak']['peak_flops_per_s'] > 0
  assert result['errors'] == []


@pytest.mark.e2e
def test_train_rows_time_count_and_shape_each_task(run):
  config, result = run
  assert sorted(result['train']) == sorted(TASKS)
  for name, r in result['train'].items():
    assert r['lower_s'] > 0 and r['compile_s'] > 0, name
    assert r['step_s'] > 0 and r['flops_per_step'] > 0, name
    # The analytic count (MFU's numerator) counts matmuls and convolutions
    # only; test_flops checks it against XLA's count at a realistic width.
    # At this test's d=32 the element-wise share is large, so only the
    # direction is checked here: XLA counts everything and so never less.
    assert r['xla_flops_per_step'] >= r['flops_per_step'], name
    assert r['flops_table']['total'] == r['flops_per_step']
    batch = 8 * config.data.batch_size_multiplier[name]   # imagenet: 4x
    assert r['batch_shapes']['targets'][0] == batch, name
    np.testing.assert_allclose(r['examples_per_s'], batch / r['step_s'])
    assert 0 < r['mfu'] < 1 and r['memory_bytes'] > 0, name
  assert result['train']['translate_en_de']['batch_shapes']['targets'] == [
      8, 64]
  assert result['train']['imagenet']['batch_shapes']['inputs'] == [
      32, 32, 32, 3]                  # tiny ImageNet: 4 x 8 images at 32 px
  assert 0 < result['mfu_all_tasks'] < 1


@pytest.mark.e2e
def test_a_variant_gets_its_own_row_from_the_same_start(run):
  """The ragged variant: same initial loss (same parameters and batch, no
  token dropped by either), its own row."""
  _, result = run
  rows = {(r['variant'], r['task']): r for r in result['rows']}
  assert sorted(rows) == [('default', 'imagenet'),
                          ('default', 'translate_en_de'),
                          ('ragged', 'translate_en_de')]
  np.testing.assert_allclose(rows['ragged', 'translate_en_de']['first_loss'],
                             rows['default', 'translate_en_de']['first_loss'],
                             rtol=1e-5)
  assert 'ragged/translate_en_de' in benchmark.format_table(result)


@pytest.mark.e2e
def test_moe_and_input_ratios_are_their_parts(run):
  _, result = run
  moe = result['moe']
  assert moe['tokens'] == 512
  np.testing.assert_allclose(moe['moe_over_dense'],
                             moe['moe_s'] / moe['dense_ffn_s'])
  np.testing.assert_allclose(moe['capacity_over_reference'],
                             moe['moe_s'] / moe['dense_reference_s'])
  np.testing.assert_allclose(moe['ragged_over_dense'],
                             moe['ragged_s'] / moe['dense_ffn_s'])
  assert 'MoE vs dense FFN' in benchmark.format_table(result)
  for name in TASKS:
    inp = result['input'][name]
    assert inp['examples_per_s'] > 0 and 0 < inp['fill'] <= 1
    np.testing.assert_allclose(
        inp['over_train_consumption'],
        inp['examples_per_s'] / result['train'][name]['examples_per_s'])


@pytest.mark.e2e
def test_benchmark_command_rejects_a_missing_config(tmp_path):
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch', 'benchmark.py'),
       f'--output={tmp_path / "b.json"}'], cwd=REPO, capture_output=True,
      text=True, timeout=120, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode != 0
  assert '--config=configs/joint8.py:tiny' in proc.stderr
