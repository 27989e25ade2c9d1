"""Tests of the audio front end, eSpeak synthesis and the WSJ reader."""

import os
import threading
import wave

import numpy as np
import pytest

from mm_jax.data import audio
from mm_jax.data import wsj
from mm_jax.data.tiny import speech

SR = 16000


def _sine(freq, seconds=1.0, rate=SR, amplitude=0.5):
  t = np.arange(int(round(seconds * rate))) / rate
  return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_wav(path, samples, rate=SR, width=2, channels=1):
  """float [n] or [n, channels] in [-1, 1] -> integer PCM WAV."""
  x = np.asarray(samples, np.float64).reshape(-1, channels)
  if width == 1:
    raw = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8)
  else:
    scale = float(1 << (8 * width - 1))
    ints = np.clip(np.round(x * scale), -scale, scale - 1).astype('<i4')
    # Keep the low `width` bytes of each little-endian int32.
    raw = ints.view(np.uint8).reshape(-1, 4)[:, :width]       # [n * ch, w]
  with wave.open(os.fspath(path), 'wb') as f:
    f.setnchannels(channels)
    f.setsampwidth(width)
    f.setframerate(rate)
    f.writeframes(raw.tobytes())


def _f0(w, rate=SR):
  """Median autocorrelation pitch (Hz) of the loud 40 ms frames."""
  pitches = []
  for s in range(0, len(w) - 640, 320):
    frame = w[s:s + 640] - w[s:s + 640].mean()
    if np.sqrt(np.mean(frame ** 2)) < 0.03:
      continue
    ac = np.correlate(frame, frame, 'full')[639:]
    lo, hi = rate // 400, rate // 60
    pitches.append(rate / (lo + np.argmax(ac[lo:hi])))
  return float(np.median(pitches))


# ------------------------------------------------------------- features --

def test_log_mel_shapes_follow_the_framing_convention():
  one_second = _sine(440)
  assert audio.log_mel(one_second).shape == (98, 80, 1)
  assert audio.log_mel(one_second, deltas=True).shape == (98, 80, 3)
  assert audio.log_mel(one_second[:16000 - 159]).shape == (97, 80, 1)
  assert audio.log_mel(one_second[:100]).shape == (1, 80, 1)   # padded
  assert audio.log_mel(one_second).dtype == np.float32


def test_sine_peaks_in_the_mel_bin_centred_nearest_its_frequency():
  edges = audio.mel_to_hz(np.linspace(audio.hz_to_mel(audio.LOWER_EDGE_HZ),
                                      audio.hz_to_mel(audio.UPPER_EDGE_HZ),
                                      82))
  for freq in (1000.0, 3000.0):
    feats = audio.log_mel(_sine(freq))[:, :, 0]                # [98, 80]
    assert np.all(feats.argmax(axis=1) == np.argmin(abs(edges[1:-1] - freq)))


def test_silence_gives_the_log_floor_and_zero_deltas():
  feats = audio.log_mel(np.zeros(SR, np.float32), deltas=True)
  np.testing.assert_allclose(feats[:, :, 0], np.log(1e-3), rtol=1e-6)
  np.testing.assert_array_equal(feats[:, :, 1:], 0.0)


def test_deltas_of_a_ramp_are_its_slope():
  ramp = np.tile(np.arange(10, dtype=np.float32)[:, None] * 0.5, (1, 4))
  d = audio.delta_features(ramp)
  np.testing.assert_allclose(d[2:-2], 0.5, rtol=1e-6)       # away from edges


def test_log_mel_rejects_bad_input():
  with pytest.raises(ValueError, match='mono'):
    audio.log_mel(np.zeros((SR, 2), np.float32))
  with pytest.raises(ValueError, match='32768'):
    audio.log_mel(np.zeros(SR, np.int16))
  with pytest.raises(ValueError, match='non-finite'):
    audio.log_mel(np.full(SR, np.nan, np.float32))


@pytest.mark.parametrize('orig', [22050, 8000, 44100])
def test_resampling_preserves_a_sines_frequency(orig):
  out = audio.resample(_sine(1000.0, rate=orig, amplitude=1.0), orig, SR)
  assert out.shape == (SR,) and out.dtype == np.float32
  spectrum = np.abs(np.fft.rfft(out))
  assert spectrum.argmax() == 1000                             # 1 Hz bins
  ideal = _sine(1000.0, amplitude=1.0)
  np.testing.assert_allclose(out[200:-200], ideal[200:-200], atol=1e-3)


