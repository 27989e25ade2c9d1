"""User-supplied Wall Street Journal speech (WSJ0/WSJ1, LDC93S6B/LDC94S13B).

WSJ is LDC-licensed, so it is read from the user's own copy. Point
``config.data.wsj_dir`` at a folder with one sub-folder per split:

  <wsj_dir>/<split>/...            split folder, first one found of
      train:      train, train_si284, si284
      validation: validation, dev, test_dev93, dev93
      test:       test, test_eval92, eval92

holding either layout:

  (a) audio + transcript files: ``<utt-id>.wav`` (or uncompressed ``.sph`` /
      ``.wv1`` / ``.flac``) anywhere below the split folder, and transcripts
      in ``transcripts.txt`` (else every ``*.txt`` / ``*.dot`` / ``*.lsn``
      below it), one utterance a line, either ``<utt-id> WORDS ...`` or the
      LDC form ``WORDS ... (<utt-id>)``;
  (b) Kaldi data directory: ``wav.scp`` (``<utt-id> <path>``) and ``text``
      (``<utt-id> WORDS ...``).

LDC's ``.wv1`` files are shorten-compressed: convert them first, e.g.
``sph2pipe -f wav 4k0c0301.wv1 4k0c0301.wav``. Transcripts are normalised
with ``normalize_transcript`` (lower case, noise markers and verbalised
punctuation dropped). Audio is decoded lazily, one utterance per
``__getitem__``; a corrupt file raises ``audio.AudioDecodeError``.
"""

import os
import re

import numpy as np

from mm_jax.data import audio

SPLIT_DIRS = {
    'train': ('train', 'train_si284', 'si284'),
    'validation': ('validation', 'dev', 'test_dev93', 'dev93'),
    'test': ('test', 'test_eval92', 'eval92'),
}
AUDIO_EXTENSIONS = ('.wav', '.flac', '.sph', '.wv1')   # in order of preference
TRANSCRIPT_EXTENSIONS = ('.txt', '.dot', '.lsn')
LAYOUT = (
    'Expected <dir>/<split>/ holding either (a) <utt-id>.wav files (any '
    'depth) plus transcripts.txt or *.txt/*.dot files with lines '
    '"<utt-id> WORDS" or "WORDS (<utt-id>)", or (b) a Kaldi data directory '
    'with wav.scp and text. See mm_jax/data/wsj.py.')

# Verbalised punctuation of the WSJ prompts: ",COMMA", "\\PERIOD", ...
_PUNCTUATION_WORDS = frozenset((
    'COMMA', 'PERIOD', 'DOUBLE-QUOTE', 'SINGLE-QUOTE', 'QUOTE', 'UNQUOTE',
    'END-QUOTE', 'END-OF-QUOTE', 'CLOSE-QUOTE', 'LEFT-PAREN', 'RIGHT-PAREN',
    'PAREN', 'END-PAREN', 'CLOSE-PAREN', 'OPEN-PAREN', 'END-OF-PAREN',
    'HYPHEN', 'DASH', 'QUESTION-MARK', 'EXCLAMATION-POINT', 'SEMI-COLON',
    'COLON', 'ELLIPSIS', 'LEFT-BRACE', 'RIGHT-BRACE', 'AMPERSAND', 'PERCENT',
    'SLASH', 'DOT', 'POINT'))
_VERBALISED = re.compile(r'^[\\,.;:"\'?!()\[\]{}&%/~-]+([A-Z-]+)$')
_NOISE_MARKERS = frozenset(('<noise>', '<spoken_noise>', '<unk>', '<sil>',
                            '<laughter>', '<breath>'))
_DOT_LINE = re.compile(r'^(.*)\(([^()\s]+)\)\s*$')


def normalize_transcript(text: str) -> str:
  """WSJ transcript -> lower-case words.

  Drops noise markers (``[loud_breath]``, ``[<door_slam]``, ``<NOISE>``),
  verbalised punctuation (``\\COMMA``, ``,COMMA``, ``"DOUBLE-QUOTE``) and
  pause marks (``.``, ``~``); unwraps ``*misread*`` words and ``<inserted>``
  words; strips the lengthening colon (``:so``) and other punctuation but
  keeps apostrophes, inner hyphens and periods (``don't``, ``mid-march``,
  ``u.s.``).
  """
  words = []
  for token in text.split():
    if token.startswith('[') or token.endswith(']'):
      continue                                      # [noise], [<noise], ...
    if token.lower() in _NOISE_MARKERS:
      continue
    m = _VERBALISED.match(token.upper())
    if m and m.group(1) in _PUNCTUATION_WORDS:
      continue
    token = token.lower().strip('*<>').replace(':', '')
    token = re.sub(r"[^a-z0-9'.-]", '', token).strip('-')
    if any(c.isalnum() for c in token):
      words.append(token)
  return ' '.join(words)


def _split_dir(directory: str, split) -> str:
  directory = os.path.expanduser(os.fspath(directory))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'WSJ directory {directory!r} does not exist. '
                            f'{LAYOUT}')
  if split is None:
    return directory
  if split not in SPLIT_DIRS:
    raise ValueError(f'Unknown WSJ split {split!r}; use one of '
                     f'{sorted(SPLIT_DIRS)} (or None for the folder itself).')
  tried = [os.path.join(directory, name) for name in SPLIT_DIRS[split]]
  for path in tried:
    if os.path.isdir(path):
      return path
  raise FileNotFoundError(f'No folder for WSJ split {split!r}: searched '
                          f'{tried}. {LAYOUT}')


