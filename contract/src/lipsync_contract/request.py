"""A build request: the builder's arguments as one typed object.

The operator imports this module to produce the build Job's arguments (``to_args``) and to compute
the engine key it expects (``key_inputs``), so the two can never disagree with the builder.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lipsync_contract.enginekey import BatchProfile, EngineKeyInputs, engine_key, unpinned_digest
from lipsync_contract.kinds import Precision
from lipsync_contract.modelio import ENCODER_PRESETS, EncoderContract, ModelContract, any_preset

BuildBackend = Literal[
    "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt-rtx", "tensorrt", "torch", "torch-aoti"
]
TORCH_BACKENDS: tuple[BuildBackend, ...] = ("torch", "torch-aoti")  # from a torch.export program

RANDOM_CALIBRATION_DIGEST = "random"
DEFAULT_CALIBRATION_SAMPLES = 16
# A bearer token for https:// sources reaches the builder in this variable (from the key
# SOURCE_TOKEN_KEY of the model's credentials Secret), never on its command line.
SOURCE_TOKEN_ENV = "LIPSYNC_SOURCE_TOKEN"
SOURCE_TOKEN_KEY = "token"
# The Secret's optional key SOURCE_CA_KEY: PEM certificates the builder trusts for https://
# sources besides the system's (a model store behind a private CA), in this variable.
SOURCE_CA_ENV = "LIPSYNC_SOURCE_CA"
SOURCE_CA_KEY = "ca.crt"

# Distributions that provide each backend, first installed one wins; the label goes in the key.
_BACKEND_LIBRARIES: dict[BuildBackend, tuple[str, tuple[str, ...]]] = {
    "onnxruntime-cpu": ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    "onnxruntime-cuda": ("onnxruntime", ("onnxruntime-gpu", "onnxruntime")),
    "tensorrt-rtx": ("onnxruntime", ("onnxruntime-trt-rtx", "onnxruntime-gpu", "onnxruntime")),
    "tensorrt": ("tensorrt", ("tensorrt", "tensorrt-cu13", "tensorrt-cu12")),
    "torch": ("torch", ("torch",)),
    "torch-aoti": ("torch", ("torch",)),
}


def builder_version() -> str:
    """The contract's version: what defines the key and the request, installed in the builder
    and in the operator alike (the builder's own code is identified by ``runtime``, its image)."""
    try:
        return version("lipsync-contract")
    except PackageNotFoundError:
        return "0+unknown"


def default_runtime(backend: BuildBackend) -> str:
    """``'<backend library> <version>'`` of what is installed here (``not-installed`` if none)."""
    label, distributions = _BACKEND_LIBRARIES[backend]
    for distribution in distributions:
        try:
            return f"{label} {version(distribution)}"
        except PackageNotFoundError:
            continue
    return f"{label} not-installed"


class BuildRequest(BaseModel):
    """Everything ``lipsync build`` takes. Field names follow the CLI flags one to one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, description="Model URI: path, file://, https://, pvc://.")
    sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$", description="Pinned model digest.")
    io: str = Field("unet328-ave", description="Model I/O contract preset.")
    precision: Precision = "fp32"
    backend: BuildBackend = "onnxruntime-cpu"
    runtime: str = Field("", description="Backend runtime id; empty: what is installed here.")
    gpu_product: str = Field("cpu", min_length=1)
    compute_capability: str = ""
    batch: BatchProfile = BatchProfile()
    calibration: str = Field("", description="Calibration data URI (.npz files).")
    calibration_sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    calibration_samples: int = Field(DEFAULT_CALIBRATION_SAMPLES, ge=1)
    min_psnr: float | None = Field(None, description="Accuracy gate in dB; None: per precision.")
    cache: str = Field(min_length=1, description="Cache root: a path or an fsspec URL.")
    termination_log: str = Field("", description="Job result path; empty: the default if writable.")
    allow_random_calibration: bool = False
    # Not in the key: how the build is checked and measured, and TensorRT build effort.
    verify_samples: int = Field(4, ge=1, description="Held-out frames for the accuracy gate.")
    measure_frames: int = Field(8, ge=1, description="Frames timed per profile batch size.")
    workspace_mib: int = Field(4096, ge=1, description="TensorRT workspace limit.")
    optimization_level: int = Field(3, ge=0, le=5, description="TensorRT builder level.")
    # The audio encoder, built beside the UNet as a second model with a key of its own.
    audio_encoder: str = Field("", description="Audio encoder model URI; empty: none.")
    audio_encoder_sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    audio_encoder_io: str = Field("ave", description="Audio encoder I/O contract preset.")
    audio_encoder_batch_max: int = Field(32, ge=1, description="Encoder profile's largest batch.")

    @model_validator(mode="after")
    def _check_batch_profile(self) -> BuildRequest:
        if not self.batch.min <= self.batch.opt <= self.batch.max:
            raise ValueError(
                f"batch profile needs min <= opt <= max, got "
                f"{self.batch.min}/{self.batch.opt}/{self.batch.max}"
            )
        return self

    @classmethod
    def from_flat(cls, params: Mapping[str, Any]) -> BuildRequest:
        """From flat CLI parameters (``batch_min``/``batch_opt``/``batch_max`` for the profile)."""
        flat = dict(params)
        batch = BatchProfile(
            min=flat.pop("batch_min", 1), opt=flat.pop("batch_opt", 4), max=flat.pop("batch_max", 8)
        )
        return cls(batch=batch, **flat)

    def contract(self) -> ModelContract | EncoderContract:
        return any_preset(self.io)

    def encoder_request(self) -> BuildRequest | None:
        """The build of the audio encoder for the same backend and GPU product, or None.

        Its own model, contract and batch profile (1 / min(8, max) / max windows); int8 UNet
        builds get an fp32 encoder (int8 would need its own calibration set, for about 1.5 %
        of the UNet's FLOPs); the accuracy gate is the default of its precision.
        """
        if not self.audio_encoder:
            return None
        if self.audio_encoder_io not in ENCODER_PRESETS:
            known = ", ".join(sorted(ENCODER_PRESETS))
            raise ValueError(
                f"audio-encoder-io {self.audio_encoder_io!r} is not an audio encoder preset "
                f"({known})"
            )
        top = self.audio_encoder_batch_max
        return self.model_copy(
            update={
                "model": self.audio_encoder,
                "sha256": self.audio_encoder_sha256,
                "io": self.audio_encoder_io,
                "precision": "fp32" if self.precision == "int8" else self.precision,
                "batch": BatchProfile(min=1, opt=min(8, top), max=top),
                "calibration": "",
                "calibration_sha256": "",
                "allow_random_calibration": False,
                "min_psnr": None,
                "audio_encoder": "",
                "audio_encoder_sha256": "",
            }
        )

    def resolved_runtime(self) -> str:
        return self.runtime or default_runtime(self.backend)

    def model_digest(self) -> str:
        return self.sha256 or unpinned_digest(self.model)

    def calibration_digest(self) -> str:
        """Empty unless int8; otherwise the data's digest and how many samples were used."""
        if self.precision != "int8":
            return ""
        if not self.calibration:
            digest = RANDOM_CALIBRATION_DIGEST
        else:
            digest = self.calibration_sha256 or unpinned_digest(self.calibration)
        return f"{digest};samples={self.calibration_samples}"

    def key_inputs(self) -> EngineKeyInputs:
        return EngineKeyInputs(
            model_digest=self.model_digest(),
            precision=self.precision,
            contract=self.contract(),
            batch=self.batch,
            backend=self.backend,
            runtime=self.resolved_runtime(),
            gpu_product=self.gpu_product,
            compute_capability=self.compute_capability,
            calibration_digest=self.calibration_digest(),
            builder_version=builder_version(),
        )

    def key(self) -> str:
        return engine_key(self.key_inputs())

    def to_args(self) -> list[str]:
        """``lipsync`` arguments for this request (``build ...``), with the runtime resolved."""
        args = [
            "build",
            "--model", self.model,
            "--io", self.io,
            "--precision", self.precision,
            "--backend", self.backend,
            "--runtime", self.resolved_runtime(),
            "--gpu-product", self.gpu_product,
            "--batch-min", str(self.batch.min),
            "--batch-opt", str(self.batch.opt),
            "--batch-max", str(self.batch.max),
            "--calibration-samples", str(self.calibration_samples),
            "--cache", self.cache,
            "--verify-samples", str(self.verify_samples),
            "--measure-frames", str(self.measure_frames),
            "--workspace-mib", str(self.workspace_mib),
            "--optimization-level", str(self.optimization_level),
        ]  # fmt: skip
        if self.audio_encoder:
            args += [
                "--audio-encoder", self.audio_encoder,
                "--audio-encoder-io", self.audio_encoder_io,
                "--audio-encoder-batch-max", str(self.audio_encoder_batch_max),
            ]  # fmt: skip
        optional = {
            "--sha256": self.sha256,
            "--audio-encoder-sha256": self.audio_encoder_sha256,
            "--compute-capability": self.compute_capability,
            "--calibration": self.calibration,
            "--calibration-sha256": self.calibration_sha256,
            "--termination-log": self.termination_log,
            "--min-psnr": "" if self.min_psnr is None else repr(self.min_psnr),
        }
        for flag, value in optional.items():
            if value:
                args += [flag, value]
        if self.allow_random_calibration:
            args.append("--allow-random-calibration")
        return args
