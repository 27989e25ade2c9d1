"""Tests for the mixed, resumable input pipeline (mm_jax/data/pipeline.py,
mixture.py, streams.py, prefetch.py) on in-memory sources."""

import json
import logging

import grain
import ml_collections
import numpy as np
import pytest

from mm_jax import config as base
from mm_jax.data import mixture as mixture_lib
from mm_jax.data import pipeline
from mm_jax.data import plan
from mm_jax.data import registry
from mm_jax.data import streams


class ByteVocab:
  """Byte-level stand-in vocabulary: id = byte + 3 (0 pad, 1 eos, 2 unk)."""

  def encode(self, text):
    return [b + 3 for b in text.encode('utf-8')]

  def decode(self, ids):
    return bytes(int(i) - 3 for i in ids if i >= 3).decode('utf-8', 'replace')


VOCAB = ByteVocab()


def _no_loader(split, data_cfg):
  raise AssertionError(f'the registry loader was called for {split}')


def _task(name, inp, out, target_space='en'):
  return registry.Task(name=name, input_modality=inp, output_modality=out,
                       target_space=None if out == 'class' else target_space,
                       sources={'tiny': _no_loader})


TASKS = {'tr': _task('tr', 'text', 'text', 'de'),
         'cls': _task('cls', 'image', 'class'),
         'cap': _task('cap', 'image', 'text'),
         'asr': _task('asr', 'audio', 'text')}


def _text_records(n, seed=0):
  rng = np.random.default_rng(seed)
  return [{'inputs': f'ok{i}:' + 'a' * int(rng.integers(0, 15)),
           'targets': 'b' * int(rng.integers(0, 10)) + f'{i}'}
          for i in range(n)]


def _image_records(n, text, seed=0):
  rng = np.random.default_rng(seed)
  return [{'inputs': rng.integers(0, 256, (int(rng.integers(12, 24)),
                                          int(rng.integers(12, 24)), 3),
                                  np.uint8),
           'targets': f'pic {i}' if text else i % 5} for i in range(n)]


def _audio_records(n, seed=0):
  """Clips of about 8, 18, 33 and 48 frames; the last exceed 40 frames."""
  rng = np.random.default_rng(seed)
  sizes = [(1600, 3200, 5600, 8000)[i % 4] + int(rng.integers(400))
           for i in range(n)]
  return [{'inputs': rng.normal(0, 0.1, size).astype(np.float32),
           'sample_rate': 16000, 'targets': f'said {i}'}
          for i, size in enumerate(sizes)]


def _sources():
  return {'tr': _text_records(30), 'cls': _image_records(12, False),
          'cap': _image_records(20, True, seed=1), 'asr': _audio_records(12)}


def _cfg(mixing='fixed', mixture=None, **overrides):
  d = base.data_config('tiny')
  d.mixture = ml_collections.ConfigDict(
      mixture or {'tr': 1.0, 'cls': 1.0, 'cap': 2.0})
  d.mixing = mixing
  d.batch_size = 4
  d.max_input_length = 24
  d.max_target_length = 16
  d.length_buckets = (8, 16)
  d.image_size = 16
  d.class_image_size = 0
  d.audio_max_frames = 40
  d.audio_frame_buckets = (16, 32)
  d.prefetch = 2
  d.shuffle_seed = 3
  d.adaptive_decay = 0.5
  for k, v in overrides.items():
    setattr(d, k, v)
  return d


def _config(cfg):
  """A run config around the data config ``cfg`` (the plan reads both)."""
  return ml_collections.ConfigDict({
      'data': cfg, 'task_loss_weights': {n: 1.0 for n in TASKS}})


def _plan(cfg, name):
  return plan.for_task(_config(cfg), TASKS[name])


def _iterator(cfg, sources=None, names=None, **kwargs):
  names = names or list(cfg.mixture.keys())
  plans = plan.resolve(_config(cfg), [TASKS[n] for n in names])
  return pipeline.make_train_iterator(
      cfg, VOCAB, plans, sources=sources or _sources(), **kwargs)


def _loss(task, step):
  return 1.0 + 0.5 * len(task) + np.sin(step)


def _take(it, start, n, feed_losses=True):
  out = []
  for step in range(start, start + n):
    task, batch = next(it)
    out.append((task, batch))
    if feed_losses:
      it.update_losses({task: _loss(task, step)})
  return out


