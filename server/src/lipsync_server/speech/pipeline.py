"""One clip's or stream's speech: PCM chunks -> 16 kHz -> log-mel -> a mel window per frame."""

from __future__ import annotations

from lipsync_contract.modelio import EncoderContract
from lipsync_server.speech.frames import MelWindow, MelWindower
from lipsync_server.speech.mel import MelAnalyzer, MelStream
from lipsync_server.speech.pcm import PcmChunk, PcmStream


def silence_rms(threshold_dbfs: float) -> float:
    return float(10.0 ** (threshold_dbfs / 20.0))


class SpeechInput:
    """``push`` PCM chunks, then ``finish`` once; each returns the mel windows now complete."""

    def __init__(
        self,
        contract: EncoderContract,
        silence_threshold_dbfs: float,
        analyzer: MelAnalyzer | None = None,
    ) -> None:
        front_end = contract.front_end
        self._pcm = PcmStream(front_end.sample_rate)
        self._mel = MelStream(front_end, analyzer)
        self._windows = MelWindower(contract, silence_rms(silence_threshold_dbfs))
        self.finished = False

    @property
    def sample_rate(self) -> int:
        """The client's sample rate (0 before the first chunk)."""
        return self._pcm.sample_rate

    @property
    def samples_in(self) -> int:
        """Samples received, at the client's rate."""
        return self._pcm.samples_in

    def push(self, chunk: PcmChunk) -> list[MelWindow]:
        return list(self._windows.push(self._mel.push(self._pcm.push(chunk))))

    def finish(self) -> list[MelWindow]:
        self.finished = True
        tail = self._pcm.finish()
        windows = list(self._windows.push(self._mel.push(tail)))
        windows += self._windows.push(self._mel.finish())
        return windows + list(self._windows.finish(self._mel.samples))


def clip_windows(
    chunk: PcmChunk, contract: EncoderContract, silence_threshold_dbfs: float
) -> tuple[list[MelWindow], SpeechInput]:
    """Every mel window of a whole clip (the same windows a stream of its chunks yields)."""
    speech = SpeechInput(contract, silence_threshold_dbfs)
    windows = speech.push(chunk)
    return windows + speech.finish(), speech
