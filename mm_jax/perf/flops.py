"""Analytic FLOP count of one train step, per modality net and body part.

  table = flops.step_flops(config.model, 'text', 'text',
                           {'inputs': (256, 256), 'targets': (256, 256)})
  table['total']          # FLOPs of one train step (forward + backward)
  print(flops.format_table(table))

Counted: every matmul and convolution of the model, from the config and the
batch shapes, as multiply-accumulates (MACs) of the forward pass; a step is
``2 FLOP/MAC x 3`` (forward, and a backward of twice the forward). What is
counted, per position of the sequence or grid it runs on:

- separable convolution ``I -> F`` with ``K`` taps: ``K I`` (depthwise) +
  ``I F`` (pointwise; ``I F / g`` for T2T's sub-separable ``-g``; ``K I F /
  g + F F`` for ``+g``); a full convolution ``K I F``;
- attention: the Q/K/V/output projections (``d^2`` each, per query or source
  position) and the scores and weighted values (``2 S d`` per query);
- the MoE at its active ``k``: router ``2 d E`` (clean and noise logits)
  and ``k`` experts of ``2 d F`` per real token; ``executed`` also counts
  the capacity buffer's slots (``cf k`` per token, padding included), which
  is what XLA counts;
- the softmax ``d V`` per target position; the class head.

Not counted: LayerNorm, ReLU, masks, residual adds, gathers, the optimiser
(element-wise work: a few percent at ``d >= 512``, more at ``d = 128``).
The checks: ``tests/test_flops.py`` compares ``executed`` with XLA's cost
analysis of the lowered step on the CPU, and docs/experiments.md has a hand
count ("Benchmarks").
"""

import math
from typing import Dict, Mapping, Sequence, Tuple


from mm_jax.model import conv
from mm_jax.model.modalities import audio as audio_shapes
from mm_jax.model.modalities import categorical
from mm_jax.model import moe

STEP_FACTOR = 6          # 2 FLOP per MAC x (forward + backward = 3 forwards)


