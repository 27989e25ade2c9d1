"""Tests for the tiny vision generators (mm_jax/data/tiny/vision.py)."""

import collections
import re

import numpy as np
import pytest

from mm_jax.data.tiny import shapes
from mm_jax.data.tiny import vision

_OBJ = vision.SceneObject
_REL = re.compile(r'^(.*) (to the left of|left of|to the right of|right of|'
                  r'above|over|below|under) (.*)$')
_SHAPE_WORDS = {w: s for s in shapes.SHAPES for w in (s, shapes.plural(s))}


def _shapes_in(text):
  return [_SHAPE_WORDS[w] for w in text.replace(',', '').split()
          if w in _SHAPE_WORDS]


def _full_phrase(o):
  texture = '' if o.texture == 'solid' else o.texture + ' '
  return f'{o.size} {o.colour} {texture}{o.shape}'


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_class_names():
  assert len(vision.CLASS_NAMES) == 48
  assert len(set(vision.CLASS_NAMES)) == 48
  for name in vision.CLASS_NAMES:
    colour, shape = name.split()
    assert colour in shapes.COLOURS and shape in shapes.SHAPES


def test_image_shapes_dtypes_and_size_parameter():
  for size in (64, 40):
    for ex in vision.generate_images('train', 3, seed=0, image_size=size):
      assert set(ex) == {'image', 'label', 'label_name'}
      assert ex['image'].shape == (size, size, 3)
      assert ex['image'].dtype == np.uint8
      assert isinstance(ex['label'], int) and 0 <= ex['label'] < 48
      assert ex['label_name'] == vision.CLASS_NAMES[ex['label']]
  ex = next(vision.generate_captions('test', 1, seed=0, image_size=48))
  assert ex['image'].shape == (48, 48, 3) and ex['image'].dtype == np.uint8
  assert all(isinstance(c, str) for c in ex['captions'])


def test_deterministic_and_seed_dependent():
  a = list(vision.generate_images('validation', 4, seed=7))
  b = list(vision.generate_images('validation', 4, seed=7))
  c = list(vision.generate_images('validation', 4, seed=8))
  assert all(x['image'].tobytes() == y['image'].tobytes() and
             x['label'] == y['label'] for x, y in zip(a, b))
  assert all(x['image'].tobytes() != y['image'].tobytes()
             for x, y in zip(a, c))
  p = list(vision.generate_captions('train', 4, seed=7))
  q = list(vision.generate_captions('train', 4, seed=7))
  r = list(vision.generate_captions('train', 4, seed=8))
  assert [x['captions'] for x in p] == [x['captions'] for x in q]
  assert all(x['image'].tobytes() == y['image'].tobytes()
             for x, y in zip(p, q))
  assert [x['captions'] for x in p] != [x['captions'] for x in r]
  # A prefix of a longer run is the shorter run.
  longer = list(vision.generate_images('validation', 6, seed=7))
  assert longer[3]['image'].tobytes() == a[3]['image'].tobytes()


def test_labels_cover_all_classes():
  labels = {ex['label'] for ex in vision.generate_images('train', 700, 3)}
  assert labels == set(range(48))


def test_split_hash_proportions():
  counts = collections.Counter(vision.split_of(f'k{i}') for i in range(5000))
  assert 0.77 < counts['train'] / 5000 < 0.83
  assert 0.08 < counts['validation'] / 5000 < 0.12
  assert 0.08 < counts['test'] / 5000 < 0.12


def test_image_splits_disjoint():
  keys, images = {}, {}
  for split in vision.SPLITS:
    rng = np.random.default_rng(0)  # the same stream for every split
    keys[split] = {vision.image_key(vision.sample_image_object(rng, split), 64)
                   for _ in range(400)}
    images[split] = {ex['image'].tobytes()
                     for ex in vision.generate_images(split, 30, seed=0)}
  for i, a in enumerate(vision.SPLITS):
    for b in vision.SPLITS[i + 1:]:
      assert not keys[a] & keys[b], (a, b)
      assert not images[a] & images[b], (a, b)
  # Near-identical objects (same quantisation bins) share a key.
  o = _OBJ('star', 'red', 'solid', 'large', 20.2, 30.1, 15.3, 0.1)
  jiggled = _OBJ('star', 'red', 'solid', 'large', 20.4, 30.3, 15.5,
                 0.1 + 2 * np.pi / 5)  # one symmetry turn further
  assert vision.image_key(o, 64) == vision.image_key(jiggled, 64)


def test_caption_splits_disjoint():
  firsts = {split: {ex['captions'][0] for ex in
                    vision.generate_captions(split, 150, seed=0)}
            for split in vision.SPLITS}
  for i, a in enumerate(vision.SPLITS):
    for b in vision.SPLITS[i + 1:]:
      assert not firsts[a] & firsts[b], (a, b)
  for split, caps in firsts.items():
    assert all(vision.split_of('cap|' + c) == split for c in caps)