def _walk(root: str):
  for parent, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
      yield os.path.join(parent, name)


def _read_lines(path: str) -> list[str]:
  with open(path, encoding='utf-8', errors='replace') as f:
    return [line.strip() for line in f if line.strip()]


def _parse_transcripts(paths) -> dict[str, str]:
  """``<id> WORDS`` or ``WORDS (<id>)`` lines -> {id: raw words}."""
  transcripts = {}
  for path in paths:
    for line in _read_lines(path):
      m = _DOT_LINE.match(line)
      if m:
        transcripts[m.group(2).lower()] = m.group(1).strip()
        continue
      parts = line.split(None, 1)
      transcripts[parts[0].lower()] = parts[1] if len(parts) > 1 else ''
  return transcripts


def _resolve(path: str, base: str) -> str:
  path = os.path.expanduser(path)
  return path if os.path.isabs(path) else os.path.join(base, path)


def _kaldi_audio(wav_scp: str) -> dict[str, str]:
  """wav.scp -> {id: audio path}. Piped commands are not run: the audio
  file they name (e.g. ``sph2pipe -f wav x.wv1 |``) is read directly."""
  base, paths = os.path.dirname(wav_scp), {}
  for line in _read_lines(wav_scp):
    parts = line.split()
    if len(parts) < 2:
      continue
    if parts[-1] == '|':
      named = [p for p in parts[1:-1]
               if p.lower().endswith(AUDIO_EXTENSIONS + ('.wv2',))]
      if not named:
        raise ValueError(f'{wav_scp}: cannot find an audio file in the '
                         f'command {line!r}; list converted .wav paths.')
      paths[parts[0].lower()] = _resolve(named[-1], base)
    else:
      paths[parts[0].lower()] = _resolve(' '.join(parts[1:]), base)
  return paths


def _find_audio(root: str) -> dict[str, str]:
  """{utt-id: path} of audio files below ``root`` (preferred extension)."""
  found = {}
  for path in _walk(root):
    stem, ext = os.path.splitext(os.path.basename(path))
    stem, ext = stem.lower(), ext.lower()
    if ext not in AUDIO_EXTENSIONS:
      continue
    old = found.get(stem)
    if old is None or (AUDIO_EXTENSIONS.index(ext) < AUDIO_EXTENSIONS.index(
        os.path.splitext(old)[1].lower())):
      found[stem] = path
  return found


class WsjSource:
  """Random access to one WSJ split: ``len`` and ``[i]`` (see module doc).

  ``source[i]`` -> {'audio': float32 [n] in [-1, 1], 'sample_rate': int,
  'text': normalised transcript, 'id': utterance id (lower case, matched
  case-insensitively to file names)}. Utterances are sorted by id; ones
  with a transcript but no audio file are left out and counted in
  ``missing_audio``.
  """

  def __init__(self, directory, split=None):
    root = _split_dir(directory, split)
    self.root, self.split = root, split
    wav_scp, text = os.path.join(root, 'wav.scp'), os.path.join(root, 'text')
    if os.path.isfile(wav_scp) or os.path.isfile(text):
      if not (os.path.isfile(wav_scp) and os.path.isfile(text)):
        raise FileNotFoundError(f'{root} has only one of wav.scp and text; '
                                f'a Kaldi data directory needs both. {LAYOUT}')
      self.layout = 'kaldi'
      transcripts = _parse_transcripts([text])
      paths = {k: p for k, p in _kaldi_audio(wav_scp).items()
               if os.path.isfile(p)}
    else:
      self.layout = 'files'
      listed = os.path.join(root, 'transcripts.txt')
      files = [listed] if os.path.isfile(listed) else [
          p for p in _walk(root) if p.lower().endswith(TRANSCRIPT_EXTENSIONS)]
      if not files:
        raise FileNotFoundError(
            f'No WSJ transcripts in {root}: searched transcripts.txt, '
            f'*{", *".join(TRANSCRIPT_EXTENSIONS)} and wav.scp + text. '
            f'{LAYOUT}')
      transcripts = _parse_transcripts(files)
      paths = _find_audio(root)
    ids = sorted(set(transcripts) & set(paths))
    self.missing_audio = len(set(transcripts) - set(paths))
    if not ids:
      raise FileNotFoundError(
          f'No WSJ utterance in {root} has both a transcript '
          f'({len(transcripts)} found) and an audio file ({len(paths)} '
          f'found); utterance ids must match the audio file names. {LAYOUT}')
    self._ids = ids
    self._paths = [paths[k] for k in ids]
    self._texts = [normalize_transcript(transcripts[k]) for k in ids]
    if self._paths[0].lower().endswith(('.wv1', '.sph', '.flac')):
      # Fail now, not once per example, when the files need converting
      # (UnsupportedAudioError says how); a corrupt file is skipped later.
      try:
        audio.read_audio(self._paths[0])
      except audio.AudioDecodeError:
        pass

  def __len__(self) -> int:
    return len(self._ids)

  def __getitem__(self, i) -> dict:
    i = int(i)
    if not -len(self) <= i < len(self):
      raise IndexError(f'WSJ[{self.split}] index {i} out of range '
                       f'[0, {len(self)}).')
    wav, rate = audio.read_audio(self._paths[i])
    return {'audio': np.asarray(wav, np.float32), 'sample_rate': int(rate),
            'text': self._texts[i], 'id': self._ids[i]}

  def __repr__(self):
    return (f'WsjSource({self.root!r}, split={self.split!r}, {len(self)} '
            f'utterances, layout={self.layout!r})')