def _assert_same(run_a, run_b):
  assert [t for t, _ in run_a] == [t for t, _ in run_b]
  for (_, a), (_, b) in zip(run_a, run_b):
    assert sorted(a) == sorted(b)
    for k in a:
      assert a[k].dtype == b[k].dtype
      np.testing.assert_array_equal(a[k], b[k])


def test_batch_contract_shapes_dtypes_and_bounded_buckets():
  with _iterator(_cfg()) as it:
    shapes = {t: set() for t in it.tasks}
    for task, batch in _take(it, 0, 24):
      shapes[task].add(tuple(v.shape for v in batch.values()))
      if task in ('tr', 'cap'):
        assert batch['targets'].dtype == np.int32
        assert batch['target_space'].dtype == np.int32
        want = registry.TARGET_SPACES['de' if task == 'tr' else 'en']
        np.testing.assert_array_equal(batch['target_space'], want)
        for row in batch['targets']:
          assert row[np.flatnonzero(row)[-1]] == 1     # EOS last
      if task == 'tr':
        assert set(batch) == {'inputs', 'targets', 'target_space'}
        assert batch['inputs'].dtype == np.int32
        assert batch['inputs'].shape[0] == 4
        assert batch['inputs'].shape[1] in (8, 16, 24)
        for row in batch['inputs']:
          assert row[np.flatnonzero(row)[-1]] == 1
      else:
        assert batch['inputs'].shape == (4, 16, 16, 3)
        assert batch['inputs'].dtype == np.float32
        assert 0 <= batch['inputs'].min() and batch['inputs'].max() <= 255
      if task == 'cls':
        assert set(batch) == {'inputs', 'targets'}
        assert batch['targets'].shape == (4,)
        assert batch['targets'].dtype == np.int32
      else:
        assert batch['targets'].shape[1] in (8, 16)
    assert all(shapes.values())
    # Inputs take 3 lengths, targets 2: at most 6 text shapes, whatever data.
    assert len(shapes['tr']) <= 6 and len(shapes['cap']) <= 2
    assert len(shapes['cls']) == 1


def test_class_image_size_and_batch_multiplier_shape_one_task_batches():
  cfg = _cfg(class_image_size=8)
  cfg.batch_size_multiplier = ml_collections.ConfigDict({'cls': 3})
  with _iterator(cfg) as it:
    shapes = {task: batch['inputs'].shape for task, batch in _take(it, 0, 24)}
  assert shapes['cls'] == (12, 8, 8, 3)     # 3 x batch_size 4, at 8 px
  assert shapes['cap'] == (4, 16, 16, 3)    # image -> text: image_size
  assert shapes['tr'][0] == 4               # not listed: multiplier 1


@pytest.mark.parametrize('mult', [0, 1.5])
def test_bad_batch_multiplier_is_a_clear_error(mult):
  cfg = _cfg()
  cfg.batch_size_multiplier = ml_collections.ConfigDict({'cls': mult})
  with pytest.raises(ValueError, match='batch_size_multiplier.cls'):
    _iterator(cfg)


def test_audio_batches_have_frame_buckets_and_masks():
  with _iterator(_cfg(mixture={'asr': 1.0})) as it:
    frames = set()
    for _, batch in _take(it, 0, 6):
      x, mask = batch['inputs'], batch['inputs_mask']
      assert x.dtype == np.float32 and x.shape[0] == 4
      assert x.shape[1] in (16, 32, 40) and x.shape[2:] == (80, 1)
      assert mask.dtype == bool and mask.shape == x.shape[:2]
      lengths = mask.sum(1)
      assert (lengths <= 40).all() and lengths.max() > x.shape[1] // 2 - 8
      for row, n in zip(x, lengths):
        assert not row[n:].any() and row[n - 1].any()
      frames.add(x.shape[1])
      np.testing.assert_array_equal(batch['target_space'], 1)
    counters = it.counters()['asr']
  assert counters['skipped_too_long'] > 0       # clips over 40 frames
  assert frames <= {16, 32, 40}


@pytest.mark.parametrize('mixing', ['adaptive', 'temperature'])
def test_resume_is_bit_exact(mixing):
  n, m = 7, 9
  with _iterator(_cfg(mixing)) as it:
    full = _take(it, 0, n + m)
  with _iterator(_cfg(mixing)) as it:
    _take(it, 0, n)
    state = json.loads(json.dumps(it.get_state()))
    counters = it.counters()
  with _iterator(_cfg(mixing)) as it:
    it.set_state(state)
    assert it.counters() == counters
    rest = _take(it, n, m)
    end_counters = it.counters()
  _assert_same(full[n:], rest)
  assert len({t for t, _ in full}) == 3
  assert sum(c['examples'] for c in end_counters.values()) == 4 * (n + m)


