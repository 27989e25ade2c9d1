"""What a new user runs: the quickstart script, the Colab notebook, the
paper-table reproduction and the chance levels they print against.

All on the shrunk model and small suite of ``conftest.SMALL``; the session's
compilation cache is shared with the subprocesses and the notebook kernel.
"""

import json
import os
import subprocess

import nbformat
from nbclient import NotebookClient
import numpy as np
import pytest

import conftest
from configs import joint8
from mm_jax import reproduce
from mm_jax.data import prepare
from mm_jax.eval import chance
from mm_jax.eval import summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(xla_cache, **extra):
  return {**os.environ, 'JAX_COMPILATION_CACHE_DIR': xla_cache,
          'JAX_PLATFORMS': 'cpu', **extra}


def test_quickstart_script_end_to_end(data, xla_cache, tmp_path):
  workdir = tmp_path / 'quick'
  flags = ' '.join(conftest.small_flags(data, {}))
  proc = subprocess.run(
      ['bash', os.path.join(REPO, 'launch', 'quickstart.sh')], cwd=REPO,
      env=_env(xla_cache, STEPS='3', WORKDIR=str(workdir),
               MM_JAX_SKIP_INSTALL='1', MM_JAX_TRAIN_ARGS=flags),
      capture_output=True, text=True, timeout=900)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-4000:]
  assert 'Compiled the train step' in out
  assert 'Finished at step 3' in out
  assert 'Per-task validation metrics at step 3' in out
  for task in joint8.base.PAPER_TASKS:
    assert f'  {task}' in out, task
  assert f'tensorboard --logdir={workdir}' in out
  assert 'Config:' not in out and 'I1' not in out    # logs filtered
  assert (workdir / 'expert_load.jsonl').exists()


def test_quickstart_shows_tracebacks(data, tmp_path):
  proc = subprocess.run(
      ['bash', os.path.join(REPO, 'launch', 'quickstart.sh')], cwd=REPO,
      env=_env('', STEPS='2', WORKDIR=str(tmp_path / 'w'),
               MM_JAX_SKIP_INSTALL='1',
               MM_JAX_TRAIN_ARGS='--config.train.no_such_key=1'),
      capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'no_such_key' in proc.stdout + proc.stderr


def test_chance_levels_are_frequencies(data):
  config = conftest.small_config(data, joint8.get_config('tiny'))
  vocab = prepare.ensure_prepared(config.data)
  levels = chance.chance_levels(config, vocab)
  assert sorted(levels) == sorted(joint8.base.PAPER_TASKS)
  assert levels['imagenet']['top1'] >= 1 / 48
  assert levels['imagenet']['top5'] >= 5 / 48
  assert levels['imagenet']['top1'] <= levels['imagenet']['top5'] <= 1
  for task in ('translate_en_de', 'speech_en', 'parse_en', 'caption_en'):
    assert 0 < levels[task]['token_accuracy'] < 0.5, task
  assert 0 <= levels['parse_en']['sequence_accuracy'] <= 1


def test_summary_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match='training work directory'):
    summary.last_evaluation(str(tmp_path))
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "loss": 2.0}\n')
  with pytest.raises(ValueError, match='no validation evaluation'):
    summary.last_evaluation(str(tmp_path))


def test_notebook_executes(data, xla_cache, tmp_path):
  path = os.path.join(REPO, 'notebooks', 'demo.ipynb')
  nb = nbformat.read(path, as_version=4)
  assert 'colab-badge' in nb.cells[0].source
  installs = [c for c in nb.cells if 'install' in c.metadata.get('tags', [])]
  assert len(installs) == 1 and '-c /tmp/keep_jax.txt' in installs[0].source
  nb.cells = [c for c in nb.cells
              if 'install' not in c.metadata.get('tags', [])]
  overrides = dict(data)
  overrides.update({k: v for k, v in conftest.SMALL.items()})
  old = dict(os.environ)
  os.environ.update(_env(
      xla_cache, MM_JAX_DEMO_STEPS='2',
      MM_JAX_DEMO_WORKDIR=str(tmp_path / 'demo'),
      MM_JAX_DEMO_OVERRIDES=json.dumps(overrides)))
  try:
    NotebookClient(nb, timeout=900, kernel_name='python3',
                   resources={'metadata': {'path': REPO}}).execute()
  finally:
    os.environ.clear()
    os.environ.update(old)
  outputs = '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type ==
                      'code' for o in c.get('outputs', []))
  assert 'step 2' in outputs
  assert 'true class:' in outputs
  images = [o for c in nb.cells if c.cell_type == 'code'
            for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert len(images) == 2          # learning curves, expert load


def test_expert_load_matrix_averages_the_last_half():
  records = [{'step': s, 'moe_load/a/encoder/moe': [s, 0.0]}
             for s in (1, 2, 3, 4)]
  records.append({'step': 4, 'moe_load/b/encoder/moe': [0.5, 0.5]})
  assert reproduce.moe_layers(records) == ['encoder/moe']
  matrix = reproduce.expert_load_matrix(records, 'encoder/moe',
                                        ['a', 'b', 'c'])
  np.testing.assert_allclose(matrix[0], [3.5, 0.0])
  np.testing.assert_allclose(matrix[1], [0.5, 0.5])
  assert np.isnan(matrix[2]).all()


@pytest.mark.slow
def test_reproduce_runs_the_tables_at_reduced_size(data, xla_cache,
                                                   tmp_path):
  overrides = {**conftest.SMALL, **data}
  out = reproduce.run_all(str(tmp_path / 'results'),
                          workroot=str(tmp_path / 'runs'), steps=2,
                          tables=('table3', 'table4'), overrides=overrides)
  assert sorted(out['results']) == sorted(
      set(reproduce.TABLES['table3'] + reproduce.TABLES['table4']))
  text = (tmp_path / 'results' / 'results.md').read_text()
  assert '### Table 3' in text and '### Table 4' in text
  assert '### Table 2' not in text          # its runs were not asked for
  assert '11.7%' in text                    # the paper's numbers
  for name in ('learning_curves.png', 'expert_load_joint8.png',
               'results.json'):
    assert (tmp_path / 'results' / name).stat().st_size > 0, name
  assert not (tmp_path / 'results' / 'expert_load_table4_no_moe.png').exists()
  # A finished run is read back, not trained again.
  again = reproduce.run_one('table3_parse', str(tmp_path / 'runs'), 'tiny',
                            2, overrides)
  assert again['wall_seconds'] == out['results']['table3_parse'][
      'wall_seconds']


def test_a_mixture_without_text_still_gets_a_vocabulary(data):
  from configs import single  # pylint: disable=g-import-not-at-top
  config = conftest.small_config(data, single.get_config('imagenet,tiny'),
                                 {'data.vocab_path': ''})
  vocab = prepare.ensure_prepared(config.data)
  assert vocab.size > 10
  real = conftest.small_config(data, single.get_config('imagenet,base'),
                               {'data.vocab_path': ''})
  with pytest.raises(ValueError, match='config.data.vocab_path'):
    prepare.ensure_prepared(real.data)
