"""Drawing primitives for the tiny vision tasks: shapes, textures, clutter.

All drawing is numpy only and anti-aliased through signed distances: a shape's
signed distance ``d`` (in pixels, negative inside) gives the pixel coverage
``clip(0.5 - d, 0, 1)``. Pixel centres sit at ``(i + 0.5)``. A canvas is a
float32 ``[Y, X, 3]`` array of values in [0, 255]; ``finish`` adds pixel noise
and rounds it to uint8. Nothing here holds random state: every function that
needs randomness takes a ``np.random.Generator``.

Shapes live in unit coordinates (they fit in the unit disc) with ``u`` to the
right and ``v`` down, as image rows grow downwards.
"""

import functools
import math

import numpy as np

SHAPES = ('circle', 'triangle', 'square', 'pentagon', 'star', 'cross',
          'heart', 'crescent')
PLURALS = {'cross': 'crosses'}  # every other shape takes a plain 's'
# Rotational symmetry order, used to canonicalise angles for split hashing.
SYMMETRY = {'circle': 1, 'triangle': 3, 'square': 4, 'pentagon': 5,
            'star': 5, 'cross': 4, 'heart': 1, 'crescent': 1}
COLOURS = {
    'red': (220., 40., 40.),
    'orange': (245., 140., 20.),
    'yellow': (235., 220., 40.),
    'green': (40., 170., 60.),
    'blue': (40., 80., 225.),
    'purple': (145., 50., 190.),
}
TEXTURES = ('solid', 'striped', 'dotted', 'checked')
_TEXTURE_SHADE = 0.4  # pattern colour = object colour x this (a darker shade)


def plural(shape: str) -> str:
  """'cross' -> 'crosses', 'circle' -> 'circles'."""
  return PLURALS.get(shape, shape + 's')


def _regular(n: int, radius: float = 1.0, offset: float = -math.pi / 2):
  a = offset + 2 * math.pi * np.arange(n) / n
  return np.stack([radius * np.cos(a), radius * np.sin(a)], -1)


def _star_arms(inner: float = 0.42) -> list[np.ndarray]:
  """The 5-point star as 5 convex quads (heel, inner, tip, inner).

  Each quad's heel lies past the centre, opposite its tip, so that the quads
  overlap in the middle: an edge shared by two pieces would otherwise get half
  coverage and show as a seam.
  """
  v = _regular(10)
  v[1::2] *= inner
  return [np.stack([-0.9 * inner * v[2 * k], v[(2 * k - 1) % 10], v[2 * k],
                    v[2 * k + 1]]) for k in range(5)]


def _planes(pieces: list[np.ndarray]) -> tuple[np.ndarray, int]:
  """Convex pieces [K_i, 2] -> half-planes [3, N * K] (rows nu, nv, offset).

  For a point (u, v, 1) the product with a piece's K columns gives signed
  distances to its edge lines; their max is the piece's signed distance
  (exact inside, slightly under outside corners, which only sharpens the
  anti-aliasing there). Pieces with fewer edges repeat their last plane.
  """
  k_max = max(len(p) for p in pieces)
  cols = []
  for piece in pieces:
    centre = piece.mean(0)
    rows = []
    for a, b in zip(piece, np.roll(piece, -1, axis=0)):
      n = np.array([b[1] - a[1], a[0] - b[0]]) / np.linalg.norm(b - a)
      if n @ (centre - a) > 0:  # make the normal point outwards
        n = -n
      rows.append((n[0], n[1], -n @ a))
    rows += [rows[-1]] * (k_max - len(rows))
    cols += rows
  return np.asarray(cols, np.float32).T, len(pieces)


_HEART_H = 0.77  # heart = a diamond (half-diagonal h) + two circles
_HEART_C = 0.95 - _HEART_H  # diamond centre row (its bottom tip at v = 0.95)
_POLYGONS = {
    'triangle': _planes([_regular(3)]),
    'square': _planes([_regular(4, offset=math.pi / 4)]),
    'pentagon': _planes([_regular(5)]),
    'star': _planes(_star_arms()),
    'cross': _planes([np.array([(-w, -e), (w, -e), (w, e), (-w, e)])
                      for w, e in ((0.3, 0.95), (0.95, 0.3))]),
}


def shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Signed distance to ``shape`` in unit coordinates.

  Args:
    shape: one of ``SHAPES``.
    u, v: [Y, X] point coordinates in the shape's frame (unit radius).

  Returns:
    [Y, X] signed distance, negative inside, in units of the shape radius.
  """
  if shape == 'circle':
    return np.sqrt(u * u + v * v) - 1.0
  if shape == 'crescent':
    outer = np.sqrt(u * u + v * v) - 1.0
    bite = 0.85 - np.sqrt((u - 0.45) ** 2 + v * v)
    return np.maximum(outer, bite)
  if shape == 'heart':
    h, c = _HEART_H, _HEART_C
    diamond = (np.abs(u) + np.abs(v - c) - h) * math.sqrt(0.5)
    lobe = np.sqrt((np.abs(u) - h / 2) ** 2 + (v - c + h / 2) ** 2)
    return np.minimum(diamond, lobe - h * math.sqrt(0.5))
  if shape not in _POLYGONS:
    raise ValueError(f'unknown shape {shape!r}; expected one of {SHAPES}.')
  planes, pieces = _POLYGONS[shape]
  y, x = u.shape
  pts = np.stack([u, v, np.ones_like(u)], -1).reshape(y * x, 3)  # [P, 3]
  d = (pts @ planes).reshape(y * x, pieces, -1)  # [P, N, K]
  return d.max(-1).min(-1).reshape(y, x)


def _unit(x: np.ndarray) -> np.ndarray:
  """Clips to [0, 1] (two ufuncs: cheaper than np.clip on small arrays)."""
  return np.minimum(np.maximum(x, 0.0), 1.0)


def _texture(texture: str, u: np.ndarray, v: np.ndarray,
             period: float) -> np.ndarray:
  """u, v: [Y, X] pixel offsets in the object frame -> [Y, X] pattern cover."""
  a = (u / period) % 1.0 - 0.5  # in [-0.5, 0.5): position within a period
  if texture == 'striped':
    d = (np.abs(a) - 0.25) * period
  elif texture == 'dotted':
    b = (v / period) % 1.0 - 0.5
    d = 0.22 * period - np.sqrt(a * a + b * b) * period
  elif texture == 'checked':
    b = (v / period) % 1.0 - 0.5
    to_edge = np.minimum(0.5 - np.abs(a), np.abs(a))
    to_edge = np.minimum(to_edge, np.minimum(0.5 - np.abs(b), np.abs(b)))
    d = np.where((a < 0) == (b < 0), 1.0, -1.0) * to_edge * period
  else:
    raise ValueError(f'unknown texture {texture!r}; expected one of '
                     f'{TEXTURES}.')
  return _unit(d + 0.5)


@functools.lru_cache(maxsize=8)
def _ramp(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates over [0, 1]: xs [1, X], ys [Y, 1]."""
  c = ((np.arange(size, dtype=np.float32) + 0.5) / size)
  return c[None, :], c[:, None]


def jitter_colour(rng: np.random.Generator, name: str) -> np.ndarray:
  """A colour named in ``COLOURS`` with brightness and channel jitter: [3]."""
  base = np.asarray(COLOURS[name], np.float32)
  rgb = base * rng.uniform(0.82, 1.08) + rng.uniform(-18, 18, 3)
  return np.clip(rgb, 0, 255).astype(np.float32)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
  """A low-saturation background with a linear brightness ramp: [Y, X, 3]."""
  base = rng.uniform(45, 210) + rng.uniform(-20, 20, 3)
  theta = rng.uniform(0, 2 * math.pi)
  xs, ys = _ramp(size)
  ramp = math.cos(theta) * (xs - 0.5) + math.sin(theta) * (ys - 0.5)  # [Y, X]
  canvas = base.astype(np.float32) + rng.uniform(0, 40) * ramp[..., None]
  return np.clip(canvas, 0, 255).astype(np.float32)


def _bbox(canvas: np.ndarray, cx: float, cy: float, reach: float):
  height, width = canvas.shape[:2]
  x0, x1 = max(int(cx - reach) - 1, 0), min(int(cx + reach) + 2, width)
  y0, y1 = max(int(cy - reach) - 1, 0), min(int(cy + reach) + 2, height)
  return x0, x1, y0, y1


def _composite(canvas, x0, y0, alpha, fill):
  """Blends fill ([Y, X, 3] or [3]) into canvas[y0:, x0:] with alpha [Y, X]."""
  region = canvas[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]]
  region += alpha[..., None] * (fill - region)