def test_losses_held_for_the_next_draw_are_applied_after_it_and_saved():
  cfg = _cfg('adaptive')
  with _iterator(cfg) as it:
    _take(it, 0, 4)
    before = it.probabilities()
    it.update_losses({'tr': 9.0}, after_next_draw=True)
    assert it.probabilities() == before         # held, not applied yet
    state = json.loads(json.dumps(it.get_state()))
    assert state['pending_losses'] == {'tr': 9.0}
    task = next(it)[0]                          # drawn before they apply
    assert it.probabilities()['tr'] > before['tr']     # then applied
    rest = _take(it, 5, 8)
  with _iterator(cfg) as it:
    it.set_state(state)
    assert next(it)[0] == task
    _assert_same(rest, _take(it, 5, 8))
    assert it.get_state()['pending_losses'] is None


def test_prefetch_does_not_change_the_stream():
  with _iterator(_cfg('adaptive', prefetch=0)) as it:
    plain = _take(it, 0, 10)
  with _iterator(_cfg('adaptive', prefetch=3)) as it:
    prefetched = _take(it, 0, 10)
  _assert_same(plain, prefetched)


def test_image_augmentation_is_seeded():
  cfg = _cfg(mixture={'cls': 1.0})
  with _iterator(cfg) as a, _iterator(cfg) as b:
    _assert_same(_take(a, 0, 3), _take(b, 0, 3))
  with _iterator(cfg) as a:
    first = _take(a, 0, 3)    # one epoch of the 12 records
  imgs = np.concatenate([b['inputs'] for _, b in first])
  labels = np.concatenate([b['targets'] for _, b in first])
  with _iterator(_cfg(mixture={'cls': 1.0}, shuffle_seed=4)) as c:
    other = _take(c, 0, 3)
  assert not np.array_equal(imgs, np.concatenate([b['inputs']
                                                  for _, b in other]))
  assert sorted(labels[:12]) == sorted(i % 5 for i in range(12))


class FlakySource:
  """Records whose index is in ``bad`` raise like an undecodable file."""

  def __init__(self, records, bad):
    self.records, self.bad = records, set(bad)

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    if i in self.bad:
      raise registry.CorruptExample(f'record {i} is truncated')
    return self.records[i]


def test_bad_records_are_skipped_counted_and_replaced(caplog):
  records = _text_records(30)
  corrupt, empty, too_long = {3, 17}, {5, 22, 29}, {8, 11}
  for i in empty:
    records[i] = {'inputs': '   ', 'targets': 'x'}
  for i in too_long:
    records[i] = {'inputs': 'z' * 40, 'targets': 'x'}
  sources = _sources()
  sources['tr'] = FlakySource(records, corrupt)
  cfg = _cfg()
  with caplog.at_level(logging.WARNING):
    with _iterator(cfg, sources) as it:
      run = _take(it, 0, 30, feed_losses=False)
      state, counters = it.get_state(), it.counters()
  with _iterator(cfg) as it:
    clean = _take(it, 0, 30, feed_losses=False)
  # The mixture does not notice the bad records.
  assert [t for t, _ in run] == [t for t, _ in clean]
  for task, batch in run:
    if task == 'tr':
      for row in batch['inputs']:
        assert VOCAB.decode(row).startswith('ok')
  # Exactly the bad records among those consumed were counted.
  consumed = state['tasks']['tr']['grain']['next_index']
  order = streams.shuffle(grain.MapDataset.range(30), streams.task_seed(
      cfg.shuffle_seed, 'tr', 0)).repeat()
  seen = [order[j] for j in range(consumed)]
  c = counters['tr']
  assert c['skipped_corrupt'] == sum(i in corrupt for i in seen) > 0
  assert c['skipped_empty'] == sum(i in empty for i in seen) > 0
  assert c['skipped_too_long'] == sum(i in too_long for i in seen) > 0
  assert c['examples'] == 4 * sum(t == 'tr' for t, _ in run)
  assert c['examples'] + sum(v for k, v in c.items() if k != 'examples') == (
      consumed)
  assert 'truncated' in caplog.text and 'too_long' in caplog.text


def test_all_bad_source_raises_a_clear_error():
  sources = _sources()
  sources['tr'] = FlakySource(_text_records(5), range(5))
  cfg = _cfg(mixture={'tr': 1.0}, prefetch=1)
  with _iterator(cfg, sources) as it:
    with pytest.raises(RuntimeError, match='pipeline of tr failed') as err:
      next(it)
  assert '10000 consecutive records were bad' in str(err.value.__cause__)


