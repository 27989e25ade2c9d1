"""Tiny-suite speech: English sentences spoken by eSpeak NG.

  wav = synthesize('the red cat sleeps', 'en-us+f2', rate_wpm=170, pitch=60)
  for ex in generate_speech(sentences, seed=0):   # varied voice/speed/pitch
    ex['audio']                                   # float32 [n] at 16 kHz

eSpeak NG comes from the ``espeakng-loader`` wheel (library and voice data;
no network, no system eSpeak), driven through ctypes. Its 22.05 kHz int16
output is resampled to 16 kHz by ``mm_jax.data.audio.resample``.

Determinism. eSpeak keeps synthesis state in C globals that its API cannot
reset (pitch-flutter phase, gain control, resonator memories), so the same
call gives different samples depending on what was spoken before, even
after ``espeak_Terminate`` / ``espeak_Initialize``. The first utterance
after initialisation is reproducible, so each utterance is spoken by a
fresh ``fork`` of a *worker* process that has initialised eSpeak and never
spoken: same inputs -> bit-identical samples, in any order, in any process.
The worker is a small separate Python process (stdlib, numpy, ctypes; never
jax/TF, whose threads make forking unsafe); its noise generators (eSpeak's
and libc's ``rand``) are seeded per utterance. Fork needs Linux or macOS.

Thread safety. eSpeak's global state lives only in worker processes; each
call checks a worker out of a pool for its exclusive use, so concurrent
callers (threads) never share one.
"""

import atexit
import ctypes
import json
import os
import struct
import subprocess
import sys
import threading
from typing import Iterable, Iterator

import numpy as np

SAMPLE_RATE = 16000
# English voices of the shipped data x voice variants (m = male, f = female;
# '' = the language's default voice). 7 x 12 = 84 voices.
LANGUAGES = ('en-us', 'en', 'en-gb-scotland', 'en-gb-x-rp', 'en-029',
             'en-us-nyc', 'en-gb-x-gbclan')
VARIANTS = ('', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'f1', 'f2', 'f3',
            'f4')
VOICES = tuple(f'{lang}+{v}' if v else lang
               for lang in LANGUAGES for v in VARIANTS)
RATE_WPM = (130, 210)      # speaking rate range drawn by generate_speech
PITCH = (25, 75)           # eSpeak base pitch 0-99 (default 50)
PITCH_RANGE = (25, 85)     # eSpeak intonation range 0-99 (default 50)

# eSpeak API constants (speak_lib.h).
_SYNCHRONOUS = 2           # AUDIO_OUTPUT_SYNCHRONOUS: Synth returns when done
_DONT_EXIT = 0x8000        # espeakINITIALIZE_DONT_EXIT: errors do not exit()
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_OK, _BAD_REQUEST, _FAILED = 0, 1, 2
_REPLY = struct.Struct('<iI')      # status, payload bytes


# ---------------------------------------------------- the worker process --

def _load_espeak():
  """Loads and initialises libespeak-ng -> (lib, libc, native rate Hz)."""
  import espeakng_loader  # pylint: disable=g-import-not-at-top
  lib = ctypes.CDLL(espeakng_loader.get_library_path())
  lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int,
                                    ctypes.c_char_p, ctypes.c_int]
  lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
  lib.espeak_SetParameter.argtypes = [ctypes.c_int] * 3
  lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
  lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
  lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                               ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                               ctypes.c_uint, ctypes.c_void_p,
                               ctypes.c_void_p]
  rate = lib.espeak_Initialize(_SYNCHRONOUS, 0,
                               espeakng_loader.get_data_path().encode(),
                               _DONT_EXIT)
  if rate <= 0:
    raise RuntimeError(f'espeak_Initialize failed ({rate}); reinstall the '
                       'espeakng-loader wheel.')
  return lib, ctypes.CDLL(None), rate


class _Voice(ctypes.Structure):
  """The leading fields of espeak_VOICE."""
  _fields_ = [('name', ctypes.c_char_p), ('languages', ctypes.c_char_p),
              ('identifier', ctypes.c_char_p)]


def _speak(lib, libc, request: dict) -> bytes:
  """Runs one request in this (freshly forked) process -> int16 bytes."""
  voice = request['voice']
  found = lib.espeak_SetVoiceByName(voice.encode()) == 0
  if found and '+' in voice:         # eSpeak ignores unknown variants
    identifier = lib.espeak_GetCurrentVoice().contents.identifier or b''
    found = identifier.decode().lower().endswith(
        '+' + voice.split('+', 1)[1].lower())
  if not found:
    raise ValueError(f'eSpeak has no voice {voice!r}; use one of '
                     f'speech.VOICES, e.g. {VOICES[0]!r}.')
  for param, value in ((_RATE, request['rate']), (_PITCH, request['pitch']),
                       (_RANGE, request['range']), (_VOLUME, 100)):
    lib.espeak_SetParameter(param, int(value), 0)
  lib.espeak_ng_SetRandSeed(request['seed'])
  libc.srand(request['seed'])
  chunks = []

  def collect(samples, count, events):
    del events
    if samples and count > 0:
      chunks.append(ctypes.string_at(samples, 2 * count))
    return 0

  callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short),
                              ctypes.c_int, ctypes.c_void_p)(collect)
  lib.espeak_SetSynthCallback(callback)
  text = request['text'].encode('utf-8') + b'\0'
  err = lib.espeak_Synth(text, len(text), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                         None, None)
  if err != 0:
    raise RuntimeError(f'espeak_Synth failed with error {err}.')
  return b''.join(chunks)


