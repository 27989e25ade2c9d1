"""Tiny image classification and captioning data, generated locally.

Classification: one drawn object per image; the class is ``colour shape``
(8 shapes x 6 colours = 48 classes, ``CLASS_NAMES``). Texture (solid, striped,
dotted, checked), position, scale, rotation, clutter marks, background and
pixel noise are nuisances. Captioning: scenes of 1-3 non-overlapping objects
with two sizes, described by a small grammar with attributes, counts and
spatial relations computed from the object centres.

Every example is a pure function of ``(split, index, seed)``. Splits never
share a scene: each candidate is hashed (independently of the seed) to one of
100 buckets, and a split only accepts candidates from its own buckets (80 / 10
/ 10), re-drawing otherwise. Images hash their quantised object parameters
(class, texture, position, radius, rotation modulo symmetry); scenes hash their
canonical caption, which states every attribute and the layout, so no target
caption appears in two splits.
"""

import dataclasses
import hashlib
import math
from typing import Iterator

import numpy as np

from mm_jax.data.tiny import shapes

SPLITS = ('train', 'validation', 'test')
_BUCKETS = {'train': range(0, 80), 'validation': range(80, 90),
            'test': range(90, 100)}
_STREAM_IMAGES, _STREAM_CAPTIONS = 1, 2
COLOUR_NAMES = tuple(shapes.COLOURS)
CLASS_NAMES = tuple(f'{c} {s}' for s in shapes.SHAPES for c in COLOUR_NAMES)
NUM_CAPTIONS = 4  # per scene: the canonical target + 3 grammar variants
SIZE_RADIUS = {'small': (0.10, 0.13), 'large': (0.17, 0.21)}  # x image size


def split_of(key: str) -> str:
  """The split that owns a scene key (a deterministic hash, seed-free)."""
  bucket = int.from_bytes(
      hashlib.blake2b(key.encode(), digest_size=8).digest(), 'little') % 100
  return next(s for s, r in _BUCKETS.items() if bucket in r)


def _check(split: str, count: int, seed: int, image_size: int):
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}.')
  if count < 0 or seed < 0:
    raise ValueError(f'example count/index ({count}) and seed ({seed}) must '
                     'be non-negative integers.')
  if image_size < 32:
    raise ValueError(f'image_size {image_size} is too small to draw objects; '
                     'use 32 or more.')


def _rng(stream: int, split: str, index: int, seed: int):
  return np.random.default_rng([seed, stream, SPLITS.index(split), index])


@dataclasses.dataclass(frozen=True)
class SceneObject:
  """One object of a scene; x, y, radius in pixels, angle in radians."""
  shape: str
  colour: str
  texture: str
  size: str  # 'small' | 'large'
  x: float
  y: float
  radius: float
  angle: float = 0.0


# ---------------------------------------------------------------- images --

def class_id(obj: SceneObject) -> int:
  """The class of an object: an index into ``CLASS_NAMES``."""
  return (shapes.SHAPES.index(obj.shape) * len(COLOUR_NAMES)
          + COLOUR_NAMES.index(obj.colour))


def image_key(obj: SceneObject, image_size: int) -> str:
  """An object's split key: its class, texture and quantised placement.

  Centre and radius are binned to image_size / 32 pixels and the rotation,
  modulo the shape's symmetry, to 15 degrees, so near-identical objects share
  a key and hence a split.
  """
  q = image_size / 32
  turn = math.degrees(obj.angle) % (360 / shapes.SYMMETRY[obj.shape])
  return (f'img|{class_id(obj)}|{obj.texture}|{int(obj.x / q)}|'
          f'{int(obj.y / q)}|{int(obj.radius / q)}|{int(turn / 15)}')


