"""End-to-end tests of ``train_and_evaluate`` and ``launch/train.py``.

The model is shrunk (d 32, one block per stage, 4 experts) and the tiny
suite made small (64 train / 16 eval examples per task), so the tests are
about plumbing. XLA compilation dominates on CPU: the module shares one
persistent compilation cache (also with its subprocesses), so each model
and shape compiles once per session.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import conftest
import mm_jax
from mm_jax import config as base
from mm_jax import run_files
from mm_jax.data import prepare
from mm_jax.data import sources
from mm_jax.data.tiny import vision
from mm_jax.eval import evaluator
from mm_jax.train import loop
from mm_jax.train import workdir_lock
from test_checkpoint import DAMAGE_KINDS
from test_checkpoint import asyncio_noise  # pylint: disable=unused-import
from test_checkpoint import damage_checkpoint
from test_checkpoint import damage_warnings

pytestmark = pytest.mark.e2e   # every test here runs the training loop


joint8 = base.load_module('joint8')
single = base.load_module('single')
table3 = base.load_module('table3')
table4 = base.load_module('table4')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = conftest.SMALL
_apply = base.override
_config = conftest.small_config
_flags = conftest.small_flags
TEXT2 = {'data.mixture.translate_en_de': 1.0, 'data.mixture.translate_de_en': 1.0,
         'data.mixing': 'adaptive', 'eval.splits': ()}


def _text2_config(data, steps):
  return _config(data, single.get_config('translate_en_de,tiny'),
                 {**TEXT2, 'train.num_train_steps': steps})


def _jsonl(workdir):
  """{step: merged metrics of that step} from metrics.jsonl."""
  out = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      out.setdefault(record['step'], {}).update(record)
  return out


def _train_losses(workdir):
  """{step: (task trained, loss)}: the trajectory to compare."""
  out = {}
  if not os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
    return out
  for step, m in _jsonl(workdir).items():
    if 'loss' in m:
      tasks = [k.split('/')[0] for k in m if k.endswith('/token_accuracy')
               and not k.startswith('validation/')]
      out[step] = (tasks, m['loss'])
  return out


def _assert_same_trajectory(a, b):
  assert sorted(a) == sorted(b)
  for step in a:
    assert a[step][0] == b[step][0], f'step {step}: tasks differ'
    np.testing.assert_allclose(a[step][1], b[step][1], rtol=1e-5,
                               err_msg=f'step {step}')


def _env(xla_cache):
  return {**os.environ, 'JAX_COMPILATION_CACHE_DIR': xla_cache,
          'JAX_PLATFORMS': 'cpu'}


def _launch(data, xla_cache, workdir, extra, log):
  cmd = [sys.executable, os.path.join(REPO, 'launch', 'train.py'),
         '--config=configs/single.py:translate_en_de,tiny',
         f'--workdir={workdir}', *_flags(data, extra)]
  return subprocess.Popen(cmd, cwd=REPO, env=_env(xla_cache), stdout=log,
                          stderr=subprocess.STDOUT)


def _wait_for(predicate, proc, timeout):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert proc.poll() is None, 'the run ended before the test could stop it'
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.2)


def _lock_file(workdir):
  return os.path.join(workdir, workdir_lock.LOCK_NAME)


def _committed(workdir, step):
  return os.path.exists(os.path.join(workdir, 'checkpoints', str(step),
                                     'commit_success.txt'))


def test_missing_real_dataset_names_what_to_prepare(tmp_path):
  config = single.get_config('translate_en_de,base').unlock()
  config.data.data_dir = str(tmp_path)
  with pytest.raises(sources.MissingDatasetError,
                     match='tfds build wmt14_translate/de-en'):
    loop.train_and_evaluate(config.lock(), str(tmp_path / 'work'))
  assert not os.path.exists(_lock_file(tmp_path / 'work'))   # released


def test_bad_config_fails_before_touching_the_workdir(tmp_path):
  config = _apply(single.get_config('translate_en_de,base'),
                  {'train.eval_every': -1, 'data.length_buckets': (64, 32)})
  with pytest.raises(ValueError, match=r'2 bad config values:\n  '
                     r'config\.train\.eval_every=-1: must be an integer >= 0'
                     r'.*\n  config\.data\.length_buckets=\(64, 32\)'):
    loop.train_and_evaluate(config, str(tmp_path / 'work'))
  assert not os.path.exists(tmp_path / 'work')


def test_second_run_on_a_workdir_is_refused(tmp_path):
  config = single.get_config('translate_en_de,base').unlock()
  config.data.data_dir = str(tmp_path)              # never reached
  with workdir_lock.WorkdirLock(str(tmp_path / 'work')):
    with pytest.raises(workdir_lock.WorkdirLockedError,
                       match=f'PID {os.getpid()} .*another --workdir'):
      loop.train_and_evaluate(config.lock(), str(tmp_path / 'work'))
    assert os.path.exists(_lock_file(tmp_path / 'work'))      # not theirs
  assert not os.path.exists(_lock_file(tmp_path / 'work'))


def test_model_vocab_smaller_than_data_vocab_fails(data, tmp_path):
  config = _config(data, joint8.get_config('tiny'), {'model.vocab_size': 16})
  with pytest.raises(ValueError, match='model.vocab_size=16 is smaller'):
    loop.train_and_evaluate(config, str(tmp_path))


def test_resume_in_process_matches_uninterrupted(data, xla_cache, tmp_path):
  """3 steps, then on to 5, equals 5 steps (adaptive mixing of 2 tasks)."""
  first = loop.train_and_evaluate(_text2_config(data, 3), str(tmp_path / 'a'))
  assert first['step'] == 3 and not first['preempted']
  resumed = loop.train_and_evaluate(_text2_config(data, 5),
                                    str(tmp_path / 'a'))
  straight = loop.train_and_evaluate(_text2_config(data, 5),
                                     str(tmp_path / 'b'))
  assert resumed['step'] == straight['step'] == 5
  _assert_same_trajectory(_train_losses(tmp_path / 'a'),
                          _train_losses(tmp_path / 'b'))
  kept = sorted(os.listdir(tmp_path / 'a' / 'checkpoints'))
  assert kept == ['3', '4', '5']          # keep_checkpoints = 3


def test_zero_cadences_log_checkpoint_and_evaluate_at_the_end_only(
    data, xla_cache, tmp_path, monkeypatch):
  config = _config(data, single.get_config('translate_en_de,tiny'), {
      'train.num_train_steps': 3, 'train.log_every': 0,
      'train.checkpoint_every': 0, 'train.eval_every': 0,
      'eval.splits': ('validation',)})
  evaluated = []
  real = evaluator.Evaluator

  class Counting(real):
    def __call__(self, step, *args, **kwargs):
      evaluated.append(step)
      return super().__call__(step, *args, **kwargs)
  monkeypatch.setattr(evaluator, 'Evaluator', Counting)
  run = loop._run  # pylint: disable=protected-access

  def locked_run(*args, **kwargs):
    with open(_lock_file(tmp_path)) as f:
      assert json.load(f)['pid'] == os.getpid()     # held while training
    return run(*args, **kwargs)
  monkeypatch.setattr(loop, '_run', locked_run)
  out = loop.train_and_evaluate(config, str(tmp_path))
  assert out['step'] == 3 and np.isfinite(out['loss'])
  assert evaluated == [3]                           # the final one only
  assert [k for k in out if k.startswith('validation/')]
  logged = _jsonl(tmp_path)
  assert sorted(s for s in logged if 'loss' in logged[s]) == [3]
  assert os.listdir(tmp_path / 'checkpoints') == ['3']   # the final one
  assert not os.path.exists(_lock_file(tmp_path))


@pytest.fixture(scope='module')
def two_checkpoints(data, xla_cache, tmp_path_factory):
  """A 4-step run of two text tasks with checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp('two_checkpoints'))
  loop.train_and_evaluate(_text2_config(data, 4), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == [
      '2', '4']
  return workdir


@pytest.mark.parametrize('kind', DAMAGE_KINDS)
def test_damaged_newest_checkpoint_resume_and_load_use_the_previous(
    data, two_checkpoints, tmp_path, caplog, asyncio_noise, kind):
  caplog.set_level(logging.WARNING)
  for use in ('load', 'resume'):
    workdir = str(tmp_path / use)
    shutil.copytree(two_checkpoints, workdir)
    root = os.path.join(workdir, 'checkpoints')
    damage_checkpoint(os.path.join(root, '4'), kind)
    if use == 'load':
      assert mm_jax.load(workdir).step == 2
    else:
      out = loop.train_and_evaluate(_text2_config(data, 5), workdir)
      assert out['step'] == 5
      assert sorted(_jsonl(workdir)) == [1, 2, 3, 4, 5]
      assert not os.path.exists(_lock_file(workdir))
    (warning,) = damage_warnings(caplog)
    assert 'step 4 is damaged' in warning
    # Training moves it aside; loading for inference leaves it.
    moved = [n for n in os.listdir(root) if n.startswith('4.corrupt-')]
    assert bool(moved) == (use == 'resume')
    assert not asyncio_noise()
    caplog.clear()


def test_joint_eight_tasks_train_evaluate_and_continue(data, xla_cache,
                                                       tmp_path):
  config = _config(data, joint8.get_config('tiny'),
                   {'train.num_train_steps': 4})
  out = loop.train_and_evaluate(config, str(tmp_path))
  tasks = sorted(t for t, w in config.data.mixture.items() if w)
  assert len(tasks) == 8
  for task in tasks:
    assert out[f'validation/{task}/examples'] == 8
    assert np.isfinite(out[f'validation/{task}/log_ppl'])
    with open(tmp_path / 'samples' / 'step_4' / 'validation' /
              f'{task}.jsonl') as f:
      assert len(f.readlines()) == 2
  assert 'validation/translate_en_de/bleu' in out
  assert 'validation/speech_en/wer' in out
  assert 'validation/imagenet/top5' in out
  assert 'validation/parse_en/sequence_accuracy' in out
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))
  assert sorted(_jsonl(tmp_path)) == [1, 2, 3, 4]
  assert out['compilations'] <= 4         # one per task signature
  meta = run_files.read_meta(str(tmp_path), 4)
  assert tuple(meta['class_names']) == vision.CLASS_NAMES   # for inference
  more = loop.train_and_evaluate(
      _apply(config, {'train.num_train_steps': 6}), str(tmp_path))
  assert more['step'] == 6
  assert sorted(_jsonl(tmp_path)) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_sigkill_then_restart_matches_uninterrupted(data, xla_cache,
                                                    tmp_path):
  steps = 16
  straight = tmp_path / 'straight'
  loop.train_and_evaluate(_text2_config(data, steps), str(straight))
  killed = tmp_path / 'killed'
  extra = {**TEXT2, 'train.num_train_steps': steps}
  with open(tmp_path / 'log1.txt', 'w') as log:
    proc = _launch(data, xla_cache, killed, extra, log)
    try:
      _wait_for(lambda: _committed(killed, 2), proc, 300)
    finally:
      proc.kill()
      proc.wait()
  assert proc.returncode == -signal.SIGKILL
  with open(tmp_path / 'log2.txt', 'w') as log:
    assert _launch(data, xla_cache, killed, extra, log).wait(300) == 0
  _assert_same_trajectory(_train_losses(killed), _train_losses(straight))


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(data, xla_cache, tmp_path):
  extra = {**TEXT2, 'train.num_train_steps': 100_000,
           'train.checkpoint_every': 100_000}
  with open(tmp_path / 'log.txt', 'w') as log:
    proc = _launch(data, xla_cache, tmp_path / 'w', extra, log)
    try:
      _wait_for(lambda: _train_losses(tmp_path / 'w'), proc, 300)
      proc.send_signal(signal.SIGTERM)
      assert proc.wait(120) == 0
    finally:
      if proc.poll() is None:
        proc.kill()
  saved = os.listdir(tmp_path / 'w' / 'checkpoints')
  assert len(saved) == 1 and 0 < int(saved[0]) < 100_000
  assert not os.path.exists(_lock_file(tmp_path / 'w'))    # released
  assert _committed(tmp_path / 'w', int(saved[0]))


@pytest.mark.slow
@pytest.mark.parametrize('get_config,arg', [
    (single.get_config, 'parse_en,tiny'),
    (table3.get_config, 'parse+imagenet,tiny'),
    (table4.get_config, 'no_moe,tiny'),
    (table4.get_config, 'no_attention,tiny')])
def test_experiment_configs_train(data, xla_cache, tmp_path, get_config, arg):
  config = _config(data, get_config(arg),
                   {'train.num_train_steps': 2, 'eval.splits': ()})
  out = loop.train_and_evaluate(config, str(tmp_path))
  assert out['step'] == 2 and np.isfinite(out['loss'])
