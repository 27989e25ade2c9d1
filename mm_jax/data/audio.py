"""The audio front end shared by every speech source: reading, resampling and
log-mel features (docs/data.md, "Audio front end"). Plain numpy; no librosa.

  wav, rate = read_audio('utt.wav')           # float32 [n] in [-1, 1], Hz
  feats = log_mel(wav, sample_rate=rate)      # float32 [frames, 80, 1]

Features. A non-16 kHz waveform is first resampled to 16 kHz (``resample``).
Frames of 25 ms (400 samples) every 10 ms (160) are taken without padding:
``frames = 1 + (n - 400) // 160`` (98 for one second); a clip shorter than
one frame is zero-padded to one frame. Each frame is multiplied by a periodic
Hann window, zero-padded to a 512-point FFT, and its power spectrum |X|^2 is
projected onto 80 HTK-mel triangles (80 Hz - 7.6 kHz, peak 1, no area
normalisation) and floored: ``log(max(mel, 1e-3))``. With ``deltas`` the
channels are [log-mel, delta, delta-delta] (regression over +-2 frames).

Reading. ``.wav`` through the stdlib ``wave`` module (integer PCM, 8/16/24/
32 bit); NIST SPHERE (``.sph``, ``.wv1``) with uncompressed PCM or mu-law is
parsed here; shorten-compressed SPHERE (LDC WSJ ``.wv1``) and ``.flac`` need
a converter (``UnsupportedAudioError`` says which). Multichannel audio is
averaged to mono. A corrupt or truncated file raises ``AudioDecodeError``,
which the pipeline counts and skips.
"""

import functools
import math
import os
import wave

import numpy as np

SAMPLE_RATE = 16000
LOWER_EDGE_HZ = 80.0
UPPER_EDGE_HZ = 7600.0
DELTA_WINDOW = 2              # delta regression over t-2 .. t+2


class AudioDecodeError(ValueError):
  """An audio file is corrupt or truncated (the pipeline counts and skips)."""


class UnsupportedAudioError(ValueError):
  """An audio format this reader cannot decode; convert the files."""


# ------------------------------------------------------------ resampling --

@functools.lru_cache(maxsize=16)
def _polyphase_bank(up: int, down: int, zero_crossings: int = 16,
                    rolloff: float = 0.95, beta: float = 8.0):
  """Kaiser-windowed sinc taps [up, 2W] for each of the ``up`` phases."""
  cutoff = rolloff * min(1.0, up / down)      # fraction of input Nyquist
  half_width = zero_crossings / cutoff        # in input samples
  w = int(math.ceil(half_width))
  offsets = np.arange(-w + 1, w + 1)          # tap k = floor(t) + offset
  tau = np.arange(up)[:, None] / up - offsets[None, :]   # [up, 2W] t - k
  x = np.clip(tau / half_width, -1.0, 1.0)
  window = np.i0(beta * np.sqrt(1.0 - x * x)) / np.i0(beta)
  taps = cutoff * np.sinc(cutoff * tau) * window
  taps /= taps.sum(axis=1, keepdims=True)     # unit DC gain in every phase
  return taps.astype(np.float32), offsets