def test_weight_zero_disables_a_task():
  sources = _sources()
  del sources['cls']             # would fail if the pipeline asked for it
  cfg = _cfg(mixture={'tr': 1.0, 'cls': 0.0, 'cap': 1.0})
  with _iterator(cfg, sources) as it:
    assert it.tasks == ('cap', 'tr')     # sorted: listing order is moot
    assert set(it.probabilities()) == {'tr', 'cap'}
    assert {t for t, _ in _take(it, 0, 20)} == {'tr', 'cap'}
  with pytest.raises(ValueError, match='weight 0'):
    _iterator(_cfg(mixture={'tr': 0.0}), names=['tr'])


def test_static_probabilities():
  p = mixture_lib.static_probabilities
  assert p({'a': 1, 'b': 3}, 'fixed') == pytest.approx({'a': .25, 'b': .75})
  sizes = {'a': 100, 'b': 400, 'c': 7}
  w = {'a': 1, 'b': 1}
  assert p(w, 'proportional', sizes=sizes) == pytest.approx(
      {'a': .2, 'b': .8})
  assert p(w, 'temperature', sizes=sizes, temperature=2.0) == pytest.approx(
      {'a': 1 / 3, 'b': 2 / 3})
  assert p({'a': 3, 'b': 1}, 'proportional', sizes=sizes) == pytest.approx(
      {'a': 3 / 7, 'b': 4 / 7})
  for bad in (-1, 0, float('inf')):         # the plan leaves weight 0 out
    with pytest.raises(ValueError, match='finite weight > 0'):
      p({'a': 1, 'b': bad}, 'fixed')
  with pytest.raises(ValueError, match='Unknown mixing rule'):
    p({'a': 1}, 'uniform')
  with pytest.raises(ValueError, match='data size'):
    p({'a': 1}, 'proportional', sizes={'a': 0})


def test_adaptive_rule_and_draw_frequencies():
  mix = mixture_lib.Mixture({'a': 1, 'b': 1}, 'adaptive', decay=0.5, seed=7)
  assert mix.probabilities() == pytest.approx({'a': .5, 'b': .5})
  mix.update_losses({'a': 1.0})        # b has no loss yet: uses the max
  assert mix.probabilities() == pytest.approx({'a': .5, 'b': .5})
  mix.update_losses({'b': 3.0, 'a': 3.0})    # a: 0.5 * 1 + 0.5 * 3 = 2
  e2, e3 = np.exp(2.0), np.exp(3.0)
  assert mix.probabilities() == pytest.approx(
      {'a': e2 / (e2 + e3), 'b': e3 / (e2 + e3)})
  mix.update_losses({'a': float('nan')})      # ignored
  assert mix.probabilities()['a'] == pytest.approx(e2 / (e2 + e3))
  with pytest.raises(ValueError, match='not enabled'):
    mix.update_losses({'c': 1.0})
  fixed = mixture_lib.Mixture({'a': 1, 'b': 3}, 'fixed', seed=7)
  draws = [fixed.choose(s) for s in range(8000)]
  assert draws.count('b') / len(draws) == pytest.approx(0.75, abs=0.02)
  again = mixture_lib.Mixture({'a': 1, 'b': 3}, 'fixed', seed=7)
  assert [again.choose(s) for s in range(200)] == draws[:200]
  other = mixture_lib.Mixture({'a': 1, 'b': 3}, 'fixed', seed=8)
  assert [other.choose(s) for s in range(200)] != draws[:200]


def test_process_shards_are_disjoint_and_cover():
  records = _text_records(10)
  cfg = _cfg(mixture={'tr': 1.0}, batch_size=3)
  seen = []
  for p in range(3):
    with _iterator(cfg, {'tr': records}, process_index=p, process_count=3,
                   pad_sync=lambda x: x) as it:
      shard_len = len(range(p, 10, 3))
      ids = [VOCAB.decode(b['inputs'][0]).split(':')[0]
             for _, b in _take(it, 0, shard_len, feed_losses=False)]
      assert len(set(ids)) == shard_len       # one epoch, no repeats
      seen.append(set(ids))
  assert sum(len(s) for s in seen) == 10
  assert set.union(*seen) == {f'ok{i}' for i in range(10)}
  with pytest.raises(ValueError, match='divisible'):
    _iterator(_cfg(batch_size=4), process_count=3)