def test_objects_visible_in_class_colour():
  for ex in vision.generate_images('test', 60, seed=2):
    image = ex['image'].astype(np.float32)
    assert image.std() > 5.0  # not a constant image
    base = np.array(shapes.COLOURS[ex['label_name'].split()[0]])
    near = np.linalg.norm(image - base, axis=-1) < 75
    assert near.mean() > 0.008, ex['label_name']


def test_hand_checked_scene():
  left = _OBJ('triangle', 'red', 'striped', 'small', 12., 30., 7., 0.3)
  right = _OBJ('circle', 'blue', 'solid', 'large', 48., 34., 12., 0.0)
  rng = np.random.default_rng(0)
  caps = vision.describe_scene([right, left], rng)
  assert caps[0] == ('a small red striped triangle to the left of '
                     'a large blue circle')
  assert len(caps) == vision.NUM_CAPTIONS == len(set(caps))
  for c in caps[1:]:
    m = _REL.match(c)
    if m:
      a, rel, b = _shapes_in(m[1]), m[2], _shapes_in(m[3])
      assert (a, b) == ((['triangle'], ['circle']) if 'left' in rel else
                        (['circle'], ['triangle'])), c
      assert not {'above', 'below', 'over', 'under'} & set(c.split()), c
  top = _OBJ('square', 'green', 'dotted', 'large', 30., 12., 10., 0.0)
  bottom = _OBJ('star', 'yellow', 'solid', 'small', 34., 50., 7., 0.0)
  assert vision.canonical_caption([bottom, top]) == (
      'a large green dotted square above a small yellow star')
  alone = _OBJ('heart', 'orange', 'checked', 'small', 10., 54., 7., 0.0)
  assert vision.canonical_caption([alone]) == (
      'a small orange checked heart in the bottom left corner')
  image = vision.render_scene([left, right], rng)
  centre = image[31:38, 45:52].reshape(-1, 3).astype(np.float32).mean(0)
  assert centre[2] > 150 and centre[0] < 110, centre  # the blue circle


def test_captions_match_scene_geometry():
  rng = np.random.default_rng(5)
  margin = 0.08 * 64
  checked = 0
  while checked < 60:
    objs = vision.sample_scene(rng)
    by_shape = {o.shape: o for o in objs}
    if len(by_shape) < len(objs):
      continue  # relations are checked where shapes name objects uniquely
    checked += 1
    caps = vision.describe_scene(objs, rng)
    assert len(caps) == vision.NUM_CAPTIONS == len(set(caps))
    for o in objs:
      assert _full_phrase(o) in caps[0], (caps[0], o)
    colours = {o.colour for o in objs}
    for c in caps:
      words = c.replace(',', '').split()
      assert {w for w in words if w in shapes.COLOURS} <= colours, c
      assert set(_shapes_in(c)) <= set(by_shape), c
      if 'from left to right' in c:
        xs = [by_shape[s].x for s in _shapes_in(c)]
        assert xs == sorted(xs) and len(xs) == 3, c
      elif ' between ' in c:
        mid, ends = _shapes_in(c)[0], _shapes_in(c)[1:]
        assert min(by_shape[s].x for s in ends) < by_shape[mid].x < max(
            by_shape[s].x for s in ends), c
      elif m := _REL.match(c):
        (a,), rel, (b,) = _shapes_in(m[1]), m[2], _shapes_in(m[3])
        a, b = by_shape[a], by_shape[b]
        delta = {'to the left of': b.x - a.x, 'left of': b.x - a.x,
                 'to the right of': a.x - b.x, 'right of': a.x - b.x,
                 'above': b.y - a.y, 'over': b.y - a.y,
                 'below': a.y - b.y, 'under': a.y - b.y}[rel]
        assert delta >= margin, (c, a, b)


def test_scene_layout_has_no_overlap():
  rng = np.random.default_rng(1)
  for _ in range(100):
    objs = vision.sample_scene(rng)
    assert 1 <= len(objs) <= 3
    for i, a in enumerate(objs):
      assert a.radius <= a.x <= 64 - a.radius
      assert a.radius <= a.y <= 64 - a.radius
      for b in objs[i + 1:]:
        assert np.hypot(a.x - b.x, a.y - b.y) > a.radius + b.radius


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match='unknown split'):
    next(vision.generate_images('dev', 1, 0))
  with pytest.raises(ValueError, match='non-negative'):
    next(vision.generate_captions('train', 1, -1))
  with pytest.raises(ValueError, match='too small'):
    next(vision.generate_images('train', 1, 0, image_size=8))
  with pytest.raises(ValueError, match='unknown shape'):
    shapes.shape_sdf('hexagon', np.zeros((2, 2)), np.zeros((2, 2)))