def draw_object(canvas: np.ndarray, rng: np.random.Generator, shape: str,
                rgb: np.ndarray, texture: str, cx: float, cy: float,
                radius: float, angle: float) -> None:
  """Draws one textured shape into ``canvas`` in place.

  Args:
    canvas: float32 [Y, X, 3] in [0, 255], modified in place.
    rng: draws the texture's period and phase.
    shape: one of ``SHAPES``; texture: one of ``TEXTURES``.
    rgb: [3] fill colour; the pattern uses a darker shade of it.
    cx, cy: centre in pixels; radius: pixels; angle: radians, clockwise.
  """
  period = max(4.0, radius * rng.uniform(0.45, 0.6))
  phase_u, phase_v = rng.uniform(0, period, 2)
  x0, x1, y0, y1 = _bbox(canvas, cx, cy, radius)
  if x0 >= x1 or y0 >= y1:
    return
  dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
  dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
  c, s = math.cos(angle), math.sin(angle)
  u = c * dx + s * dy  # [Y, X] rotated into the object frame, in pixels
  v = c * dy - s * dx
  d = shape_sdf(shape, u / radius, v / radius) * radius
  alpha = _unit(0.5 - d)
  rgb = np.asarray(rgb, np.float32)
  if texture == 'solid':
    fill = rgb
  else:
    cover = _texture(texture, u + phase_u, v + phase_v, period)
    fill = rgb * (1.0 - (1.0 - _TEXTURE_SHADE) * cover[..., None])
  _composite(canvas, x0, y0, alpha.astype(np.float32), fill)


def draw_clutter(canvas: np.ndarray, rng: np.random.Generator,
                 count: int) -> None:
  """Draws ``count`` small distractor marks (short strokes and dots).

  Marks have random colours and are far smaller than any object (strokes at
  most ~9 px long on a 64 px canvas), so they never read as a shape.

  Args:
    canvas: float32 [Y, X, 3], modified in place.
    rng: the example's generator.
    count: number of marks.
  """
  if count <= 0:
    return
  height, width = canvas.shape[:2]
  scale = min(height, width) / 64
  rgb = rng.uniform(0, 255, (count, 3)).astype(np.float32)
  start = rng.uniform(0, 1, (count, 2)) * (width, height)
  stroke = rng.random(count) < 0.5  # else a dot
  length = np.where(stroke, rng.uniform(3, 9, count) * scale, 0.0)
  theta = rng.uniform(0, 2 * math.pi, count)
  half_width = np.where(stroke, rng.uniform(0.5, 1.0, count),
                        rng.uniform(0.8, 1.8, count)) * scale
  # Each mark fits a [P, P] patch around its midpoint; rasterise all at once.
  patch = int(math.ceil(9 * scale + 4 * scale)) + 3
  mid_x = start[:, 0] + length * np.cos(theta) / 2
  mid_y = start[:, 1] + length * np.sin(theta) / 2
  x0 = np.floor(mid_x).astype(int) - patch // 2  # [M] patch corners
  y0 = np.floor(mid_y).astype(int) - patch // 2
  col = lambda a: a.astype(np.float32)[:, None, None]  # [M] -> [M, 1, 1]
  ex, ey = col(length * np.cos(theta)), col(length * np.sin(theta))
  grid = np.arange(patch, dtype=np.float32) + 0.5
  px = grid[None, None, :] + col(x0 - start[:, 0])  # [M, 1, P]
  py = grid[None, :, None] + col(y0 - start[:, 1])  # [M, P, 1]
  t = _unit((px * ex + py * ey) / np.maximum(ex * ex + ey * ey, 1e-9))
  d = np.sqrt((px - ex * t) ** 2 + (py - ey * t) ** 2) - col(half_width)
  alpha = _unit(0.5 - d)  # [M, P, P]
  for m in range(count):
    # Clip the patch to the canvas.
    cx0, cy0 = max(x0[m], 0), max(y0[m], 0)
    cx1, cy1 = min(x0[m] + patch, width), min(y0[m] + patch, height)
    if cx0 < cx1 and cy0 < cy1:
      a = alpha[m, cy0 - y0[m]:cy1 - y0[m], cx0 - x0[m]:cx1 - x0[m]]
      _composite(canvas, cx0, cy0, a, rgb[m])


def finish(canvas: np.ndarray, rng: np.random.Generator,
           sigma: float) -> np.ndarray:
  """float32 [Y, X, 3] -> uint8 [Y, X, 3] plus pixel noise of std ``sigma``.

  The noise is uniform (a Gaussian costs ~5x more to draw and, as a nuisance,
  buys nothing).
  """
  out = rng.random(canvas.shape, dtype=np.float32)
  out -= 0.5
  out *= sigma * math.sqrt(12.0)
  out += canvas
  out += 0.5  # so that truncation below rounds to nearest
  np.clip(out, 0.0, 255.0, out=out)
  return out.astype(np.uint8)
