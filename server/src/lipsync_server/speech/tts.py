"""Offline speech for the demo and the benchmarks: eSpeak NG (from the ``espeakng-loader`` wheel,
through its C API), or a synthetic speech-like signal where that library cannot load."""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from lipsync_contract.errors import LipSyncError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_LOCK = threading.Lock()  # the library keeps global state
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SpeechSynthesisError(LipSyncError):
    """eSpeak NG is missing or failed."""


def speak(text: str, voice: str = "en", words_per_minute: int = 160) -> tuple[np.ndarray, int]:
    """``text`` spoken by eSpeak NG: mono float32 samples in [-1, 1] and their rate (22050)."""
    try:
        import espeakng_loader

        library = ctypes.CDLL(espeakng_loader.get_library_path())
        data_path = espeakng_loader.get_data_path()
    except (ImportError, OSError, RuntimeError) as exc:
        raise SpeechSynthesisError(f"eSpeak NG is not available: {exc}") from None
    chunks: list[np.ndarray] = []

    def collect(wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None) -> int:
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    callback = _CALLBACK(collect)
    library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    encoded = text.encode()
    with _LOCK:
        rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if rate <= 0:
            raise SpeechSynthesisError(f"eSpeak NG failed to initialise (data: {data_path})")
        library.espeak_SetSynthCallback(callback)
        if library.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SpeechSynthesisError(f"eSpeak NG has no voice {voice!r}")
        library.espeak_SetParameter(1, words_per_minute, 0)  # espeakRATE
        status = library.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        library.espeak_Synchronize()
        library.espeak_Terminate()
    if status != 0 or not chunks:
        raise SpeechSynthesisError(f"eSpeak NG synthesis failed (status {status})")
    samples = np.concatenate(chunks).astype(np.float32) / 32768.0
    return samples, int(rate)


def synthetic_speech(
    seconds: float, sample_rate: int = 16000, seed: int = 0, pause_every: float = 1.5
) -> np.ndarray:
    """Speech-like test audio: voiced syllables (a 110-220 Hz harmonic source through two moving
    formants) at about 4 per second, with a silent pause of 0.4 s every ``pause_every`` s."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    pitch = 165 + 55 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    formants = (700 + 300 * np.sin(2 * np.pi * 2.1 * t), 1500 + 500 * np.sin(2 * np.pi * 1.3 * t))
    source = sum(
        np.sin(h * phase) / h * sum(np.exp(-(((h * pitch) - f) ** 2) / 2e5) for f in formants)
        for h in range(1, 25)
    )
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    signal = source * syllables
    if pause_every > 0:
        signal[(t % pause_every) > pause_every - 0.4] = 0.0
    peak = float(np.max(np.abs(signal))) or 1.0
    speech: np.ndarray = (0.5 * signal / peak).astype(np.float32)
    return speech
