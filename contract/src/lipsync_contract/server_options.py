"""The settings of ``lipsync serve`` as a typed contract, and the command line that carries them.

The server reads these from flags, the environment and a config file (``lipsync_server.config``);
the operator writes a server pod's arguments with ``ServerOptions(...).to_args()``, so the two
cannot drift: a test parses the generated arguments back through the server's own command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lipsync_contract.kinds import BackendKind, Device, PostprocessChoice


class ServerOptions(BaseModel):
    """Every setting of ``lipsync serve``, validated; ``to_args()`` is its command line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path = Field(
        description="Model artifact: ONNX file, TensorRT engine or PyTorch .pt2 (program or "
        "AOTInductor package)."
    )
    model_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Hex sha256 the model artifact must have; another refuses to load (unset: "
        "not checked).",
    )
    avatar: Path = Field(description="Avatar package directory (see AVATAR_FORMAT.md).")
    model_name: str = Field("lipsync", min_length=1, description="Name clients address.")
    io_preset: str = Field("unet328-ave", description="Model I/O contract preset.")
    backend: BackendKind = Field("auto", description="Backend kind; auto picks the fastest.")
    intra_op_threads: int = Field(0, ge=0, description="ORT CPU threads per instance (0: auto).")
    device: Device = Field("auto", description="PyTorch backends: cpu, cuda or auto.")
    torch_compile: bool = Field(False, description="torch backend: run through torch.compile.")
    cuda_graphs: bool = Field(
        False, description="Capture one CUDA graph per batch size (torch eager, ORT CUDA)."
    )
    host: str = Field("0.0.0.0", description="Address the gRPC and metrics ports bind to.")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port (0: any free port).")
    metrics_port: int = Field(8002, ge=0, le=65535, description="Prometheus port (0: off).")
    max_batch_size: int = Field(8, ge=1, description="Largest batch the batcher forms.")
    max_queue_delay_microseconds: int = Field(
        4000, ge=0, description="How long the oldest queued frame may wait for a fuller batch."
    )
    preferred_batch_size: tuple[int, ...] = Field(
        (), description="Batch sizes to dispatch as soon as they can be formed."
    )
    max_queue_size: int = Field(
        64, ge=1, description="Queued frames beyond which requests get RESOURCE_EXHAUSTED."
    )
    queue_timeout_microseconds: int = Field(
        0, ge=0, description="Longest a frame may wait in the queue (0: no limit)."
    )
    instances: int = Field(1, ge=1, description="Parallel model instances (executors).")
    postprocess_threads: int = Field(2, ge=1, description="Threads compositing and encoding.")
    postprocess: PostprocessChoice = Field(
        "auto",
        description="Where frames are composited and JPEG-encoded: numpy (host), torch (on the "
        "model's device); auto: torch on a CUDA backend when torch is installed, else numpy.",
    )
    max_inflight_per_stream: int = Field(
        0, ge=0, description="Frames one stream may have in flight (0: twice max_batch_size)."
    )
    jpeg_quality: int = Field(85, ge=1, le=100, description="Default JPEG quality.")
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest gRPC message accepted or sent."
    )
    max_frames_per_request: int = Field(256, ge=1, description="Frames one Generate may ask.")
    # Connections and calls (gRPC's own limits): a client cannot hold more than these.
    max_concurrent_rpcs: int = Field(
        1000,
        ge=1,
        description="Calls in progress at once, streams included; more: RESOURCE_EXHAUSTED.",
    )
    max_concurrent_streams: int = Field(
        100, ge=1, description="Calls one connection may have open at once (HTTP/2 streams)."
    )
    min_client_ping_seconds: float = Field(
        10.0, gt=0, description="Closest keepalive pings a client may send; closer: GOAWAY."
    )
    max_connection_idle_seconds: float = Field(
        300.0, ge=0, description="A connection with no call this long is closed (0: never)."
    )
    max_connection_age_seconds: float = Field(
        0.0,
        ge=0,
        description="A connection this old takes no new calls and the client reconnects, so "
        "load spreads to new pods after a scale-out (0: never); calls in progress finish.",
    )
    max_calls_per_client: int = Field(
        256,
        ge=0,
        description="Inference calls (streams included) one client may have in progress; more: "
        "RESOURCE_EXHAUSTED (0: no limit). A client is its mTLS certificate's subject, else its "
        "address.",
    )
    stream_idle_seconds: float = Field(
        60.0,
        ge=0,
        description="A stream that sends no message and gets no frame this long ends with "
        "DEADLINE_EXCEEDED (0: never).",
    )
    # Who may call: plaintext and open unless these are set (see server/CONFIG.md, "Security").
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain: the gRPC port speaks TLS (files re-read on change).",
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CAs a client certificate must chain to (mutual TLS): a client "
        "without one is refused.",
    )
    auth_token_file: Path | None = Field(
        None,
        description="File holding a token every call but health checks must carry as "
        "'authorization: Bearer <token>' (re-read on change).",
    )
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Plaintext port serving only grpc.health.v1, for kubelet probes when the "
        "gRPC port needs TLS or a token (unset: none).",
    )
    reflection: bool = Field(False, description="Serve gRPC server reflection.")
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="How long in-flight streams may finish after SIGTERM."
    )
    warmup: bool = Field(True, description="Run one batch per instance before serving.")
    audio_encoder: Path | None = Field(
        None, description="Audio encoder artifact (ONNX or engine); enables pcm (speech) input."
    )
    audio_encoder_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Hex sha256 the audio encoder artifact must have (unset: not checked).",
    )
    encoder_io_preset: str = Field("ave", description="Audio encoder I/O contract preset.")
    encoder_backend: BackendKind = Field("auto", description="Backend kind of the audio encoder.")
    encoder_max_batch_size: int = Field(
        32, ge=1, description="Largest batch of mel windows the encoder batcher forms."
    )
    max_pcm_chunk_bytes: int = Field(
        1024 * 1024, ge=2, description="Largest pcm payload of one message."
    )
    silence_fast_path: bool = Field(
        True, description="Serve silent frames from a cached closed-mouth render."
    )
    silence_threshold_dbfs: float = Field(
        -50.0, le=0.0, description="RMS level (dBFS) under which a mel frame counts as silent."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("preferred_batch_size", mode="before")
    @classmethod
    def _split_sizes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(int(part) for part in value.strip("[]()").replace(",", " ").split())
        return value

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        bad = [size for size in self.preferred_batch_size if not 1 <= size <= self.max_batch_size]
        if bad:
            raise ValueError(
                f"preferred_batch_size {bad[0]} is outside 1..max_batch_size "
                f"({self.max_batch_size})"
            )
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self

    @property
    def inflight_per_stream(self) -> int:
        # Twice a batch lets one stream keep a batch running while the next one fills.
        return self.max_inflight_per_stream or 2 * self.max_batch_size

    def to_args(self) -> list[str]:
        """The explicitly set fields as ``lipsync serve`` flags, in declaration order."""
        args: list[str] = []
        for name in type(self).model_fields:
            if name not in self.model_fields_set:
                continue
            value = getattr(self, name)
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else f"--no-{flag[2:]}")
            elif isinstance(value, tuple):
                args += [flag, ",".join(str(item) for item in value)]
            else:
                args += [flag, str(value)]
        return args
