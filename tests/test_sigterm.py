"""SIGTERM stops a run within seconds in any phase: during the first
compilation (nothing to save) and during the end-of-run evaluation (the
checkpoint is already written); launch/train.py exits 0 either way."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import conftest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny model's real depth and width, so that its first compilation and
# its evaluation each take well over the 5 s the exit may take.
FULL_TINY = {'model.d_model': 128, 'model.num_heads': 1,
             'model.moe.num_experts': 8, 'model.moe.hidden': 256,
             'model.num_encoder_blocks_before_moe': 2,
             'model.num_encoder_blocks_after_moe': 4,
             'model.num_decoder_blocks_before_moe': 2,
             'model.num_decoder_blocks_after_moe': 2}
EXIT_SECONDS = 5.0


def _launch(data, workdir, extra, log):
  cmd = [sys.executable, os.path.join(REPO, 'launch', 'train.py'),
         '--config=configs/single.py:translate_en_de,tiny',
         f'--workdir={workdir}',
         *conftest.small_flags(data, {**FULL_TINY, **extra})]
  env = {k: v for k, v in os.environ.items()
         if k != 'JAX_COMPILATION_CACHE_DIR'}      # compile for real
  return subprocess.Popen(cmd, cwd=REPO, env={**env, 'JAX_PLATFORMS': 'cpu'},
                          stdout=log, stderr=subprocess.STDOUT)


def _wait_for(predicate, proc, timeout=600):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert proc.poll() is None, 'the run ended before the test could stop it'
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.1)


def _log(path):
  with open(path) as f:
    return f.read()


def _terminate(proc):
  """SIGTERM; returns (exit code, seconds to exit)."""
  start = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  try:
    code = proc.wait(60)
  finally:
    if proc.poll() is None:
      proc.kill()
  return code, time.monotonic() - start


@pytest.mark.e2e
def test_sigterm_during_the_first_compilation_exits_at_once(data, tmp_path):
  work, log_path = tmp_path / 'w', tmp_path / 'log.txt'
  with open(log_path, 'w') as log:
    proc = _launch(data, work, {'train.num_train_steps': 4}, log)
    _wait_for(lambda: ' parameters.' in _log(log_path), proc)
    time.sleep(1.0)                 # inside the train step's compilation
    assert 'Compiled the train step' not in _log(log_path)
    code, seconds = _terminate(proc)
  text = _log(log_path)
  assert code == 0, text[-3000:]
  assert seconds < EXIT_SECONDS, f'{seconds:.1f} s'
  assert 'the compilation of the train step' in text
  assert 'Compiled the train step' not in text
  # Nothing was newer than the (absent) last checkpoint: nothing saved.
  assert not os.listdir(work / 'checkpoints')
  assert not os.path.exists(work / 'train.lock')


@pytest.mark.e2e
def test_sigterm_during_the_final_evaluation_exits_at_once(data, tmp_path):
  work, log_path = tmp_path / 'w', tmp_path / 'log.txt'
  extra = {'train.num_train_steps': 2,
           'eval.max_batches': 0, 'eval.max_decode_length': 64}
  with open(log_path, 'w') as log:
    proc = _launch(data, work, extra, log)
    done = work / 'checkpoints' / '2' / 'commit_success.txt'
    _wait_for(done.exists, proc)
    time.sleep(1.0)                 # inside the evaluation
    code, seconds = _terminate(proc)
  text = _log(log_path)
  assert code == 0, text[-3000:]
  assert seconds < EXIT_SECONDS, f'{seconds:.1f} s'
  assert 'during the evaluation at step 2' in text
  with open(work / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  assert not any(k.startswith('validation/') for r in records for k in r)
  assert os.listdir(work / 'checkpoints') == ['2']
  assert not os.path.exists(work / 'train.lock')
