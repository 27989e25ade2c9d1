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
from mm_jax import config as base
from mm_jax.data import prepare
from mm_jax.eval import chance
from mm_jax.eval import summary
from mm_jax.experiments import report
from mm_jax.experiments import reproduce

joint8 = base.load_module('joint8')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(xla_cache, **extra):
  return {**os.environ, 'JAX_COMPILATION_CACHE_DIR': xla_cache,
          'JAX_PLATFORMS': 'cpu', **extra}


@pytest.mark.e2e
def test_quickstart_script_end_to_end(data, xla_cache, tmp_path):
  workdir, table = tmp_path / 'quick', tmp_path / 'quickstart.md'
  flags = ' '.join(conftest.small_flags(data, {}))
  proc = subprocess.run(
      ['bash', os.path.join(REPO, 'launch', 'quickstart.sh')], cwd=REPO,
      env=_env(xla_cache, STEPS='3', WORKDIR=str(workdir),
               MM_JAX_SKIP_INSTALL='1', MM_JAX_TRAIN_ARGS=flags,
               MM_JAX_QUICKSTART_TABLE=str(table)),
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
  # The markdown table: one row per task, the same numbers as printed.
  text = table.read_text()
  assert '`bash launch/quickstart.sh (configs/joint8.py:tiny, STEPS=3)`' in text
  rows = [l for l in text.splitlines() if l.startswith('| ')]
  assert rows[0] == '| task | metric | value at step 3 | chance |'
  assert [r.split(' | ')[0][2:] for r in rows[1:]] == sorted(
      joint8.base.PAPER_TASKS)
  assert '| imagenet | top-1 / top-5 | ' in text


@pytest.mark.e2e
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


def test_summary_command_line_names_its_usage(tmp_path):
  with pytest.raises(SystemExit, match='usage: python -m mm_jax.eval.summary'):
    summary.main([])
  with pytest.raises(SystemExit, match='workdri'):
    summary.main(['--workdri=/tmp/x'])
  with pytest.raises(FileNotFoundError, match='metrics.jsonl'):
    summary.main([f'--workdir={tmp_path}'])


def test_markdown_table_one_row_per_task():
  values = {'imagenet/top1': 0.25, 'imagenet/top5': 0.5,
            'imagenet/log_ppl': 2.0, 'imagenet/examples': 128.0,
            'parse_en/token_accuracy': 0.8512,
            'parse_en/sequence_accuracy': 0.0625,
            'parse_en/sequence_accuracy_tf': 0.1,
            'translate_en_de/token_accuracy': 0.7, 'translate_en_de/bleu': 27.25,
            'mean/token_accuracy': 0.775}
  levels = {'imagenet': {'top1': 0.05, 'top5': 0.2},
            'parse_en': {'token_accuracy': 0.4, 'sequence_accuracy': 0.05},
            'translate_en_de': {'token_accuracy': 0.056}}
  assert summary.markdown_table(900, values, levels).splitlines() == [
      '| task | metric | value at step 900 | chance |',
      '|---|---|---|---|',
      '| imagenet | top-1 / top-5 | 0.250 / 0.500 | 0.050 / 0.200 |',
      '| parse_en | token accuracy / full-sequence accuracy | 0.851 / 0.062 '
      '| 0.400 / 0.050 |',
      '| translate_en_de | token accuracy / BLEU | 0.700 / 27.2 | 0.056 / - |']


def test_readme_quickstart_table_is_the_committed_run():
  """The README shows results/quickstart.md's table, which the quickstart
  run writes: rerun `bash launch/quickstart.sh` and paste it when the model,
  the data or the defaults change."""
  def table(path, begin=None, end=None):
    with open(os.path.join(REPO, path)) as f:
      text = f.read()
    if begin:
      text = text.split(begin, 1)[1].split(end, 1)[0]
    return [l for l in text.splitlines() if l.startswith('|')]
  readme = table('README.md', '<!-- quickstart:begin -->',
                 '<!-- quickstart:end -->')
  committed = table(os.path.join('results', 'quickstart.md'))
  assert len(committed) == 2 + len(joint8.base.PAPER_TASKS)
  assert readme == committed


def test_summary_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match='training work directory'):
    summary.last_evaluation(str(tmp_path))
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "loss": 2.0}\n')
  with pytest.raises(ValueError, match='no validation evaluation'):
    summary.last_evaluation(str(tmp_path))


@pytest.mark.e2e
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
  assert report.moe_layers(records) == ['encoder/moe']
  matrix = report.expert_load_matrix(records, 'encoder/moe',
                                        ['a', 'b', 'c'])
  np.testing.assert_allclose(matrix[0], [3.5, 0.0])
  np.testing.assert_allclose(matrix[1], [0.5, 0.5])
  assert np.isnan(matrix[2]).all()