def test_downsampling_removes_frequencies_above_the_new_nyquist():
  out = audio.resample(_sine(10000.0, rate=22050, amplitude=1.0), 22050, SR)
  assert np.abs(out[200:-200]).max() < 1e-3


def test_log_mel_resamples_other_rates():
  feats = audio.log_mel(_sine(1000.0, rate=22050), sample_rate=22050)
  np.testing.assert_allclose(feats, audio.log_mel(_sine(1000.0)), atol=0.05)


# --------------------------------------------------------------- reading --

@pytest.mark.parametrize('width', [1, 2, 3, 4])
def test_wav_round_trip(tmp_path, width):
  x = _sine(440, seconds=0.1)
  _write_wav(tmp_path / 'a.wav', x, width=width)
  y, rate = audio.read_audio(tmp_path / 'a.wav')
  assert rate == SR and y.dtype == np.float32 and y.shape == x.shape
  np.testing.assert_allclose(y, x, atol=1.0 / (1 << (8 * width - 2)))


def test_stereo_wav_is_averaged_to_mono(tmp_path):
  left, right = _sine(440, 0.1), _sine(880, 0.1)
  _write_wav(tmp_path / 's.wav', np.stack([left, right], 1), channels=2,
             rate=8000)
  y, rate = audio.read_audio(tmp_path / 's.wav')
  assert rate == 8000
  np.testing.assert_allclose(y, (left + right) / 2, atol=1e-4)


