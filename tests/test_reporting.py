"""Tests for mm_jax/train/reporting.py (writers, metrics.jsonl, NaN guard)."""

import glob
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.util import tensor_util

from mm_jax.train import events
from mm_jax.train import reporting


def _lines(workdir):
  with open(os.path.join(workdir, reporting.METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


def test_reporter_writes_jsonl_and_event_files(tmp_path):
  workdir = str(tmp_path)
  with reporting.Reporter(workdir, total_steps=100, is_primary=True) as rep:
    rep.write_scalars(10, {'loss': np.float32(2.5), 'grad_norm': jnp.array(
        1.25), 'mnist/token_accuracy': 0.5})
    rep.write_scalars(20, {'loss': 2.0})
    rep.write_texts(20, {'samples/wmt_ende': 'ein kleiner Test'})
    rep.write_histograms(20, {'moe_load/encoder_0': np.array([.1, .4, .5])})
    rep.flush()
    assert _lines(workdir) == [
        {'step': 10, 'loss': 2.5, 'grad_norm': 1.25,
         'mnist/token_accuracy': 0.5},
        {'step': 20, 'loss': 2.0}]
  events = glob.glob(os.path.join(workdir, 'events.out.tfevents*'))
  assert len(events) == 1 and os.path.getsize(events[0]) > 0
  with open(os.path.join(workdir, reporting.LOAD_FILE)) as f:
    assert [json.loads(line) for line in f] == [
        {'step': 20, 'moe_load/encoder_0': [0.1, 0.4, 0.5]}]


@pytest.mark.parametrize('asynchronous', [True, False])
def test_event_file_holds_tensorboard_summaries(tmp_path, asynchronous):
  """Scalars, text and histograms as TensorBoard's plugins read them."""
  with reporting.Reporter(str(tmp_path), 100, True,
                          asynchronous=asynchronous) as rep:
    rep.write_scalars(10, {'loss': np.float32(2.5), 'count': 3})
    rep.write_texts(10, {'samples/wmt_ende': 'ein kleiner Test'})
    rep.write_histograms(20, {'moe_load/encoder_0': np.array([.1, .4, .5])},
                         {'moe_load/encoder_0': 4})
  [path] = glob.glob(str(tmp_path / 'events.out.tfevents.*.v2'))
  first, *written = events.read_events(path)
  assert first.file_version == 'brain.Event:2'
  got = {}
  for event in written:
    [value] = event.summary.value
    got[value.tag] = (event.step, value.metadata.plugin_data.plugin_name,
                      tensor_util.make_ndarray(value.tensor))
  assert sorted(got) == ['count', 'loss', 'moe_load/encoder_0',
                         'samples/wmt_ende']
  assert got['loss'][:2] == (10, 'scalars') and got['loss'][2] == 2.5
  assert got['count'][2] == 3.0
  assert got['samples/wmt_ende'][:2] == (10, 'text')
  assert got['samples/wmt_ende'][2] == b'ein kleiner Test'
  step, plugin, buckets = got['moe_load/encoder_0']    # [4, 3]: left,
  assert (step, plugin) == (20, 'histograms')          # right, count
  np.testing.assert_allclose(buckets[:, 2], [1, 0, 0, 2])
  np.testing.assert_allclose(buckets[[0, -1], [0, 1]], [0.1, 0.5])


def test_reporter_appends_and_truncates_on_resume(tmp_path):
  workdir = str(tmp_path)
  with reporting.Reporter(workdir, 100, True, asynchronous=False) as rep:
    for step in (10, 20, 30):
      rep.write_scalars(step, {'loss': float(step)})
      rep.write_histograms(step, {'moe_load/x': np.array([step, 0.])})
  # Resumed from the checkpoint at step 20: step 30 is trained again.
  with reporting.Reporter(workdir, 100, True, asynchronous=False) as rep:
    rep.truncate_after(20)
    rep.write_scalars(30, {'loss': 3.0})
  assert [(l['step'], l['loss']) for l in _lines(workdir)] == [
      (10, 10.0), (20, 20.0), (30, 3.0)]
  with open(os.path.join(workdir, reporting.LOAD_FILE)) as f:
    assert [json.loads(line)['moe_load/x'] for line in f] == [
        [10.0, 0.0], [20.0, 0.0]]


def test_non_primary_writes_no_files(tmp_path):
  workdir = str(tmp_path / 'run')
  with reporting.Reporter(workdir, 100, is_primary=False) as rep:
    rep.write_scalars(1, {'loss': 1.0})
    rep.truncate_after(0)
  assert not os.path.exists(workdir)


def test_write_scalars_rejects_arrays(tmp_path):
  with reporting.Reporter(str(tmp_path), 10, True) as rep:
    with pytest.raises(ValueError, match="'moe_load/x' has shape \\(4,\\)"):
      rep.write_scalars(1, {'moe_load/x': np.ones(4)})


def test_progress_reports_rate_and_eta(tmp_path, monkeypatch, caplog):
  clock = iter([100.0, 110.0])
  monkeypatch.setattr(reporting.time, 'monotonic', lambda: next(clock))
  with reporting.Reporter(str(tmp_path), 1000, True) as rep:
    assert rep.progress(100) == {}
    with caplog.at_level(logging.INFO):
      assert rep.progress(300) == {'steps_per_sec': 20.0}
  # 700 steps left at 20 steps/s: 35 s.
  assert 'Step 300/1000 (30.0%): 20.00 steps/s, ETA 35s.' in caplog.text


def test_format_seconds():
  assert reporting.format_seconds(42.9) == '42s'
  assert reporting.format_seconds(125) == '2m'
  assert reporting.format_seconds(123456.7) == '1d10h17m'


def test_parameter_overview(tmp_path):
  mesh = jax.make_mesh((8,), ('data',))
  params = {'dense': {
      'kernel': jax.device_put(jnp.zeros((8, 3)),
                               jax.NamedSharding(mesh, jax.P('data'))),
      'bias': jnp.zeros(3)}}
  with reporting.Reporter(str(tmp_path), 10, True) as rep:
    table = rep.parameter_overview(params)
  assert 'dense/kernel' in table and 'dense/bias' in table
  assert "('data',)" in table
  assert 'Total: 27' in table


def test_check_finite_names_step_and_task():
  reporting.check_finite(3, 'wmt_ende', {'loss': 1.0, 'step': 3,
                                         'load': np.ones(4)})
  with pytest.raises(FloatingPointError) as error:
    reporting.check_finite(1234, 'wmt_ende', {
        'loss': float('nan'), 'grad_norm': np.float32(np.inf),
        'learning_rate': 1e-3}, last_checkpoint=1000)
  message = str(error.value)
  assert message.startswith('non-finite loss at step 1234 in task wmt_ende')
  assert 'grad_norm=inf' in message and 'loss=nan' in message
  assert 'learning_rate=' not in message
  assert 'last checkpoint (step 1000) is intact' in message
  with pytest.raises(FloatingPointError, match='non-finite metrics at step 2 '
                     'in task mnist: load=non-finite entries; no checkpoint'):
    reporting.check_finite(2, 'mnist', {'load': np.array([1.0, np.nan])})


def test_lagged_metrics_checks_one_step_late():
  lagged = reporting.LaggedMetrics()
  assert lagged.push(1, 'a', {'loss': jnp.float32(2.0)}) is None
  done = lagged.push(2, 'b', {'loss': jnp.float32(np.nan)})
  assert done == (1, 'a', {'loss': 2.0})
  assert isinstance(done.metrics['loss'], np.ndarray)
  lagged.last_checkpoint = 1
  with pytest.raises(FloatingPointError, match='step 2 in task b.*step 1'):
    lagged.drain()
  assert lagged.drain() is None