@pytest.mark.slow
@pytest.mark.e2e
def test_reproduce_runs_the_tables_at_reduced_size(data, xla_cache,
                                                   tmp_path):
  overrides = {**conftest.SMALL, **data}
  out = reproduce.run_all(str(tmp_path / 'results'),
                          workroot=str(tmp_path / 'runs'), steps_per_task=1,
                          seeds=(0,), tables=('table3', 'table4'),
                          overrides=overrides)
  assert sorted(out['runs']) == sorted(
      set(reproduce.TABLES['table3'] + reproduce.TABLES['table4']))
  joint = out['runs']['joint8'][0]
  assert joint['steps'] == 8
  assert sorted(int(s) for s in joint['evaluations']) == list(range(1, 9))
  text = (tmp_path / 'results' / 'results.md').read_text()
  assert '### Table 3' in text and '### Table 4' in text
  assert '### Table 2' not in text          # its runs were not asked for
  assert '11.7%' in text                    # the paper's numbers
  assert 'equal per task (8)' in text
  for name in ('learning_curves.png', 'expert_load_joint8.png',
               'results.json'):
    assert (tmp_path / 'results' / name).stat().st_size > 0, name
  assert not (tmp_path / 'results' / 'expert_load_table4_no_moe.png').exists()
  # A finished run is read back, not trained again.
  again = reproduce.run_one('table3_parse', str(tmp_path / 'runs'), 'tiny',
                            1, 0, overrides)
  assert again['wall_seconds'] == out['runs']['table3_parse'][0][
      'wall_seconds']


def test_plateau_and_seed_means():
  def result(seed, values):
    return {'seed': seed, 'evaluations': {
        str(s): {'parse_en/token_accuracy': v, 'speech_en/wer': 1 - v}
        for s, v in values.items()}}
  # Seed means: 0.6, 0.81, 0.82 (best), 0.815; within 2% from step 20.
  runs = [result(0, {10: 0.5, 20: 0.80, 30: 0.81, 40: 0.79}),
          result(1, {10: 0.7, 20: 0.82, 30: 0.83, 40: 0.84})]
  mean, lo, hi, n = report.value_at(runs, 20, 'parse_en',
                                       'token_accuracy')
  assert (round(mean, 6), lo, hi, n) == (0.81, 0.8, 0.82, 2)
  p = report.plateau(runs, 'parse_en', 'token_accuracy')
  assert p == {'best_step': 30, 'plateau_step': 20, 'rising': False}
  # Lower is better: WER means 0.19, 0.18 (best), 0.185; 2% of 0.18 is
  # 0.0036, so only the best step itself is on the plateau.
  p = report.plateau(runs, 'speech_en', 'wer')
  assert p['best_step'] == 30 and p['plateau_step'] == 30
  rising = [result(0, {10: 0.2, 20: 0.4})]
  assert report.plateau(rising, 'parse_en', 'token_accuracy')['rising']
  assert report.value_at(runs, 50, 'parse_en', 'token_accuracy') is None


def test_table2_shows_single_runs_at_n_and_at_their_best_evaluation():
  def result(task, metrics, values):
    return {'steps': max(values), 'tasks': [task], 'evaluations': {
        str(s): {f'{task}/{m}': v + i for i, m in enumerate(metrics)}
        for s, v in values.items()}}
  runs = {'joint8': [{'steps': 16, 'tasks': [], 'evaluations': {}}]}
  for task in report.SINGLE_TASKS:
    # Best first metric at step 4 (0.5), worse again at 6.
    runs[f'single_{task}'] = [result(task, report.TASK_METRICS[task],
                                     {2: 0.3, 4: 0.5, 6: 0.4})]
  step, cells = report.best_cells(runs['single_parse_en'], 'parse_en')
  assert step == 4
  assert cells['sequence_accuracy'] == (1.5, 1.5, 1.5, 1)
  text = '\n'.join(report._table2(runs, 2, {}))  # pylint: disable=protected-access
  assert 'best evaluation (≤ 6 steps)' in text
  assert '| parse_en | token_accuracy | 30.0% | 50.0% @ 4 |' in text
  assert '| translate_en_de | bleu | 1.3 | 1.5 @ 4 |' in text


@pytest.mark.e2e
def test_a_finished_single_run_trains_on_to_a_larger_budget(data, xla_cache,
                                                            tmp_path):
  overrides = {**conftest.SMALL, **data}
  workroot = str(tmp_path / 'runs')
  first = reproduce.run_one('single_parse_en', workroot, 'tiny', 2, 0,
                            overrides, single_budget=1)
  assert first['steps'] == 2 and list(first['evaluations']) == ['2']
  longer = reproduce.run_one('single_parse_en', workroot, 'tiny', 2, 0,
                             overrides, single_budget=2)
  assert longer['steps'] == 4
  assert sorted(longer['evaluations'], key=int) == ['2', '4']
  # Step 2's evaluation is the first run's, kept, not a second copy.
  assert longer['evaluations']['2'] == first['evaluations']['2']
  assert longer['wall_seconds'] > first['wall_seconds']
  steps = [c['step'] for c in longer['curves']]
  assert steps == sorted(set(steps)) and steps[-1] == 4
  again = reproduce.run_one('single_parse_en', workroot, 'tiny', 2, 0,
                            overrides, single_budget=2)
  assert again['wall_seconds'] == longer['wall_seconds']
  with pytest.raises(ValueError, match='single_budget=0'):
    reproduce.run_config('single_parse_en', 'tiny', 2, single_budget=0)


def test_a_mixture_without_text_still_gets_a_vocabulary(data):
  from mm_jax import config as base  # pylint: disable=g-import-not-at-top
  single = base.load_module('single')
  config = conftest.small_config(data, single.get_config('imagenet,tiny'),
                                 {'data.vocab_path': ''})
  vocab = prepare.ensure_prepared(config.data)
  assert vocab.size > 10
  real = conftest.small_config(data, single.get_config('imagenet,base'),
                               {'data.vocab_path': ''})
  with pytest.raises(ValueError, match='config.data.vocab_path'):
    prepare.ensure_prepared(real.data)
