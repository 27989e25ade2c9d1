"""Tests for per-example preprocessing and batching (mm_jax/data/preprocess.py,
mm_jax/data/batching.py)."""

import dataclasses
import io

import numpy as np
from PIL import Image
import pytest
import sentencepiece as spm

from mm_jax import config as base
from mm_jax import contract
from mm_jax.data import batching
from mm_jax.data import plan
from mm_jax.data import preprocess
from mm_jax.data.preprocess import Skip


class ByteVocab:
  """Byte-level stand-in vocabulary: id = byte + 3 (0 pad, 1 eos, 2 unk)."""

  def encode(self, text):
    return [b + 3 for b in text.encode('utf-8')]

  def decode(self, ids):
    return bytes(i - 3 for i in ids if i >= 3).decode('utf-8', 'replace')


@dataclasses.dataclass
class FakeTask:
  name: str
  input_modality: str
  output_modality: str
  target_space: str = 'en'


def _preprocessor(task, data_cfg, vocab, *, train):
  return preprocess.Preprocessor(task, data_cfg, vocab, train=train,
                                 image_size=plan.image_size(task, data_cfg))


def _data_cfg(**overrides):
  d = base.data_config('tiny')
  d.image_size = 16
  d.class_image_size = 0      # classification at image_size too
  d.max_input_length = 12
  d.max_target_length = 10
  d.length_buckets = (4, 8, 16)
  d.audio_max_frames = 40
  d.audio_frame_buckets = (16, 32)
  for k, v in overrides.items():
    setattr(d, k, v)
  return d


def test_encode_text_eos_empty_and_too_long():
  v = ByteVocab()
  np.testing.assert_array_equal(preprocess.encode_text('ab', v, 5),
                                [100, 101, 1])
  assert preprocess.encode_text(b'ab', v, 5).dtype == np.int32
  assert preprocess.encode_text('  ', v, 5) == Skip('empty', 'empty text')
  assert preprocess.encode_text('abcde', v, 5).reason == 'too_long'
  assert len(preprocess.encode_text('abcd', v, 5)) == 5   # EOS fits exactly
  assert preprocess.encode_text(None, v, 5).reason == 'corrupt'


def test_sentencepiece_vocab_tokenises_with_eos():
  words = ['the', 'red', 'circle', 'is', 'left', 'of', 'a', 'blue', 'square']
  rng = np.random.default_rng(0)
  lines = [' '.join(rng.choice(words, 6)) for _ in range(300)]
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=model, vocab_size=24,
      hard_vocab_limit=False, minloglevel=2,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, model_type='unigram')
  sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
  pre = _preprocessor(FakeTask('t', 'text', 'text'), _data_cfg(),
                                sp, train=False)
  out = pre({'inputs': 'the red circle', 'targets': 'a blue square'})
  assert out['inputs'][-1] == contract.EOS_ID
  assert 0 not in out['inputs'].tolist()
  assert sp.decode(out['targets'][:-1].tolist()) == 'a blue square'
  assert out['references'] == ['a blue square']