def sample_image_object(rng: np.random.Generator, split: str,
                        image_size: int = 64) -> SceneObject:
  """Draws the object of a classification image, owned by ``split``."""
  size = image_size
  while True:  # rejection-sample parameters owned by this split
    label = int(rng.integers(len(CLASS_NAMES)))
    texture = shapes.TEXTURES[int(rng.integers(len(shapes.TEXTURES)))]
    radius = rng.uniform(0.18, 0.36) * size
    x, y = rng.uniform(radius, size - radius, 2)
    obj = SceneObject(
        shape=shapes.SHAPES[label // len(COLOUR_NAMES)],
        colour=COLOUR_NAMES[label % len(COLOUR_NAMES)], texture=texture,
        size='large' if radius >= 0.27 * size else 'small', x=float(x),
        y=float(y), radius=float(radius),
        angle=float(rng.uniform(0, 2 * math.pi)))
    if split_of(image_key(obj, size)) == split:
      return obj


def image_example(split: str, index: int, seed: int,
                  image_size: int = 64) -> dict:
  """Example ``index`` of a split.

  Returns:
    {'image': uint8 [image_size, image_size, 3], 'label': int,
     'label_name': str}.
  """
  _check(split, index, seed, image_size)
  rng = _rng(_STREAM_IMAGES, split, index, seed)
  obj = sample_image_object(rng, split, image_size)
  canvas = shapes.background(rng, image_size)
  shapes.draw_clutter(canvas, rng, int(rng.integers(2, 8)))
  shapes.draw_object(canvas, rng, obj.shape,
                     shapes.jitter_colour(rng, obj.colour), obj.texture,
                     obj.x, obj.y, obj.radius, obj.angle)
  shapes.draw_clutter(canvas, rng, int(rng.integers(0, 2)))  # some on top
  image = shapes.finish(canvas, rng, rng.uniform(2, 10))
  label = class_id(obj)
  return {'image': image, 'label': label, 'label_name': CLASS_NAMES[label]}


def generate_images(split: str, num_examples: int, seed: int,
                    image_size: int = 64) -> Iterator[dict]:
  """Yields ``num_examples`` classification examples of ``split``.

  Each is {'image': uint8 [image_size, image_size, 3], 'label': int in
  [0, 48), 'label_name': str (``CLASS_NAMES[label]``, e.g. 'red star')}.
  The same (split, num_examples, seed, image_size) gives identical bytes.
  """
  _check(split, num_examples, seed, image_size)
  for index in range(num_examples):
    yield image_example(split, index, seed, image_size)


# ---------------------------------------------------------------- scenes --

def _margin(image_size: int) -> float:
  """Minimum centre offset (pixels) for a spatial relation to be stated."""
  return 0.08 * image_size


def _layout_ok(xs: list[float], ys: list[float], radii: list[float],
               size: int) -> bool:
  """xs, ys, radii: [n] object centres and radii in pixels."""
  margin, gap = _margin(size), 2 * size / 64
  n = len(xs)
  for i in range(n):
    for j in range(i + 1, n):
      if math.hypot(xs[i] - xs[j], ys[i] - ys[j]) < radii[i] + radii[j] + gap:
        return False
  if n == 1:  # keep clear of the 3 x 3 location-cell boundaries
    edges = (size / 3, 2 * size / 3)
    return all(abs(p - e) >= 0.04 * size for p in (xs[0], ys[0])
               for e in edges)
  if n == 2:  # one clearly dominant axis
    return abs(abs(xs[0] - xs[1]) - abs(ys[0] - ys[1])) >= margin
  order = sorted(xs)  # three: a clear left-to-right order
  return all(b - a >= margin for a, b in zip(order, order[1:]))


def sample_scene(rng: np.random.Generator,
                 image_size: int = 64) -> list[SceneObject]:
  """Draws 1-3 objects with a valid layout (no overlap, clear relations)."""
  size = image_size
  num = 1 + int(rng.choice(3, p=[0.3, 0.4, 0.3]))
  while True:
    attrs = [(shapes.SHAPES[int(rng.integers(len(shapes.SHAPES)))],
              COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))],
              shapes.TEXTURES[int(rng.integers(len(shapes.TEXTURES)))],
              ('small', 'large')[int(rng.integers(2))]) for _ in range(num)]
    radii = np.array([rng.uniform(*SIZE_RADIUS[a[3]]) for a in attrs]) * size
    for _ in range(30):
      xs, ys = rng.uniform(radii + 1, size - radii - 1, (2, num)).tolist()
      if _layout_ok(xs, ys, radii.tolist(), size):
        angles = rng.uniform(0, 2 * math.pi, num).tolist()
        return [SceneObject(*a, x, y, float(r), t) for a, x, y, r, t in
                zip(attrs, xs, ys, radii, angles)]