def _read_exact(fd: int, n: int) -> bytes:
  parts, got = [], 0
  while got < n:
    part = os.read(fd, n - got)
    if not part:
      break
    parts.append(part)
    got += len(part)
  return b''.join(parts)


def worker_main():
  """Worker loop: one JSON request per stdin line -> one reply on stdout.

  Each request is spoken by a forked child (pristine eSpeak state); the
  reply is ``_REPLY`` (status, length) then int16 samples or an error text.
  """
  # Replies go to a private copy of stdout; stray prints from C land on
  # stderr instead of corrupting the protocol.
  out = os.fdopen(os.dup(sys.stdout.fileno()), 'wb')
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
  lib, libc, rate = _load_espeak()
  # Load the English dictionary once here rather than in every child.
  lib.espeak_SetVoiceByName(VOICES[0].encode())
  out.write(struct.pack('<i', rate))
  out.flush()
  for line in sys.stdin.buffer:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # child: speak and exit
      try:
        os.close(read_fd)
        try:
          status, payload = _OK, _speak(lib, libc, json.loads(line))
        except ValueError as e:
          status, payload = _BAD_REQUEST, str(e).encode()
        except Exception as e:  # pylint: disable=broad-except
          status, payload = _FAILED, f'{type(e).__name__}: {e}'.encode()
        with os.fdopen(write_fd, 'wb') as pipe:
          pipe.write(_REPLY.pack(status, len(payload)) + payload)
      finally:
        os._exit(0)  # pylint: disable=protected-access
    os.close(write_fd)
    header = _read_exact(read_fd, _REPLY.size)
    status, size = _REPLY.unpack(header) if len(header) == _REPLY.size else (
        _FAILED, 0)
    payload = _read_exact(read_fd, size)
    os.close(read_fd)
    _, wait_status = os.waitpid(pid, 0)
    if len(payload) != size or (status == _FAILED and not payload):
      status = _FAILED
      payload = (f'synthesis process died (wait status {wait_status})'
                 .encode())
    out.write(_REPLY.pack(status, len(payload)) + payload)
    out.flush()


# ------------------------------------------------------ the caller's side --

_BOOTSTRAP = ('import importlib.util, sys\n'
              'spec = importlib.util.spec_from_file_location('
              '"_mm_jax_espeak_worker", sys.argv[1])\n'
              'module = importlib.util.module_from_spec(spec)\n'
              'spec.loader.exec_module(module)\n'
              'module.worker_main()\n')