def sepconv_macs(positions: int, in_f: int, out_f: int, taps: int,
                 separability: int = 0) -> int:
  """MACs of one ``SepConv`` (``separability`` as ``conv.SepConv``)."""
  g = abs(separability)
  if separability > 0:
    mix = out_f * out_f if g > 1 else 0
    return positions * (taps * in_f * out_f // g + mix)
  pointwise = in_f * out_f // g if g > 1 else in_f * out_f
  return positions * (taps * in_f + pointwise)


def conv_block_macs(cfg, positions: int, steps: Sequence[Tuple[int, int]]
                    ) -> int:
  d = cfg.d_model
  seps = conv.t2t_separabilities(cfg.conv_separability, len(steps))
  return sum(sepconv_macs(positions, d, d, k, s)
             for (k, _), s in zip(steps, seps))


def attention_macs(cfg, queries: int, sources: int, batch: int) -> int:
  """The attention block: two causal ConvSteps and dot-product attention."""
  d = cfg.d_model
  seps = conv.t2t_separabilities(cfg.conv_separability,
                                 2 * len(cfg.attention_conv))
  convs = sum(sepconv_macs(batch * queries, d, d, k, s)
              for (k, _), s in zip(cfg.attention_conv, seps))
  proj = 0
  if cfg.attention_projections:
    proj = batch * (2 * queries + 2 * sources) * d * d
  return convs + proj + batch * 2 * queries * sources * d


def moe_macs(cfg, batch: int, length: int, train: bool = True
             ) -> Tuple[int, int]:
  """(model MACs at the active k, executed MACs with capacity slots)."""
  m, d = cfg.moe, cfg.d_model
  tokens = batch * length
  if not cfg.use_moe:                 # dense FFN of hidden k * F
    dense = tokens * 2 * d * m.k * m.hidden
    return dense, dense
  router = tokens * d * m.num_experts * (2 if train else 1)
  active = tokens * m.k * 2 * d * m.hidden
  groups, group, _ = moe.group_layout(batch, length, m.group_size)
  cf = m.capacity_factor_train if train else m.capacity_factor_eval
  cap = moe.capacity(cf, m.k, group, m.num_experts)
  executed = groups * m.num_experts * cap * 2 * d * m.hidden
  return router + active, router + executed


def image_entry_macs(cfg, batch: int, height: int, width: int
                     ) -> Tuple[int, Tuple[int, int]]:
  """(MACs, grid) of the Xception entry flow (``modalities/image.py``)."""
  filters = tuple(cfg.image_entry_filters)
  y, x = -(-height // 2), -(-width // 2)
  macs = batch * y * x * 9 * 3 * filters[0]            # full 3x3, stride 2
  macs += batch * y * x * 9 * filters[0] * filters[1]   # full 3x3
  in_f = filters[1]
  for width_f in [min(f, cfg.d_model) for f in filters[2:]] + [cfg.d_model]:
    macs += _conv_res_macs(batch * y * x, in_f, width_f, 9)
    y, x = -(-y // 2), -(-x // 2)
    macs += batch * y * x * (in_f + in_f * width_f)     # 1x1 skip, stride 2
    in_f = width_f
  return macs, (y, x)


def _conv_res_macs(positions: int, in_f: int, out_f: int, taps: int) -> int:
  """The two ConvSteps of a ConvRes (its skip counted by the caller)."""
  return (sepconv_macs(positions, in_f, out_f, taps) +
          sepconv_macs(positions, out_f, out_f, taps))


def class_exit_macs(cfg, batch: int, grid: Tuple[int, int]) -> int:
  """The Xception exit flow and class head (``modalities/categorical.py``)."""
  d = cfg.d_model
  w1, w2, w3 = categorical.exit_widths(d, cfg.class_exit_multipliers)
  gy, gx = grid
  full = batch * gy * gx
  half = batch * -(-gy // 2) * -(-gx // 2)
  macs = sepconv_macs(half, d, w1, 9)                   # strided skip
  macs += sepconv_macs(full, d, d, 9) + sepconv_macs(full, d, w1, 9)
  macs += sepconv_macs(half, w1, w2, 9) + sepconv_macs(half, w2, w3, 9)
  return macs + batch * w3 * cfg.num_classes


def audio_entry_macs(cfg, batch: int, frames: int, mel_bins: int,
                     channels: int) -> Tuple[int, int]:
  """(MACs, output length) of the audio ConvRes stack on log-mel input
  ``[batch, frames, mel_bins, channels]``."""
  k = audio_shapes.num_time_blocks(cfg.audio_time_reduction)
  m, c = mel_bins, channels
  if cfg.audio_input == 'waveform':
    m, c = 1, 1
  taps = 9 if m > 1 else 3
  t, macs = frames, 0
  for i in range(k):
    f = 2 ** (i + 1)
    macs += _conv_res_macs(batch * t * m, c, f, taps)
    t = -(-t // 2)
    macs += batch * t * m * (c + c * f)                 # 1x1 skip, stride 2
    c = f
  in_f = m * c
  macs += _conv_res_macs(batch * t, in_f, cfg.d_model, 3)
  macs += batch * t * (in_f + in_f * cfg.d_model)       # 1x1 skip
  return macs, t


def step_flops(cfg, input_modality: str, output_modality: str,
               shapes: Mapping[str, Sequence[int]], train: bool = True
               ) -> Dict[str, Dict[str, float]]:
  """Per part: forward MACs (``model``, ``executed``) and the step FLOPs.

  Args:
    cfg: ``config.model``.
    input_modality, output_modality: the task's modalities.
    shapes: batch array shapes, ``inputs`` ([B, L] ids, [B, Y, X, 3]
      pixels or [B, A, M, I] audio) and ``targets`` ([B, T] or [B]).
    train: the MoE router's noise logits (train only).

  Returns:
    {part: {'macs': model MACs, 'executed_macs': ..., 'flops': model
    FLOPs of a train step, 'executed_flops': ...}} with a ``'total'`` row.
  """
  inputs = tuple(shapes['inputs'])
  b = inputs[0]
  parts: Dict[str, Tuple[int, int]] = {}
  if input_modality == 'text':
    length, grid = inputs[1], None
  elif input_modality == 'image':
    macs, grid = image_entry_macs(cfg, b, inputs[1], inputs[2])
    length = grid[0] * grid[1]
    parts['input/image'] = (macs, macs)
  elif input_modality == 'audio':
    frames = inputs[1]
    mel_bins, channels = inputs[2:4] if len(inputs) == 4 else (1, 1)
    macs, length = audio_entry_macs(cfg, b, frames, mel_bins, channels)
    parts['input/audio'] = (macs, macs)
  else:
    raise ValueError(f'Unknown input modality {input_modality!r}.')
  blocks = (cfg.num_encoder_blocks_before_moe +
            cfg.num_encoder_blocks_after_moe)
  enc = blocks * conv_block_macs(cfg, b * length, cfg.encoder_conv)
  parts['encoder/conv_blocks'] = (enc, enc)
  parts['encoder/moe'] = moe_macs(cfg, b, length, train)
  if output_modality == 'class':
    macs = class_exit_macs(cfg, b, grid)
    parts['output/class'] = (macs, macs)
  else:
    t = tuple(shapes['targets'])[1]
    d = cfg.d_model
    mixer = (attention_macs(cfg, t, length, b) if cfg.use_attention else 0)
    mixer += sepconv_macs(b * t, 2 * d, d, cfg.mixer_conv[0],
                          cfg.mixer_separability)
    parts['mixer'] = (mixer, mixer)
    layers = (cfg.num_decoder_blocks_before_moe +
              cfg.num_decoder_blocks_after_moe)
    dec = layers * conv_block_macs(cfg, b * t, cfg.decoder_conv)
    parts['decoder/conv_blocks'] = (dec, dec)
    if cfg.use_attention:
      att = layers * attention_macs(cfg, t, length, b)
      parts['decoder/attention'] = (att, att)
    parts['decoder/moe'] = moe_macs(cfg, b, t, train)
    softmax = b * t * d * cfg.vocab_size
    parts['output/softmax'] = (softmax, softmax)
  table = {name: {'macs': float(m), 'executed_macs': float(e),
                  'flops': float(STEP_FACTOR * m),
                  'executed_flops': float(STEP_FACTOR * e)}
           for name, (m, e) in parts.items()}
  table['total'] = {key: math.fsum(row[key] for row in table.values())
                    for key in ('macs', 'executed_macs', 'flops',
                                'executed_flops')}
  return table


def format_table(table: Mapping[str, Mapping[str, float]]) -> str:
  """One line per part: GFLOP per train step and its share."""
  total = table['total']['flops']
  lines = [f"{'part':<22}{'GFLOP/step':>12}{'share':>8}{'executed':>12}"]
  for name, row in table.items():
    lines.append(f"{name:<22}{row['flops'] / 1e9:>12.2f}"
                 f"{row['flops'] / total:>8.1%}"
                 f"{row['executed_flops'] / 1e9:>12.2f}")
  return '\n'.join(lines)