def render_scene(objs: list[SceneObject], rng: np.random.Generator,
                 image_size: int = 64) -> np.ndarray:
  """Draws a scene over a background with light clutter: uint8 [Y, X, 3]."""
  canvas = shapes.background(rng, image_size)
  shapes.draw_clutter(canvas, rng, int(rng.integers(0, 4)))
  for o in objs:
    shapes.draw_object(canvas, rng, o.shape,
                       shapes.jitter_colour(rng, o.colour), o.texture,
                       o.x, o.y, o.radius, o.angle)
  return shapes.finish(canvas, rng, rng.uniform(2, 6))


# --------------------------------------------------------------- grammar --

_LOCATIONS = (
    ('in the top left corner', 'at the top', 'in the top right corner'),
    ('on the left', 'in the centre', 'on the right'),
    ('in the bottom left corner', 'at the bottom',
     'in the bottom right corner'))
_WITH = {'striped': 'with stripes', 'dotted': 'with dots',
         'checked': 'with a checked pattern'}
_NUMBERS = {2: 'two', 3: 'three'}
_LEFT = ('to the left of', 'left of')
_RIGHT = ('to the right of', 'right of')
_ABOVE = ('above', 'over')
_BELOW = ('below', 'under')


def _a(phrase: str) -> str:
  return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase


def _words(o: SceneObject) -> str:
  """Every attribute, no article: 'small red striped circle'."""
  texture = '' if o.texture == 'solid' else o.texture + ' '
  return f'{o.size} {o.colour} {texture}{o.shape}'


def _location(o: SceneObject, image_size: int) -> str:
  """The 3 x 3 cell of the object centre: 'in the top left corner'."""
  row, col = (min(int(p * 3 / image_size), 2) for p in (o.y, o.x))
  return _LOCATIONS[row][col]


def _np(o: SceneObject, form: str = 'full') -> str:
  """A noun phrase for one object; ``form`` picks the attributes stated."""
  if form == 'full':
    return _a(_words(o))
  if form == 'colour':
    return _a(f'{o.colour} {o.shape}')
  if form == 'sized':
    return _a(f'{o.size} {o.colour} {o.shape}')
  if form == 'with':
    if o.texture == 'solid':
      return _a(f'plain {o.colour} {o.shape}')
    return _a(f'{o.colour} {o.shape} {_WITH[o.texture]}')
  raise ValueError(f'unknown noun-phrase form {form!r}.')


def _listing(phrases: list[str]) -> str:
  return ', '.join(phrases[:-1]) + ' and ' + phrases[-1]


def _count(objs: list[SceneObject]) -> str:
  """'two red circles and a blue star' (groups by colour and shape)."""
  groups = {}
  for o in objs:
    groups.setdefault((o.colour, o.shape), []).append(o)
  parts = [_np(g[0], 'colour') if len(g) == 1 else
           f'{_NUMBERS[len(g)]} {g[0].colour} {shapes.plural(g[0].shape)}'
           for g in groups.values()]
  return parts[0] if len(parts) == 1 else _listing(parts)


def _relations(a: SceneObject, b: SceneObject,
               margin: float) -> list[tuple[str, ...]]:
  """The synonym sets of every relation that holds for 'a <rel> b'."""
  rels = []
  if b.x - a.x >= margin:
    rels.append(_LEFT)
  if a.x - b.x >= margin:
    rels.append(_RIGHT)
  if b.y - a.y >= margin:
    rels.append(_ABOVE)
  if a.y - b.y >= margin:
    rels.append(_BELOW)
  return rels


