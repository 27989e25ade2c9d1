"""Deviceless TPU compilation (mm_jax.perf.aot): topologies, the program list,
the estimate and HLO parsing on the CPU; real TPU compiles of the small
model when libtpu is installed (skipped otherwise)."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

import conftest
from mm_jax import config as base
from mm_jax.perf import aot
from mm_jax.perf import tpu_topology

joint8 = base.load_module('joint8')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EP = {'mesh.preset': 'dp+ep', 'mesh.shape.expert': 2}


@pytest.mark.parametrize('text, name, accelerator, chips', [
    ('v5p-64', 'v5p:2x4x4', 'v5p-64', 32),
    ('v4-32', 'v4:2x2x4', 'v4-32', 16),
    ('v4-8', 'v4:2x2x1', 'v4-8', 4),
    ('v5e-64', 'v5e:8x8', 'v5e-64', 64),
    ('v5litepod-16', 'v5e:4x4', 'v5e-16', 16),
    ('v6e-256', 'v6e:16x16', 'v6e-256', 256),
    ('v6e-1', 'v6e:1x1', 'v6e-1', 1),
    ('v5e:2x2', 'v5e:2x2', 'v5e-4', 4),
    ('v5p:2x2x2', 'v5p:2x2x2', 'v5p-16', 8),
    ('V5P-1024', 'v5p:8x8x8', 'v5p-1024', 512),
])
def test_parse_topology(text, name, accelerator, chips):
  topology = tpu_topology.parse_topology(text)
  assert (topology.name, topology.accelerator, topology.num_chips) == (
      name, accelerator, chips)
  assert tpu_topology.parse_topology(text, slices=2).num_chips == 2 * chips


@pytest.mark.parametrize('text', ['v7-8', 'v5p-3', 'v5p-24', 'v5e:2x2x2',
                                  'v4:2x2', 'tpu', 'v5e-'])
def test_parse_topology_rejects(text):
  with pytest.raises(ValueError, match=r'v5|standard|axes|TensorCores'):
    tpu_topology.parse_topology(text)


def test_chip_table():
  gib = tpu_topology.GiB
  table = {k: (c.hbm_bytes / gib, c.peak_flops / 1e12)
           for k, c in tpu_topology.CHIPS.items()}
  assert table == {'v4': (32, 275), 'v5e': (16, 197), 'v5p': (95, 459),
                   'v6e': (32, 918)}


@pytest.mark.parametrize('seconds', [-493.0, -0.998, 0.0, math.nan, math.inf,
                                     None, 1e-9, 7200.0])
def test_invalid_estimates_are_unavailable(seconds):
  value, note = aot.valid_estimate(seconds, 1e9, 197e12)
  assert value is None
  assert note.startswith(('invalid', 'implausible', 'not reported'))


def test_valid_estimate_is_kept():
  assert aot.valid_estimate(0.01, 1e9, 197e12) == (0.01, 'ok')
  assert aot.valid_estimate(0.01, None, 197e12) == (0.01, 'ok')


def test_collectives_from_hlo_text():
  hlo = '\n'.join([
      '  %all-to-all = f32[4,1,96,32]{2,3,1,0:T(8,128)S(1)} all-to-all('
      '%p), channel_id=5, dimensions={0}',
      '  %all-reduce.9 = (bf16[4,240,32]{1,2,0:T(8,128)(2,1)}, f32[384]{0}) '
      'all-reduce(%a, %b), to_apply=%add',
      '  %ags = (f32[8,32]{1,0}, f32[32,32]{1,0}) all-gather-start(%x), '
      'dimensions={0}',
      '  %agd = f32[32,32]{1,0} all-gather-done(%ags)',
      '  %rs = s32[128]{0} reduce-scatter(%y), dimensions={0}',
      '  ROOT %t = (f32[], f32[]) tuple(%u, %v)',
  ])
  got = aot.collectives(hlo)
  assert got['all-to-all'] == {'count': 1, 'bytes': 4 * 96 * 32 * 4}
  assert got['all-reduce'] == {'count': 1, 'bytes': 4 * 240 * 32 * 2 + 384 * 4}
  assert got['all-gather'] == {'count': 1, 'bytes': 32 * 32 * 4}
  assert got['reduce-scatter'] == {'count': 1, 'bytes': 128 * 4}
  assert got['collective-permute'] == {'count': 0, 'bytes': 0}


def test_programs_of_the_tiny_run():
  progs = {p.name: p for p in aot.programs(joint8.get_config('tiny'))}
  assert len(progs) == 13              # init + 4 modality pairs x 3 kinds
  train = progs['train text->text w1 32x48->32x64']
  assert len(train.tasks) == 5 and 'parse_en' in train.tasks
  assert sorted(train.batch) == ['inputs', 'target_space', 'targets']
  assert 'train image->class w0.7 128x32x32x3->128' in progs  # 4x batch
  assert 'train audio->text w2 32x800x80x1->32x64' in progs
  assert sorted(progs['eval audio->text 64x800x80x1->64x64'].batch) == [
      'example_mask', 'inputs', 'inputs_mask', 'target_space', 'targets']
  assert sorted(progs['decode image->class 64x32x32x3'].batch) == ['inputs']
  assert progs['init state'].batch == {}


def test_programs_cover_every_bucket():
  progs = aot.programs(joint8.get_config('base'), kinds=('train', 'decode'))
  text = [p for p in progs if p.kind == 'train' and p.input_modality == 'text']
  assert len(text) == 16                       # 4 input x 4 target buckets
  decode = [p for p in progs if p.kind == 'decode'
            and p.input_modality == 'text']
  assert len(decode) == 4 and all(len(p.tasks) == 5 for p in decode)
  with pytest.raises(ValueError, match='Unknown program kinds'):
    aot.programs(joint8.get_config('tiny'), kinds=('predict',))


def test_largest_buckets_keep_one_program_per_signature():
  progs = aot.programs(joint8.get_config('base'),
                       kinds=('init', 'train', 'decode'))
  kept = aot.largest_buckets(progs)
  names = [p.name for p in kept]
  assert len(set(names)) == len(names) and 'init state' in names
  text = [p for p in kept if p.kind == 'train' and p.input_modality == 'text'
          and p.output_modality == 'text']
  assert [p.name for p in text] == ['train text->text w1 256x256->256x256']
  signatures = {(p.kind, p.input_modality, p.output_modality, p.loss_weight)
                for p in progs}
  assert len(kept) == len(signatures)
  assert aot.largest_buckets(kept) == kept


def test_missing_libtpu_says_what_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, 'find_spec', lambda *a, **k: None)
  with pytest.raises(tpu_topology.LibtpuMissing,
                     match=r"pip install -e '\.\[tpu-aot\]'"):
    tpu_topology.require_libtpu()


@pytest.fixture(scope='module')
def ep_eval():
  """The eval step of the small model under dp+ep, compiled for v5e:2x2."""
  pytest.importorskip('libtpu')
  config = conftest.small_config({}, joint8.get_config('tiny'), EP)
  return aot.check(config, tpu_topology.parse_topology('v5e:2x2'),
                   kinds=('eval',), tasks=('translate_en_de',))


def test_tpu_compile_reports_memory_and_all_to_all(ep_eval):
  assert ep_eval['mesh'] == {'data': 2, 'expert': 2, 'model': 1}
  assert ep_eval['num_chips'] == 4 and ep_eval['chip']['generation'] == 'v5e'
  (row,) = ep_eval['rows']
  assert row['error'] is None, row['error']
  assert row['program'] == 'eval text->text 8x48->8x64'
  assert row['argument_bytes'] > 0 and row['temp_bytes'] >= 0
  assert 0 < row['total_bytes'] <= 16 * tpu_topology.GiB and row['fits']
  assert row['xla_flops_per_chip'] > 0 and row['compile_s'] > 0
  assert row['collectives']['all-to-all']['count'] > 0    # expert parallel
  assert row['collectives']['all-to-all']['bytes'] > 0
  # Tokens move, the experts stay: routing groups never span batch shards
  # (with 2 groups on 4 chips XLA gathered 506 KB of weights instead).
  assert (row['collectives']['all-gather']['bytes']
          < row['collectives']['all-to-all']['bytes'])
  if row['estimated_s'] is None:                 # never an invalid MFU
    assert row['mfu'] is None and row['estimate_note'] != 'ok'
  assert aot.exit_code(ep_eval) == 0
  table = aot.format_table(ep_eval)
  assert 'v5e-4 (v5e:2x2): 4 chips, HBM 16.0 GiB' in table
  assert row['program'] in table
  json.dumps(ep_eval)


@pytest.mark.e2e
def test_cli_exits_naming_what_does_not_fit(tmp_path):
  pytest.importorskip('libtpu')
  out = tmp_path / 'aot.json'
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch', 'aot_check.py'),
       '--config=configs/joint8.py:tiny', '--topology=v5e-4',
       '--kinds=eval', '--tasks=parse_en', '--hbm_gib=0.0001',
       f'--output={out}', *conftest.small_flags({}, EP)],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert ('DOES NOT FIT in 0.0 GiB HBM: eval text->text 8x48->8x64'
          in proc.stdout)
  result = json.loads(out.read_text())
  assert result['not_fitting'] == ['eval text->text 8x48->8x64']
  assert result['rows'][0]['fits'] is False


def test_multi_slice_puts_slices_on_the_data_axis():
  pytest.importorskip('libtpu')
  config = conftest.small_config({}, joint8.get_config('tiny'))
  result = aot.check(config, tpu_topology.parse_topology('v5e:2x2', 2),
                     kinds=('eval',), tasks=('translate_en_de',))
  assert result['mesh'] == {'data': 8, 'expert': 1, 'model': 1}
  assert result['num_chips'] == 8 and aot.exit_code(result) == 0
  assert any('Multi-slice' in n for n in result['notes'])


@pytest.mark.slow
@pytest.mark.parametrize('topology, overrides', [
    ('v5p:2x2x2', {}), ('v5e:2x2', EP), ('v5e:2x2', {'mesh.preset': 'fsdp+ep',
                                                     'mesh.shape.expert': 2})])
def test_every_program_of_the_small_run_compiles(topology, overrides):
  pytest.importorskip('libtpu')
  config = conftest.small_config({}, joint8.get_config('tiny'), overrides)
  result = aot.check(config, tpu_topology.parse_topology(topology))
  assert len(result['rows']) == 13
  assert aot.exit_code(result) == 0, aot.format_table(result)
  for row in result['rows']:
    assert row['fits'] and row['total_bytes'] > 0, row['program']
    if row['kind'] == 'train':
      assert row['analytic_flops_per_chip'] > 0
      if overrides:
        assert row['collectives']['all-to-all']['count'] > 0