def test_truncated_or_garbage_wav_raises_audio_decode_error(tmp_path):
  _write_wav(tmp_path / 'a.wav', _sine(440, 0.1))
  blob = (tmp_path / 'a.wav').read_bytes()
  (tmp_path / 'cut.wav').write_bytes(blob[:len(blob) // 2])
  (tmp_path / 'header.wav').write_bytes(blob[:20])
  (tmp_path / 'junk.wav').write_bytes(b'not a wav file at all' * 10)
  (tmp_path / 'empty.wav').write_bytes(b'')
  for name in ('cut', 'header', 'junk', 'empty'):
    with pytest.raises(audio.AudioDecodeError):
      audio.read_audio(tmp_path / f'{name}.wav')
  with pytest.raises(FileNotFoundError):
    audio.read_audio(tmp_path / 'absent.wav')


def _sphere(samples, coding='pcm', byte_format='01'):
  ints = np.round(np.asarray(samples) * 32767).astype(
      '<i2' if byte_format == '01' else '>i2')
  fields = ('NIST_1A\n   1024\nsample_rate -i 16000\nchannel_count -i 1\n'
            f'sample_n_bytes -i 2\nsample_count -i {len(ints)}\n'
            f'sample_byte_format -s2 {byte_format}\n'
            f'sample_coding -s{len(coding)} {coding}\nend_head\n')
  return fields.encode().ljust(1024, b' ') + ints.tobytes()


def test_sphere_pcm_is_read_and_shorten_names_the_converter(tmp_path):
  x = _sine(300, 0.05)
  for order in ('01', '10'):
    (tmp_path / 'u.sph').write_bytes(_sphere(x, byte_format=order))
    y, rate = audio.read_audio(tmp_path / 'u.sph')
    assert rate == SR
    np.testing.assert_allclose(y, x, atol=1e-4)
  (tmp_path / 's.wv1').write_bytes(
      _sphere(x, coding='pcm,embedded-shorten-v2.00'))
  with pytest.raises(audio.UnsupportedAudioError, match='sph2pipe'):
    audio.read_audio(tmp_path / 's.wv1')
  (tmp_path / 't.sph').write_bytes(_sphere(x)[:1500])
  with pytest.raises(audio.AudioDecodeError, match='truncated'):
    audio.read_audio(tmp_path / 't.sph')


def test_flac_without_soundfile_names_a_conversion(tmp_path):
  try:
    import soundfile  # pylint: disable=g-import-not-at-top,unused-import
    pytest.skip('soundfile is installed: .flac is readable')
  except ImportError:
    pass
  (tmp_path / 'a.flac').write_bytes(b'fLaC' + bytes(100))
  with pytest.raises(audio.UnsupportedAudioError, match='sox'):
    audio.read_audio(tmp_path / 'a.flac')


# ------------------------------------------------------------ synthesis --

SENTENCE = 'the small red cat sees two green dogs'


def test_synthesis_is_speech_like():
  w = speech.synthesize(SENTENCE, 'en-us', 175, 50)
  assert w.dtype == np.float32 and w.ndim == 1
  assert 0.8 < len(w) / SR < 5.0
  assert np.sqrt(np.mean(w ** 2)) > 0.02 and np.abs(w).max() <= 1.0


def test_duration_grows_with_text_and_shrinks_with_rate():
  short = speech.synthesize('the cat', 'en-us', 175, 50)
  long = speech.synthesize(SENTENCE + ' near the big house', 'en-us', 175, 50)
  fast = speech.synthesize(SENTENCE, 'en-us', 300, 50)
  slow = speech.synthesize(SENTENCE, 'en-us', 120, 50)
  assert len(long) > 2 * len(short)
  assert len(slow) > 1.5 * len(fast)


def test_voices_and_pitch_change_the_sound():
  female = speech.synthesize(SENTENCE, 'en-us+f2', 175, 50)
  male = speech.synthesize(SENTENCE, 'en-us+m3', 175, 50)
  scottish = speech.synthesize(SENTENCE, 'en-gb-scotland', 175, 50)
  assert _f0(female) > 1.4 * _f0(male)
  assert not np.array_equal(male[:len(scottish)], scottish[:len(male)])
  low = speech.synthesize(SENTENCE, 'en-us', 175, 20)
  high = speech.synthesize(SENTENCE, 'en-us', 175, 80)
  assert _f0(high) > 1.3 * _f0(low)


def test_synthesis_is_bit_exact_whatever_was_said_before():
  first = speech.synthesize(SENTENCE, 'en-us+whisper', 160, 40, noise_seed=3)
  speech.synthesize('something else entirely', 'en-029', 200, 70)
  again = speech.synthesize(SENTENCE, 'en-us+whisper', 160, 40, noise_seed=3)
  np.testing.assert_array_equal(first, again)
  results = [None, None]

  def speak(k):
    results[k] = speech.synthesize(SENTENCE, 'en-us+whisper', 160, 40,
                                   noise_seed=3)

  threads = [threading.Thread(target=speak, args=(k,)) for k in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for r in results:
    np.testing.assert_array_equal(r, first)


def test_generate_speech_varies_voices_deterministically():
  sentences = [SENTENCE, 'a blue bird sings', 'three old trees grow']
  a = list(speech.generate_speech(sentences, seed=7))
  b = list(speech.generate_speech(sentences[:2], seed=7))
  c = list(speech.generate_speech(sentences, seed=8))
  assert [ex['text'] for ex in a] == sentences
  for ex in a:
    assert ex['sample_rate'] == SR and ex['audio'].dtype == np.float32
    assert ex['voice'] in speech.VOICES
    assert speech.RATE_WPM[0] <= ex['rate'] <= speech.RATE_WPM[1]
    assert speech.PITCH[0] <= ex['pitch'] <= speech.PITCH[1]
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['audio'], y['audio'])
  assert [(x['voice'], x['rate'], x['pitch']) for x in a] != [
      (x['voice'], x['rate'], x['pitch']) for x in c]


def test_synthesis_rejects_bad_arguments():
  for voice in ('zzzz', 'en-us+nonexistent'):
    with pytest.raises(ValueError, match='no voice'):
      speech.synthesize(SENTENCE, voice, 175, 50)
  with pytest.raises(ValueError, match='80-450'):
    speech.synthesize(SENTENCE, 'en-us', 20, 50)
  with pytest.raises(ValueError, match='empty'):
    speech.synthesize('  ', 'en-us', 175, 50)


# ------------------------------------------------------------------- WSJ --

def test_normalize_transcript():
  raw = ('[loud_breath] THE DOW ,COMMA \\PERIOD <NOISE> ROSE [<door_slam] '
         '*TWENTY-FIVE* POINTS DON\'T "DOUBLE-QUOTE :SO . ~ U.S. [door_slam>]')
  assert wsj.normalize_transcript(raw) == (
      "the dow rose twenty-five points don't so u.s.")


def _utterances(folder):
  folder.mkdir(parents=True)
  _write_wav(folder / 'aa01.wav', _sine(300, 0.3))
  (folder / 'deep').mkdir()
  _write_wav(folder / 'deep' / 'AA02.wav', _sine(500, 0.2, rate=8000),
             rate=8000)


def test_wsj_reads_transcripts_and_wavs(tmp_path):
  _utterances(tmp_path / 'wsj' / 'test_eval92')
  (tmp_path / 'wsj' / 'test_eval92' / 'transcripts.txt').write_text(
      'aa01 THE MARKET ,COMMA FELL\naa02 STOCKS ROSE [loud_breath]\n'
      'aa03 NO AUDIO FOR THIS ONE\n')
  source = wsj.WsjSource(tmp_path / 'wsj', 'test')
  assert len(source) == 2 and source.missing_audio == 1
  ex = source[1]
  assert ex['text'] == 'stocks rose' and ex['sample_rate'] == 8000
  assert ex['audio'].shape == (1600,) and ex['audio'].dtype == np.float32
  assert source[0]['text'] == 'the market fell'


def test_wsj_reads_ldc_dot_lines(tmp_path):
  _utterances(tmp_path / 'dev93')
  (tmp_path / 'dev93' / 'deep' / 'aa.dot').write_text(
      'THE MARKET FELL (aa01)\nSTOCKS \\COMMA ROSE (AA02)\n')
  source = wsj.WsjSource(tmp_path, 'validation')
  assert [source[i]['text'] for i in range(2)] == ['the market fell',
                                                   'stocks rose']


def test_wsj_reads_kaldi_data_directories(tmp_path):
  _utterances(tmp_path / 'audio')
  split = tmp_path / 'train_si284'
  split.mkdir()
  (split / 'wav.scp').write_text(
      f'aa01 {tmp_path}/audio/aa01.wav\n'
      f'aa02 sph2pipe -f wav {tmp_path}/audio/deep/AA02.wav |\n')
  (split / 'text').write_text('aa01 <NOISE> HELLO\naa02 WORLD\n')
  source = wsj.WsjSource(tmp_path, 'train')
  assert source.layout == 'kaldi' and len(source) == 2
  assert source[0]['text'] == 'hello' and source[1]['sample_rate'] == 8000


def test_wsj_missing_data_errors_name_the_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist.*wav.scp'):
    wsj.WsjSource(tmp_path / 'nowhere', 'train')
  with pytest.raises(FileNotFoundError, match='train_si284'):
    wsj.WsjSource(tmp_path, 'train')
  _utterances(tmp_path / 'train')
  with pytest.raises(FileNotFoundError, match='No WSJ transcripts'):
    wsj.WsjSource(tmp_path, 'train')
  (tmp_path / 'train' / 'transcripts.txt').write_text('zz99 NOTHING\n')
  with pytest.raises(FileNotFoundError, match='both a transcript'):
    wsj.WsjSource(tmp_path, 'train')


def test_wsj_corrupt_audio_raises_decode_error(tmp_path):
  _utterances(tmp_path / 'test')
  (tmp_path / 'test' / 'aa01.wav').write_bytes(b'RIFF' + bytes(10))
  (tmp_path / 'test' / 'transcripts.txt').write_text('aa01 A\naa02 B\n')
  source = wsj.WsjSource(tmp_path, 'test')
  with pytest.raises(audio.AudioDecodeError):
    source[0]
  assert source[1]['text'] == 'b'


def test_wsj_shorten_files_fail_at_construction_with_the_fix(tmp_path):
  (tmp_path / 'test').mkdir()
  (tmp_path / 'test' / 'aa01.wv1').write_bytes(
      _sphere(_sine(300, 0.05), coding='pcm,embedded-shorten-v2.00'))
  (tmp_path / 'test' / 'aa01.dot').write_text('HELLO (aa01)\n')
  with pytest.raises(audio.UnsupportedAudioError, match='sph2pipe'):
    wsj.WsjSource(tmp_path, 'test')