def canonical_order(objs: list[SceneObject]) -> tuple[list[SceneObject], str]:
  """Objects in caption order and the layout axis ('x' or 'y').

  One object: as is. Two: along the dominant axis, left or top one first.
  Three: left to right.
  """
  if len(objs) == 2:
    a, b = objs
    axis = 'x' if abs(a.x - b.x) > abs(a.y - b.y) else 'y'
    return sorted(objs, key=lambda o: getattr(o, axis)), axis
  return sorted(objs, key=lambda o: o.x), 'x'


def canonical_caption(objs: list[SceneObject], image_size: int = 64) -> str:
  """The training-target caption: every attribute and the layout, fixed form."""
  order, axis = canonical_order(objs)
  full = [_np(o) for o in order]
  if len(objs) == 1:
    return f'{full[0]} {_location(objs[0], image_size)}'
  if len(objs) == 2:
    rel = _LEFT[0] if axis == 'x' else _ABOVE[0]
    return f'{full[0]} {rel} {full[1]}'
  return _listing(full) + ' from left to right'


def describe_scene(objs: list[SceneObject], rng: np.random.Generator,
                   image_size: int = 64,
                   num_captions: int = NUM_CAPTIONS) -> list[str]:
  """Captions of a scene: the canonical one, then distinct grammar variants."""
  margin = _margin(image_size)
  order, _ = canonical_order(objs)
  first = canonical_caption(objs, image_size)
  pool = []
  if len(objs) == 1:
    o = objs[0]
    loc = _location(o, image_size)
    pool += [f'there is {_np(o)}', f'{_np(o, "colour")} {loc}',
             f'{_np(o, "with")} {loc}', _np(o, 'sized'),
             f'a single {_words(o)}', _np(o, 'with')]
  else:
    forms = ('colour', 'with', 'sized')

    def form():
      return forms[int(rng.integers(len(forms)))]

    for i, a in enumerate(order):
      for b in order[i + 1:]:
        for x, y in ((a, b), (b, a)):
          for words in _relations(x, y, margin):
            rel = words[int(rng.integers(len(words)))]
            pool.append(f'{_np(x, form())} {rel} {_np(y, form())}')
    pool.append(_count(objs))
    if len(objs) == 3:
      a, b, c = order
      pool.append('from left to right ' + _listing(
          [_np(o, 'colour') for o in order]))
      pool.append(f'{_np(b, "colour")} between {_np(a, "colour")} and '
                  f'{_np(c, "colour")}')
    else:
      pool.append(f'{_np(order[0], "with")} and {_np(order[1], "with")}')
  captions = [first]
  for i in rng.permutation(len(pool)):
    if len(captions) == num_captions:
      break
    if pool[i] not in captions:
      captions.append(pool[i])
  return captions


def caption_example(split: str, index: int, seed: int,
                    image_size: int = 64) -> dict:
  """Example ``index`` of a split.

  Returns:
    {'image': uint8 [image_size, image_size, 3], 'captions': list[str]}.
  """
  _check(split, index, seed, image_size)
  rng = _rng(_STREAM_CAPTIONS, split, index, seed)
  while True:  # rejection-sample scenes owned by this split
    objs = sample_scene(rng, image_size)
    if split_of('cap|' + canonical_caption(objs, image_size)) == split:
      break
  return {'image': render_scene(objs, rng, image_size),
          'captions': describe_scene(objs, rng, image_size)}


def generate_captions(split: str, num_examples: int, seed: int,
                      image_size: int = 64) -> Iterator[dict]:
  """Yields ``num_examples`` captioning examples of ``split``.

  Each is {'image': uint8 [image_size, image_size, 3], 'captions':
  list[str]} with ``NUM_CAPTIONS`` distinct captions; the first is the
  canonical training target, all are BLEU references.
  """
  _check(split, num_examples, seed, image_size)
  for index in range(num_examples):
    yield caption_example(split, index, seed, image_size)