def resample(waveform: np.ndarray, orig_rate: int,
             target_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Band-limited rational resampling (windowed-sinc polyphase filter).

  Output sample n sits at input time ``t = n * orig / target``; it is the
  dot product of the neighbouring inputs with the sinc taps of t's phase
  (Kaiser window, 16 zero crossings, cut-off at 95 % of the lower Nyquist
  frequency, so downsampling does not alias).

  Args:
    waveform: float [n] mono samples.
    orig_rate: Hz of ``waveform``.
    target_rate: Hz wanted.

  Returns:
    float32 [ceil(n * target_rate / orig_rate)].
  """
  x = np.asarray(waveform, np.float32)
  if x.ndim != 1:
    raise ValueError(f'resample expects a mono waveform [n], got shape '
                     f'{x.shape}; average the channels first.')
  orig_rate, target_rate = int(orig_rate), int(target_rate)
  if orig_rate <= 0 or target_rate <= 0:
    raise ValueError(f'Sample rates must be positive, got {orig_rate} -> '
                     f'{target_rate}.')
  if orig_rate == target_rate or x.size == 0:
    return x.copy()
  g = math.gcd(orig_rate, target_rate)
  up, down = target_rate // g, orig_rate // g
  taps, offsets = _polyphase_bank(up, down)
  w = -int(offsets[0]) + 1
  padded = np.pad(x, (w, w))
  windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * w)  # [., 2W]
  n_out = -(-x.size * up // down)             # ceil
  out = np.empty(n_out, np.float32)
  # Outputs p, p + up, p + 2 up, ... share one phase and read windows that
  # start `down` input samples apart: one strided matmul per phase. Window
  # base + 1 of `padded` holds inputs base + offsets (the pad shifts by w).
  for p in range(min(up, n_out)):
    base, phase = divmod(p * down, up)        # t = base + phase / up
    count = len(range(p, n_out, up))
    out[p::up] = windows[base + 1::down][:count] @ taps[phase]
  return out


# -------------------------------------------------------------- features --

def hz_to_mel(hz):
  """HTK mel scale: 2595 log10(1 + f / 700)."""
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
  """Inverse of ``hz_to_mel``."""
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(num_mel_bins: int = 80, fft_size: int = 512,
                   sample_rate: int = SAMPLE_RATE,
                   lower_hz: float = LOWER_EDGE_HZ,
                   upper_hz: float = UPPER_EDGE_HZ) -> np.ndarray:
  """HTK triangles on the rfft bins: float32 [fft_size // 2 + 1, M].

  Triangle m rises from mel point m to m + 1 and falls to m + 2 of
  ``M + 2`` points evenly spaced in mel between the edges; peak 1. The DC
  bin gets no weight.
  """
  if not 0.0 <= lower_hz < upper_hz <= sample_rate / 2:
    raise ValueError(f'Mel edges {lower_hz}-{upper_hz} Hz must lie in '
                     f'[0, {sample_rate / 2}] Hz (the Nyquist frequency).')
  bins_mel = hz_to_mel(np.arange(fft_size // 2 + 1) * sample_rate / fft_size)
  edges = np.linspace(hz_to_mel(lower_hz), hz_to_mel(upper_hz),
                      num_mel_bins + 2)
  left, centre, right = edges[:-2], edges[1:-1], edges[2:]
  rising = (bins_mel[:, None] - left) / (centre - left)
  falling = (right - bins_mel[:, None]) / (right - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  weights[0] = 0.0
  return weights.astype(np.float32)


def frame_count(num_samples: int, frame_length: int, hop_length: int) -> int:
  """Frames taken without padding (at least one: short clips are padded)."""
  return 1 + max(0, num_samples - frame_length) // hop_length


def delta_features(features: np.ndarray,
                   window: int = DELTA_WINDOW) -> np.ndarray:
  """Regression deltas over time: [frames, M] -> float32 [frames, M].

  d_t = sum_k k (c_{t+k} - c_{t-k}) / (2 sum_k k^2), k = 1..window, with the
  first and last frames repeated at the edges.
  """
  frames = features.shape[0]
  padded = np.pad(features, ((window, window), (0, 0)), mode='edge')
  out = np.zeros_like(features, dtype=np.float32)
  for k in range(1, window + 1):
    out += k * (padded[window + k:window + k + frames] -
                padded[window - k:window - k + frames])
  return out / (2.0 * sum(k * k for k in range(1, window + 1)))


def log_mel(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE,
            num_mel_bins: int = 80, frame_ms: float = 25.0,
            hop_ms: float = 10.0, log_floor: float = 1e-3,
            deltas: bool = False) -> np.ndarray:
  """Log-mel spectrogram at 16 kHz (see the module docstring).

  Args:
    waveform: float [n] mono samples in [-1, 1] at ``sample_rate``.
    sample_rate: Hz of ``waveform``; anything else than 16 kHz is resampled.
    num_mel_bins: M, mel triangles.
    frame_ms: analysis window length.
    hop_ms: frame step.
    log_floor: mel energies below this are clamped before the log.
    deltas: also return delta and delta-delta channels.

  Returns:
    float32 [A, M, I] (A frames); I = 3 with ``deltas``, else 1.
  """
  x = np.asarray(waveform)
  if x.ndim != 1:
    raise ValueError(f'log_mel expects a mono waveform [n], got shape '
                     f'{x.shape}; average the channels first.')
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f'log_mel expects float samples in [-1, 1], got '
                     f'{x.dtype}; divide int16 audio by 32768.')
  if not np.all(np.isfinite(x)):
    raise ValueError('log_mel got non-finite samples (NaN or inf).')
  x = x.astype(np.float32)
  if int(sample_rate) != SAMPLE_RATE:
    x = resample(x, int(sample_rate), SAMPLE_RATE)
  frame_length = int(round(SAMPLE_RATE * frame_ms / 1000.0))
  hop_length = int(round(SAMPLE_RATE * hop_ms / 1000.0))
  fft_size = 1 << (frame_length - 1).bit_length()
  if x.size < frame_length:
    x = np.pad(x, (0, frame_length - x.size))
  frames = frame_count(x.size, frame_length, hop_length)
  windows = np.lib.stride_tricks.sliding_window_view(
      x, frame_length)[::hop_length][:frames]          # [frames, 400]
  hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(frame_length) /
                            frame_length)              # periodic Hann
  spectrum = np.fft.rfft(windows * hann.astype(np.float32), n=fft_size)
  power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
  mel = power @ mel_filterbank(num_mel_bins, fft_size, SAMPLE_RATE)
  feats = np.log(np.maximum(mel, log_floor)).astype(np.float32)  # [A, M]
  if not deltas:
    return feats[:, :, None]                                      # [A, M, 1]
  d1 = delta_features(feats)
  d2 = delta_features(d1)
  return np.stack([feats, d1, d2], axis=-1)                       # [A, M, 3]


# --------------------------------------------------------------- reading --

_CONVERT_HINT = ('convert it to 16-bit PCM WAV, e.g. `sox {path} -r 16000 '
                 '-b 16 out.wav`')


def read_audio(path) -> tuple[np.ndarray, int]:
  """Reads an audio file -> (float32 [n] mono in [-1, 1], sample rate Hz).

  Raises:
    FileNotFoundError: ``path`` does not exist.
    AudioDecodeError: the file is corrupt or truncated.
    UnsupportedAudioError: a format this reader cannot decode (the message
      names the conversion command).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No audio file at {path!r}.')
  ext = os.path.splitext(path)[1].lower()
  with open(path, 'rb') as f:
    magic = f.read(8)
  if magic.startswith(b'NIST_1A'):
    return _read_sphere(path)
  if ext == '.wav' or magic.startswith(b'RIFF'):
    return _read_wav(path)
  if ext in ('.sph', '.wv1', '.wv2'):
    raise AudioDecodeError(f'{path}: no NIST SPHERE header (NIST_1A).')
  try:
    import soundfile  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UnsupportedAudioError(
        f'{path}: {ext or "this"} files need the `soundfile` package, which '
        f'is not installed; {_CONVERT_HINT.format(path=path)}.') from None
  try:
    data, rate = soundfile.read(path, dtype='float32', always_2d=True)
  except RuntimeError as e:
    raise AudioDecodeError(f'{path}: {e}') from e
  return data.mean(axis=1).astype(np.float32), int(rate)


def _pcm_to_float(raw: bytes, width: int, channels: int, *, unsigned_8bit,
                  big_endian=False) -> np.ndarray:
  """Interleaved integer PCM bytes -> float32 [n] mono in [-1, 1]."""
  order = '>' if big_endian else '<'
  if width == 1:
    x = np.frombuffer(raw, np.uint8 if unsigned_8bit else np.int8)
    x = x.astype(np.float32)
    x = (x - 128.0) / 128.0 if unsigned_8bit else x / 128.0
  elif width == 3:
    b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)  # [n, 3]
    if big_endian:
      b = b[:, ::-1]
    v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23))
  elif width in (2, 4):
    x = np.frombuffer(raw, f'{order}i{width}').astype(np.float32)
    x /= float(1 << (8 * width - 1))
  else:
    raise UnsupportedAudioError(f'{8 * width}-bit PCM is not supported.')
  x = x.reshape(-1, channels)                                   # [n, channels]
  return x.mean(axis=1).astype(np.float32)