def test_pad_sync_pads_to_the_agreed_lengths():
  cfg = _cfg(mixture={'tr': 1.0}, batch_size=2)
  with _iterator(cfg, {'tr': _text_records(10)}, process_count=2,
                 pad_sync=lambda x: np.maximum(x, [24, 16])) as it:
    for _, batch in _take(it, 0, 3):
      assert batch['inputs'].shape == (1, 24)
      assert batch['targets'].shape == (1, 16)


def test_state_from_another_process_or_mixture_is_rejected():
  with _iterator(_cfg()) as it:
    state = it.get_state()
  with _iterator(_cfg(), process_index=1, process_count=2,
                 pad_sync=lambda x: x) as other:
    with pytest.raises(ValueError, match='process'):
      other.set_state(state)
  with _iterator(_cfg(mixing='adaptive')) as other:
    with pytest.raises(ValueError, match='does not match'):
      other.set_state(state)


def test_eval_pass_is_finite_padded_and_deterministic():
  records = _text_records(10)
  records[4] = {'inputs': 'z' * 40, 'targets': 'x'}
  src = FlakySource(records, {7})
  it = pipeline.make_eval_iterator(_cfg(), VOCAB, _plan(_cfg(), 'tr'),
                                   'validation',
                                   source=src)
  batches = list(it)
  assert it.num_batches == len(batches) == 3
  masks = np.concatenate([b['example_mask'] for b in batches])
  np.testing.assert_array_equal(masks, [i not in (4, 7) for i in range(10)]
                                + [False, False])
  assert it.counters() == {'examples': 8, 'skipped_corrupt': 1,
                           'skipped_empty': 0, 'skipped_too_long': 1}
  assert batches[0]['references'][1] == [records[1]['targets']]
  assert batches[2]['references'][2:] == [[], []]
  assert not batches[2]['inputs'][2:].any()
  _assert_same([('tr', _device(b)) for b in batches],
               [('tr', _device(b)) for b in it])


def _device(batch):
  return {k: v for k, v in batch.items() if k != 'references'}


def test_eval_shards_cover_the_split_once():
  records = _text_records(10)
  seen, counts = [], set()
  for p in range(3):
    it = pipeline.make_eval_iterator(
        _cfg(), VOCAB, _plan(_cfg(), 'tr'), 'test', source=records,
        batch_size=2,
        process_index=p, process_count=3, pad_sync=lambda x: x)
    batches = list(it)
    counts.add(len(batches))
    for b in batches:
      for row, keep in zip(b['inputs'], b['example_mask']):
        if keep:
          seen.append(VOCAB.decode(row).split(':')[0])
  assert counts == {2}
  assert sorted(seen) == sorted(f'ok{i}' for i in range(10))


@pytest.mark.slow
def test_worker_processes_give_the_same_exact_stream():
  from absl import flags  # pylint: disable=g-import-not-at-top
  parsed = flags.FLAGS.is_parsed()
  flags.FLAGS.mark_as_parsed()
  try:
    cfg = _cfg('adaptive', worker_count=1, mixture={'tr': 1.0, 'cls': 1.0})
    with _iterator(cfg) as it:
      head = _take(it, 0, 5)
      state = json.loads(json.dumps(it.get_state()))
      tail = _take(it, 5, 4)
    with _iterator(cfg) as it:
      it.set_state(state)
      _assert_same(tail, _take(it, 5, 4))
    with _iterator(_cfg('adaptive', mixture={'tr': 1.0, 'cls': 1.0})) as it:
      _assert_same(head + tail, _take(it, 0, 9))
  finally:
    if not parsed:
      flags.FLAGS.unparse_flags()


def test_process_max_on_one_process_is_the_identity():
  np.testing.assert_array_equal(pipeline.process_max(np.array([16, 32])),
                                [16, 32])


@pytest.mark.parametrize('permutation_max', [streams.PERMUTATION_MAX, 4])
def test_shuffle_is_a_new_permutation_each_epoch(monkeypatch,
                                                 permutation_max):
  monkeypatch.setattr(streams, 'PERMUTATION_MAX', permutation_max)
  ds = streams.shuffle(grain.MapDataset.range(10), seed=5).repeat()
  epochs = [[ds[e * 10 + i] for i in range(10)] for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(10))
  assert epochs[0] != epochs[1] != epochs[2]
  again = streams.shuffle(grain.MapDataset.range(10), seed=5).repeat()
  assert [again[i] for i in range(10, 20)] == epochs[1]
