"""The built-in tiny task suite: small, procedurally generated data.

Every generator is plain numpy, deterministic from ``(split, index, seed)``
and keeps its splits disjoint, so the whole system trains, evaluates and is
tested on one CPU without downloading anything. One module per concept; the
vision tasks use:

  shapes.py   drawing primitives (shapes, textures, clutter, noise)
  vision.py   image classification and image captioning generators

Sibling modules hold the text and speech tasks and the dataset builders.
"""
