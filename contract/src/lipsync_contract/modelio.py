"""The model I/O contracts: names, dtypes, shapes (dynamic batch) and value ranges of a model.

Two models are served together: the lip-sync UNet (:class:`ModelContract`: a face image and an
audio-feature window in, an image out) and the audio encoder in front of it
(:class:`EncoderContract`: a mel-spectrogram window in, one feature vector per video frame out).
Shapes and names are configuration (a preset or an explicit contract), never constants in code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lipsync_contract.errors import ContractError

DType = Literal["float32", "float16", "uint8"]
ChannelOrder = Literal["BGR", "BGR+BGR", "features"]


class TensorSpec(BaseModel):
    """One model tensor. ``shape`` excludes the leading dynamic batch dimension."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    shape: tuple[int, ...] = Field(description="Shape without the batch dimension.")
    dtype: DType = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    channel_order: ChannelOrder = "BGR"

    def batch_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.shape)

    def describe(self) -> str:
        return f"{self.name} {self.dtype}[B,{','.join(str(d) for d in self.shape)}]"


class IOContract(BaseModel):
    """The inputs and the output of one model; every input shares the leading batch axis."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    output: TensorSpec

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        raise NotImplementedError

    @property
    def batch_input(self) -> TensorSpec:
        """The input whose leading dimension is the batch size."""
        return self.inputs[0]


class ModelContract(IOContract):
    """What a lip-sync model takes and returns: a face image, an audio-feature window, an image."""

    image: TensorSpec
    audio: TensorSpec
    audio_window: int = Field(16, ge=1, description="Audio frames per window.")
    audio_window_before: int = Field(8, ge=0, description="Window frames before the current one.")
    audio_feature_dim: int = Field(512, ge=1, description="Length of one frame's feature vector.")

    @property
    def inputs(self) -> tuple[TensorSpec, TensorSpec]:
        return (self.image, self.audio)


class MelSettings(BaseModel):
    """The audio front end an encoder was trained with (see server/CONFIG.md, "Audio input")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_rate: int = Field(16000, ge=1000)
    preemphasis: float = Field(0.97, ge=0.0, lt=1.0)
    n_fft: int = Field(800, ge=16)
    hop_length: int = Field(200, ge=1)
    win_length: int = Field(800, ge=16)
    n_mels: int = Field(80, ge=1)
    fmin: float = Field(55.0, ge=0.0)
    fmax: float = Field(7600.0, gt=0.0)
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = Field(4.0, gt=0.0)

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


class EncoderContract(IOContract):
    """What an audio encoder takes and returns: a mel window per video frame, one feature vector.

    Video frame ``i`` at ``fps`` takes ``window`` mel frames from ``int(mel_fps * i / fps)`` (the
    last ``window`` ones past the end of the clip).
    """

    mel: TensorSpec
    fps: float = Field(25.0, gt=0.0, description="Video frames per second of audio.")
    front_end: MelSettings = MelSettings()

    @property
    def inputs(self) -> tuple[TensorSpec]:
        return (self.mel,)

    @property
    def window(self) -> int:
        """Mel frames per video frame's window (the last axis of the mel tensor)."""
        return self.mel.shape[-1]


def _unet328(audio: TensorSpec, image_name: str) -> ModelContract:
    return ModelContract(
        image=TensorSpec(name=image_name, shape=(6, 320, 320), channel_order="BGR+BGR"),
        audio=audio,
        output=TensorSpec(name="output", shape=(3, 320, 320)),
    )


PRESETS: dict[str, ModelContract] = {
    "unet328-ave": _unet328(
        TensorSpec(
            name="audio", shape=(32, 16, 16), value_range=(-10.0, 10.0), channel_order="features"
        ),
        image_name="input",
    ),
    # The shape of the export snippet in the original PyTorch project: audio [B, 512, 1, 8].
    "unet328-export": _unet328(
        TensorSpec(
            name="audio", shape=(512, 1, 8), value_range=(-10.0, 10.0), channel_order="features"
        ),
        image_name="image",
    ),
}


# The "ave" audio encoder of UNet-328: mel [B, 1, 80, 16] (200 ms) -> features [B, 512].
ENCODER_PRESETS: dict[str, EncoderContract] = {
    "ave": EncoderContract(
        mel=TensorSpec(
            name="mel", shape=(1, 80, 16), value_range=(-4.0, 4.0), channel_order="features"
        ),
        output=TensorSpec(
            name="features", shape=(512,), value_range=(0.0, 100.0), channel_order="features"
        ),
    ),
}


def preset(name: str) -> ModelContract:
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        hint = f" ({name!r} is an audio encoder preset)" if name in ENCODER_PRESETS else ""
        raise ContractError(f"unknown I/O preset {name!r}{hint}; known presets: {known}") from None


def encoder_preset(name: str) -> EncoderContract:
    try:
        return ENCODER_PRESETS[name]
    except KeyError:
        raise ContractError(
            f"unknown audio encoder preset {name!r}; known: {', '.join(sorted(ENCODER_PRESETS))}"
        ) from None


def any_preset(name: str) -> ModelContract | EncoderContract:
    """A UNet preset or an audio encoder preset (the names do not overlap)."""
    return ENCODER_PRESETS[name] if name in ENCODER_PRESETS else preset(name)