def _read_wav(path: str) -> tuple[np.ndarray, int]:
  try:
    with wave.open(path, 'rb') as f:
      channels, width = f.getnchannels(), f.getsampwidth()
      rate, frames = f.getframerate(), f.getnframes()
      raw = f.readframes(frames)
  except wave.Error as e:
    if 'unknown format' in str(e):
      raise UnsupportedAudioError(
          f'{path}: WAV encoding not readable by the stdlib `wave` module '
          f'({e}; float or WAVE_FORMAT_EXTENSIBLE); '
          f'{_CONVERT_HINT.format(path=path)}.') from e
    raise AudioDecodeError(f'{path}: not a valid WAV file ({e}).') from e
  except (EOFError, OSError) as e:
    raise AudioDecodeError(f'{path}: truncated WAV header ({e}).') from e
  expected = frames * width * channels
  if len(raw) < expected:
    raise AudioDecodeError(f'{path}: truncated WAV, {len(raw)} of '
                           f'{expected} data bytes.')
  if channels < 1 or rate <= 0:
    raise AudioDecodeError(f'{path}: {channels} channels at {rate} Hz.')
  try:
    return _pcm_to_float(raw, width, channels, unsigned_8bit=True), rate
  except UnsupportedAudioError as e:
    raise UnsupportedAudioError(
        f'{path}: {e} {_CONVERT_HINT.format(path=path)}.') from None