class _Worker:
  """A worker subprocess; used by one caller at a time (see ``_Pool``)."""

  def __init__(self):
    env = dict(os.environ, OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1',
               MKL_NUM_THREADS='1')
    self.proc = subprocess.Popen(
        [sys.executable, '-c', _BOOTSTRAP, os.path.abspath(__file__)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    self.native_rate = struct.unpack('<i', self._read(4))[0]
    self.pending = 0

  def _read(self, n: int) -> bytes:
    data = self.proc.stdout.read(n)
    if len(data) != n:
      self.close()
      raise RuntimeError('The eSpeak worker process exited unexpectedly '
                         '(see its stderr above); is espeakng-loader '
                         'installed and fork available (Linux/macOS)?')
    return data

  def submit(self, request: dict):
    self.proc.stdin.write(json.dumps(request).encode() + b'\n')
    self.proc.stdin.flush()
    self.pending += 1

  def receive(self) -> np.ndarray:
    """The next reply -> int16 [n] at ``native_rate``."""
    status, size = _REPLY.unpack(self._read(_REPLY.size))
    payload = self._read(size) if size else b''
    self.pending -= 1
    if status == _BAD_REQUEST:
      raise ValueError(payload.decode())
    if status != _OK:
      raise RuntimeError(f'eSpeak synthesis failed: {payload.decode()}')
    return np.frombuffer(payload, np.int16)

  def close(self):
    """Ends the worker: EOF when idle; kill when a reply is outstanding
    (it may be blocked writing to a pipe nobody reads)."""
    if self.proc.poll() is None and self.pending:
      self.proc.kill()
    for pipe in (self.proc.stdin, self.proc.stdout):
      try:
        pipe.close()
      except OSError:
        pass
    self.proc.wait()


class _Pool:
  """Idle workers, checked out for exclusive use; discarded after a fork."""

  def __init__(self):
    self.lock = threading.Lock()
    self.idle: list[_Worker] = []
    self.owner = os.getpid()

  def acquire(self) -> _Worker:
    with self.lock:
      if self.owner != os.getpid():    # forked: the workers are the parent's
        self.idle, self.owner = [], os.getpid()
      if self.idle:
        return self.idle.pop()
    return _Worker()

  def release(self, worker: _Worker):
    if worker.pending or worker.proc.poll() is not None:
      worker.close()                   # abandoned mid-stream: do not reuse
      return
    with self.lock:
      if self.owner == os.getpid():
        self.idle.append(worker)

  def close(self):
    with self.lock:
      if self.owner == os.getpid():
        for worker in self.idle:
          worker.close()
      self.idle = []


_POOL = _Pool()
atexit.register(_POOL.close)


def _request(text, voice, rate_wpm, pitch, pitch_range, noise_seed) -> dict:
  if not isinstance(text, str) or not text.strip():
    raise ValueError(f'Nothing to say: text {text!r} is empty.')
  if not 80 <= int(rate_wpm) <= 450:
    raise ValueError(f'rate_wpm {rate_wpm} is outside eSpeak\'s 80-450 '
                     'words per minute.')
  for name, value in (('pitch', pitch), ('pitch_range', pitch_range)):
    if not 0 <= int(value) <= 99:
      raise ValueError(f'{name} {value} is outside eSpeak\'s 0-99.')
  return {'text': text, 'voice': str(voice), 'rate': int(rate_wpm),
          'pitch': int(pitch), 'range': int(pitch_range),
          'seed': int(noise_seed) % (1 << 31)}


def _to_float(samples: np.ndarray, native_rate: int,
              sample_rate: int) -> np.ndarray:
  from mm_jax.data import audio  # pylint: disable=g-import-not-at-top
  wav = samples.astype(np.float32) / 32768.0
  return audio.resample(wav, native_rate, sample_rate)


def synthesize(text: str, voice: str, rate_wpm: int, pitch: int,
               sample_rate: int = SAMPLE_RATE, *, pitch_range: int = 50,
               noise_seed: int = 0) -> np.ndarray:
  """Speaks ``text`` -> float32 [n] in [-1, 1] at ``sample_rate``.

  Args:
    text: what to say (UTF-8; numbers and abbreviations are verbalised).
    voice: an eSpeak voice name, e.g. ``'en-us'`` or ``'en-gb-x-rp+f3'``
      (see ``VOICES``).
    rate_wpm: speaking rate, 80-450 words per minute (eSpeak default 175).
    pitch: base pitch 0-99 (default 50).
    sample_rate: output Hz (eSpeak speaks at 22.05 kHz and is resampled).
    pitch_range: intonation range 0-99 (default 50; 0 is monotone).
    noise_seed: seeds eSpeak's breath/noise generators.

  Returns:
    float32 [n]; the same arguments always give the same samples.
  """
  request = _request(text, voice, rate_wpm, pitch, pitch_range, noise_seed)
  worker = _POOL.acquire()
  try:
    worker.submit(request)
    samples = worker.receive()
  finally:
    _POOL.release(worker)
  return _to_float(samples, worker.native_rate, sample_rate)


def voice_settings(seed: int, index: int) -> dict:
  """Voice, rate, pitch, range and noise seed of utterance ``index``.

  Depends only on ``(seed, index)``, not on the other utterances.
  """
  rng = np.random.default_rng([int(seed) % (1 << 63), int(index)])
  return {'voice': VOICES[int(rng.integers(len(VOICES)))],
          'rate': int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
          'pitch': int(rng.integers(PITCH[0], PITCH[1] + 1)),
          'range': int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
          'noise_seed': int(rng.integers(1 << 31))}


def generate_speech(sentences: Iterable[str], seed: int) -> Iterator[dict]:
  """Speaks each sentence with a voice drawn from ``(seed, index)``.

  Yields:
    {'audio': float32 [n] at 16 kHz, 'sample_rate': 16000, 'text': str,
     'voice': str, 'rate': int, 'pitch': int, 'range': int}, in order.
  """
  worker = _POOL.acquire()
  try:
    queue = []                       # submitted, not yet received
    for index, text in enumerate(sentences):
      s = voice_settings(seed, index)
      worker.submit(_request(text, s['voice'], s['rate'], s['pitch'],
                             s['range'], s['noise_seed']))
      queue.append((text, s))
      if len(queue) > 1:             # keep the worker busy while we resample
        yield _example(worker, *queue.pop(0))
    while queue:
      yield _example(worker, *queue.pop(0))
  finally:
    _POOL.release(worker)


def _example(worker: _Worker, text: str, settings: dict) -> dict:
  audio = _to_float(worker.receive(), worker.native_rate, SAMPLE_RATE)
  return {'audio': audio, 'sample_rate': SAMPLE_RATE, 'text': text,
          'voice': settings['voice'], 'rate': settings['rate'],
          'pitch': settings['pitch'], 'range': settings['range']}
