"""The speech front end: PCM decoding, resampling, log-mel (streaming == offline), mel windows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lipsync_contract.modelio import encoder_preset
from lipsync_server.errors import InvalidRequestError
from lipsync_server.speech.frames import MelWindow, MelWindower, sample_range, video_frame_count
from lipsync_server.speech.mel import MelStream, log_mel, mel_basis, mel_frame_count
from lipsync_server.speech.pcm import PcmChunk, PcmStream, decode_pcm, resample

pytestmark = pytest.mark.unit

CONTRACT = encoder_preset("ave")
SETTINGS = CONTRACT.front_end


def _speechlike(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Noise bursts under a slow envelope with a silent gap in the middle."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    signal = rng.normal(0, 0.2, n) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    signal[n // 3 : n // 2] = 0.0
    return signal.astype(np.float32)


def test_the_mel_basis_is_librosas() -> None:
    librosa = pytest.importorskip("librosa", reason="librosa (dev group) is the reference")
    expected = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    np.testing.assert_allclose(mel_basis(SETTINGS), expected, atol=1e-7)


def test_log_mel_follows_the_published_recipe() -> None:
    librosa = pytest.importorskip("librosa", reason="librosa (dev group) is the reference")
    samples = _speechlike(1.3).astype(np.float64)
    emphasised = np.append(samples[0], samples[1:] - 0.97 * samples[:-1])
    spectrum = np.abs(
        librosa.stft(emphasised, n_fft=800, hop_length=200, win_length=800, pad_mode="constant")
    )
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ spectrum)) - 20
    expected = np.clip(8 * (db + 100) / 100 - 4, -4, 4).T
    got = log_mel(samples, SETTINGS).mel
    assert got.shape == (mel_frame_count(samples.size, SETTINGS), 80) == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 199, 320, 801, 16000])
def test_streaming_mel_equals_offline_mel(chunk: int) -> None:
    samples = _speechlike(2.07)
    offline = log_mel(samples, SETTINGS)
    stream = MelStream(SETTINGS)
    parts = [stream.push(samples[i : i + chunk]) for i in range(0, samples.size, chunk)]
    parts.append(stream.finish())
    mel = np.concatenate([part.mel for part in parts])
    rms = np.concatenate([part.rms for part in parts])
    assert mel.shape == offline.mel.shape
    np.testing.assert_allclose(mel, offline.mel, atol=1e-5)
    np.testing.assert_allclose(rms, offline.rms, atol=1e-7)


def test_mel_frames_arrive_as_soon_as_their_window_is_complete() -> None:
    stream = MelStream(SETTINGS)
    assert stream.push(np.zeros(399, np.float32)).mel.shape[0] == 0
    assert stream.push(np.zeros(1, np.float32)).mel.shape[0] == 1  # 400 zeros of padding + 400
    assert stream.push(np.zeros(200, np.float32)).mel.shape[0] == 1


def test_mel_windows_streamed_equal_the_offline_windows_and_flag_silence() -> None:
    samples = _speechlike(3.0)
    offline = log_mel(samples, SETTINGS)
    windower = MelWindower(CONTRACT, silence_rms=1e-3)
    expected = [*windower.push(offline), *windower.finish(samples.size)]
    assert len(expected) == video_frame_count(samples.size, 16000, 25.0) == 75
    assert all(window.mel.shape == (1, 80, 16) for window in expected)
    np.testing.assert_array_equal(expected[10].mel[0], offline.mel[32:48].T)  # int(80*10/25)
    np.testing.assert_array_equal(expected[-1].mel[0], offline.mel[-16:].T)  # clamped at the end
    silent = [window.frame for window in expected if window.silent]
    assert silent
    assert all(25 <= frame * 0.04 * 25 <= 50 for frame in silent)  # inside the silent second
    stream, windower = MelStream(SETTINGS), MelWindower(CONTRACT, silence_rms=1e-3)
    got: list[MelWindow] = []
    for start in range(0, samples.size, 320):
        got += windower.push(stream.push(samples[start : start + 320]))
    got += windower.push(stream.finish())
    got += windower.finish(samples.size)
    assert [w.frame for w in got] == list(range(75))
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(ours.mel, theirs.mel)
        assert ours.silent == theirs.silent


def test_frame_sample_ranges_tile_the_clip() -> None:
    for rate, samples in ((16000, 16000 * 5 + 17), (44100, 44100 * 2 + 1), (48000, 48000)):
        frames = video_frame_count(samples, rate, 25.0)
        ranges = [sample_range(i, rate, 25.0, samples) for i in range(frames)]
        assert ranges[0][0] == 0
        assert ranges[-1][1] == samples
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert all(end > start for start, end in ranges)


def test_pcm_decoding_names_each_violation() -> None:
    assert decode_pcm(np.array([0, 16384, -32768], "<i2").tobytes(), "s16le", 100).tolist() == [
        0.0,
        0.5,
        -1.0,
    ]
    with pytest.raises(InvalidRequestError, match="3 bytes is not a whole number of s16le"):
        decode_pcm(b"\x00\x01\x02", "s16le", 100)
    with pytest.raises(InvalidRequestError, match="6 bytes is not a whole number of f32le"):
        decode_pcm(b"\x00" * 6, "f32le", 100)
    with pytest.raises(InvalidRequestError, match="NaN or Inf"):
        decode_pcm(np.array([0.0, np.nan], "<f4").tobytes(), "f32le", 100)
    with pytest.raises(InvalidRequestError, match="200 bytes is over the limit of 100"):
        decode_pcm(b"\x00" * 200, "s16le", 100)
    with pytest.raises(InvalidRequestError, match="no data"):
        decode_pcm(b"", "s16le", 100)


def test_a_stream_keeps_one_sample_rate_and_format() -> None:
    stream = PcmStream(16000)
    stream.push(PcmChunk(np.zeros(160, np.float32), 16000, "s16le"))
    with pytest.raises(InvalidRequestError, match="sample_rate changed from 16000 to 48000"):
        stream.push(PcmChunk(np.zeros(480, np.float32), 48000, "s16le"))
    with pytest.raises(InvalidRequestError, match="format changed from s16le to f32le"):
        stream.push(PcmChunk(np.zeros(160, np.float32), 16000, "f32le"))
    with pytest.raises(InvalidRequestError, match=r"sample_rate 4000 is outside 8000\.\.192000"):
        PcmStream(16000).push(PcmChunk(np.zeros(40, np.float32), 4000, "s16le"))


def test_streamed_resampling_equals_resampling_the_clip() -> None:
    samples = _speechlike(1.5, rate=48000)
    stream = PcmStream(16000)
    parts = [
        stream.push(PcmChunk(samples[i : i + 960], 48000, "f32le"))
        for i in range(0, samples.size, 960)
    ]
    parts.append(stream.finish())
    whole = resample(samples, 48000, 16000)
    assert whole.size == 24000
    np.testing.assert_array_equal(np.concatenate(parts), whole)