def _sphere_header(path: str, blob: bytes) -> dict:
  """Parses the NIST_1A text header: {'sample_rate': 16000, ...}."""
  try:
    size = int(blob[8:16].split()[0])
    lines = blob[16:size].decode('ascii', errors='replace').splitlines()
  except (ValueError, IndexError) as e:
    raise AudioDecodeError(f'{path}: bad NIST SPHERE header ({e}).') from e
  if len(blob) < size:
    raise AudioDecodeError(f'{path}: truncated NIST SPHERE header.')
  header = {'header_size': size}
  for line in lines:
    parts = line.split(None, 2)
    if not parts or parts[0] == 'end_head':
      break
    if len(parts) == 3:
      key, kind, value = parts
      header[key] = int(value) if kind == '-i' else value.strip()
  return header


def _mulaw_to_float(raw: bytes) -> np.ndarray:
  """G.711 mu-law bytes -> float32 in [-1, 1]."""
  u = ~np.frombuffer(raw, np.uint8).astype(np.int32) & 0xFF
  exponent, mantissa = (u >> 4) & 7, u & 0x0F
  magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
  return (np.where(u & 0x80, -magnitude, magnitude) / 32768.0).astype(
      np.float32)


def _read_sphere(path: str) -> tuple[np.ndarray, int]:
  with open(path, 'rb') as f:
    blob = f.read()
  h = _sphere_header(path, blob)
  coding = str(h.get('sample_coding', 'pcm')).lower()
  if 'shorten' in coding or 'wavpack' in coding or 'shortpack' in coding:
    raise UnsupportedAudioError(
        f'{path}: NIST SPHERE compressed with {coding!r} (LDC WSJ .wv1 '
        'files are); decompress with `sph2pipe -f wav in.wv1 out.wav` '
        '(sph2pipe ships with Kaldi/LDC tools; sox cannot read shorten).')
  try:
    rate, channels = int(h['sample_rate']), int(h.get('channel_count', 1))
    width, count = int(h.get('sample_n_bytes', 2)), int(h['sample_count'])
  except (KeyError, ValueError) as e:
    raise AudioDecodeError(f'{path}: SPHERE header lacks {e}.') from e
  data = blob[h['header_size']:]
  expected = count * width * channels
  if len(data) < expected:
    raise AudioDecodeError(f'{path}: truncated SPHERE, {len(data)} of '
                           f'{expected} data bytes.')
  data = data[:expected]
  if coding.startswith('ulaw') or coding.startswith('mu-law'):
    x = _mulaw_to_float(data).reshape(-1, channels).mean(axis=1)  # [n]
    return x.astype(np.float32), rate
  if not coding.startswith('pcm'):
    raise UnsupportedAudioError(f'{path}: SPHERE sample_coding {coding!r}; '
                                f'{_CONVERT_HINT.format(path=path)}.')
  big = str(h.get('sample_byte_format', '01')).startswith('10')
  return _pcm_to_float(data, width, channels, unsigned_8bit=False,
                       big_endian=big), rate