def _image(h=24, w=20, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def test_image_train_random_but_seeded():
  img = _image()
  a = preprocess.image_train(img, 16, np.random.default_rng(1))
  b = preprocess.image_train(img, 16, np.random.default_rng(1))
  c = preprocess.image_train(img, 16, np.random.default_rng(2))
  assert a.shape == (16, 16, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_image_train_flip_only_when_asked():
  img = _image()
  flips = set()
  for seed in range(20):
    with_flip = preprocess.image_train(img, 16, np.random.default_rng(seed))
    no_flip = preprocess.image_train(img, 16, np.random.default_rng(seed),
                                     flip=False)
    flipped = not np.array_equal(with_flip, no_flip)
    if flipped:
      np.testing.assert_array_equal(with_flip, no_flip[:, ::-1])
    flips.add(flipped)
  assert flips == {True, False}


def test_random_crop_box_inside_image_and_area_range():
  rng = np.random.default_rng(0)
  for _ in range(200):
    x0, y0, x1, y1 = preprocess.random_crop_box(30, 50, rng, area=(0.3, 0.9))
    assert 0 <= x0 < x1 <= 50 and 0 <= y0 < y1 <= 30
    frac = (x1 - x0) * (y1 - y0) / (30 * 50)
    assert 0.3 - 1e-9 <= frac <= 0.9 + 1e-9


def test_image_eval_deterministic_and_formats():
  img = _image(30, 40)
  a = preprocess.image_eval(img, 16)
  np.testing.assert_array_equal(a, preprocess.image_eval(img, 16))
  assert a.shape == (16, 16, 3) and a.dtype == np.uint8
  grey = preprocess.image_eval(img[..., 0], 16)
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
  rgba = np.concatenate([img, np.zeros_like(img[..., :1])], -1)
  np.testing.assert_array_equal(preprocess.image_eval(rgba, 16), a)
  png = io.BytesIO()
  Image.fromarray(img).save(png, format='PNG')
  np.testing.assert_array_equal(preprocess.image_eval(png.getvalue(), 16), a)
  # A constant image stays constant: no border / interpolation artefacts.
  flat = preprocess.image_eval(np.full((9, 13, 3), 77, np.uint8), 16)
  np.testing.assert_allclose(flat, 77)


def test_audio_features_shapes_and_skips():
  wav = np.random.default_rng(0).normal(0, 0.1, 3200).astype(np.float32)
  f = preprocess.audio_features(wav, 16000, deltas=False, max_frames=40)
  assert f.dtype == np.float32 and f.shape[1:] == (80, 1)
  assert 10 <= f.shape[0] <= 21          # 0.2 s at a 10 ms hop
  f3 = preprocess.audio_features(wav, 16000, deltas=True, max_frames=40)
  assert f3.shape == f.shape[:2] + (3,)
  i16 = (wav * 32768).astype(np.int16)
  fi = preprocess.audio_features(i16, 16000, deltas=False, max_frames=40)
  np.testing.assert_allclose(fi, f, atol=1e-2)
  long = preprocess.audio_features(np.tile(wav, 4), 16000, deltas=False,
                                   max_frames=40)
  assert long.reason == 'too_long'
  assert preprocess.audio_features(wav[:0], 16000, deltas=False,
                                   max_frames=40).reason == 'empty'
  bad = wav.copy()
  bad[5] = np.nan
  assert preprocess.audio_features(bad, 16000, deltas=False,
                                    max_frames=40).reason == 'corrupt'


def test_preprocessor_marks_bad_records_corrupt():
  cfg = _data_cfg()
  img_cls = _preprocessor(FakeTask('i', 'image', 'class'), cfg,
                                    ByteVocab(), train=True)
  rng = np.random.default_rng(0)
  ok = img_cls({'inputs': _image(), 'targets': 3}, rng)
  assert ok['targets'].shape == () and ok['targets'].dtype == np.int32
  assert ok['inputs'].shape == (16, 16, 3)
  assert img_cls({'inputs': b'not a jpeg', 'targets': 1}, rng).reason == (
      'corrupt')
  assert img_cls({'inputs': _image(), 'targets': -1}, rng).reason == 'corrupt'
  assert img_cls({'targets': 1}, rng).reason == 'corrupt'    # no inputs
  marker = Skip('corrupt', 'x')
  assert img_cls(marker, rng) is marker
  with pytest.raises(ValueError, match='modality'):
    _preprocessor(FakeTask('v', 'video', 'class'), cfg, ByteVocab(),
                            train=True)


def test_caption_images_are_not_flipped():
  pre = _preprocessor(FakeTask('c', 'image', 'text'), _data_cfg(),
                                ByteVocab(), train=True)
  assert not pre.flip and pre.crop_area == preprocess.CAPTION_CROP_AREA
  cls = _preprocessor(FakeTask('i', 'image', 'class'), _data_cfg(),
                                ByteVocab(), train=True)
  assert cls.flip


def test_effective_buckets_and_bucket_length():
  assert batching.effective_buckets((16, 32, 64), 64) == (16, 32, 64)
  assert batching.effective_buckets((16, 32, 64), 40) == (16, 32, 40)
  assert batching.effective_buckets((64, 16), 100) == (16, 64, 100)
  assert batching.bucket_length(17, (16, 32)) == 32
  assert batching.bucket_length(0, (16, 32)) == 16
  with pytest.raises(ValueError, match='largest bucket'):
    batching.bucket_length(33, (16, 32))


def _spec(inp, out, cfg=None):
  return plan.batch_spec(FakeTask('t', inp, out), cfg or _data_cfg())


def test_collate_text_pads_to_bucket():
  spec = _spec('text', 'text')
  assert spec.input_buckets == (4, 8, 12) and spec.target_buckets == (4, 8, 10)
  ex = [{'inputs': np.arange(1, 6, dtype=np.int32),
         'targets': np.asarray([5, 1], np.int32)},
        {'inputs': np.asarray([7, 1], np.int32),
         'targets': np.asarray([4, 4, 4, 1], np.int32)}]
  b = batching.collate(ex, spec)
  assert set(b) == {'inputs', 'targets', 'target_space'}
  assert b['inputs'].shape == (2, 8) and b['inputs'].dtype == np.int32
  assert b['targets'].shape == (2, 4) and b['targets'].dtype == np.int32
  np.testing.assert_array_equal(b['inputs'][1], [7, 1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(b['target_space'], [1, 1])
  with pytest.raises(ValueError, match='empty slots'):
    batching.collate([ex[0], None], spec)


def test_collate_audio_and_class_eval_batch():
  spec = _spec('audio', 'class')
  ex = [{'inputs': np.ones((20, 80, 1), np.float32),
         'targets': np.asarray(3, np.int32)}, None]
  b = batching.collate(ex, spec, eval_batch=True)
  assert b['inputs'].shape == (2, 32, 80, 1)
  assert b['inputs_mask'].dtype == bool
  np.testing.assert_array_equal(b['inputs_mask'].sum(1), [20, 0])
  np.testing.assert_array_equal(b['targets'], [3, 0])
  np.testing.assert_array_equal(b['example_mask'], [True, False])
  assert 'target_space' not in b and 'references' not in b


def test_collate_image_eval_references_and_pad_to():
  spec = _spec('image', 'text')
  ex = [None, {'inputs': np.full((16, 16, 3), 200, np.uint8),
               'targets': np.asarray([9, 1], np.int32), 'references': ['x']}]
  b = batching.collate(ex, spec, eval_batch=True)
  assert b['inputs'].shape == (2, 16, 16, 3)
  assert b['inputs'].dtype == np.float32 and b['inputs'].max() == 200
  assert b['references'] == [[], ['x']]
  np.testing.assert_array_equal(batching.variable_lengths(b, spec), [0, 4])
  grown = batching.pad_to(b, spec, [0, 10])
  assert grown['targets'].shape == (2, 10)
  np.testing.assert_array_equal(grown['targets'][:, :4], b['targets'])
  assert not grown['targets'][:, 4:].any()
  with pytest.raises(ValueError, match='pad length'):
    batching.pad_to(b, spec, [0, 2])
