"""``LipSyncModel.spec``: what to serve, how to build it, and how many servers to run."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from lipsync_contract.api.base import ApiModel
from lipsync_contract.kinds import Precision
from lipsync_contract.modelio import PRESETS, ModelContract

Sharing = Literal["exclusive", "timeSlicing", "mps"]
# A node label value: at most 63 characters of [A-Za-z0-9_.-].
GpuProduct = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"
    ),
]

# No user info, query or fragment: credentials there would be copied into Job arguments,
# annotations and status (spec.credentialsSecret carries them instead).
URI_PATTERN = r"^(file|pvc|https?)://[^/@?#]*(/[^?#]*)?$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
DEFAULT_PRESET = "unet328-ave"
# On an optional object field: the API server fills it in (and its fields' defaults) when absent.
_EMPTY_OBJECT_DEFAULT: JsonDict = {"default": {}}


class ModelSource(ApiModel):
    """The ONNX model file."""

    uri: str = Field(
        max_length=2048,
        pattern=URI_PATTERN,
        description="Where the ONNX file is: pvc://<claim>/<path>, https://, file://.",
    )
    sha256: str | None = Field(
        None,
        pattern=SHA256_PATTERN,
        description="Hex sha256 of the file. Pins the engine key; without it the URI stands in.",
    )


class AudioEncoderSource(ApiModel):
    """The audio encoder in front of the UNet: with it, servers take speech (PCM) as input."""

    uri: str = Field(
        max_length=2048,
        pattern=URI_PATTERN,
        description="Where the encoder's ONNX file is (the same schemes as spec.model.uri).",
    )
    sha256: str | None = Field(
        None, pattern=SHA256_PATTERN, description="Hex sha256 of the file; pins its engine key."
    )
    io: str = Field(
        "ave", min_length=1, max_length=63, description="The encoder's I/O contract preset."
    )


class AvatarSource(ApiModel):
    """The avatar assets the server composites onto: frames, face boxes, masks."""

    uri: str = Field(max_length=2048, pattern=URI_PATTERN, description="Folder of avatar assets.")


class IoSpec(ApiModel):
    """The model's input/output contract."""

    preset: str = Field(
        DEFAULT_PRESET,
        json_schema_extra={"enum": list[JsonValue](sorted(PRESETS))},
        description="Name of a known contract (tensor names, shapes, value ranges).",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return name

    def model_contract(self) -> ModelContract:
        """The core contract this spec names."""
        return PRESETS[self.preset]


class Calibration(ApiModel):
    """Representative inputs for INT8 calibration."""

    uri: str = Field(max_length=2048, pattern=URI_PATTERN, description="Calibration data set.")
    sha256: str | None = Field(None, pattern=SHA256_PATTERN, description="Hex sha256 of the set.")
    samples: int = Field(512, ge=1, le=100_000, description="Samples used for calibration.")


class Accuracy(ApiModel):
    """The gate every built engine must pass against the FP32 reference."""

    min_psnr_db: float | None = Field(
        None,
        ge=0,
        le=200,
        description=(
            "Minimum PSNR (dB) of engine output vs the FP32 reference; "
            "unset: the builder's default for the precision (60 fp32, 40 fp16, 30 int8)."
        ),
    )


class Gpus(ApiModel):
    """Which GPU products to serve on."""

    products: list[GpuProduct] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="nvidia.com/gpu.product values; empty means every product present on nodes.",
    )
    max: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description=(
            "Most GPUs the servers take over all products; unset: the operator's per-model "
            "limit. A value above that limit is refused."
        ),
    )


class Batching(ApiModel):
    """Dynamic batching in each model instance (Triton's words)."""

    max_batch: int = Field(8, ge=1, le=64, description="Largest batch; also the engine's max.")
    max_queue_delay_microseconds: int = Field(
        4000, ge=0, le=1_000_000, description="How long a request may wait for a fuller batch."
    )


class Autoscaling(ApiModel):
    """An autoscaler per GPU product (an HPA, or a KEDA ScaledObject); replicas are left to it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # The API server also checks the rule on the schema's default ({}), which
                    # has neither field until nested defaults apply.
                    "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || "
                    "self.minReplicas <= self.maxReplicas",
                    "message": "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
                }
            ]
        }
    )

    enabled: bool = Field(
        False, description="Let an autoscaler scale each product's Deployment on served load."
    )
    min_replicas: int = Field(
        1,
        ge=0,
        le=10_000,
        description=(
            "Fewest pods per GPU product; 0 lets an idle product scale to zero "
            "(with the chart's KEDA scaler; an HPA keeps at least 1)."
        ),
    )
    max_replicas: int = Field(48, ge=1, le=10_000, description="Most pods per GPU product.")
    target_fps: float | None = Field(
        None,
        gt=0,
        le=100_000,
        description=(
            "Served frames per second per pod to aim for; unset: 80% of the frames/s the "
            "builder measured for the product's engine, shared by the pods of one GPU."
        ),
    )
    product_target_fps: dict[str, Annotated[float, Field(gt=0, le=100_000)]] = Field(
        default_factory=dict,
        max_length=32,
        description="Per-product targetFps (by nvidia.com/gpu.product), over targetFps.",
    )
    cpu_utilization: int = Field(
        80,
        ge=1,
        le=100,
        description="CPU utilization target of the HPA (the metric every cluster serves).",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.minReplicas ({self.min_replicas}) must be <= "
                f"autoscaling.maxReplicas ({self.max_replicas})"
            )
        return self


class Images(ApiModel):
    """Image overrides; by default the operator's configured runtime image serves and builds.

    Refused unless the operator allows overrides; a builder image the operator does not trust
    writes its engines to a cache directory of this model's own.
    """

    server: str | None = Field(None, max_length=512, description="Server image.")
    builder: str | None = Field(
        None, max_length=512, description="Builder image (must share the server's TensorRT)."
    )


# A Secret's name (a DNS subdomain).
SecretName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
]


class Tls(ApiModel):
    """TLS on the servers' gRPC port, from a Secret in the model's namespace."""

    secret_name: SecretName = Field(
        alias="secretName",
        description="A kubernetes.io/tls Secret (tls.crt, tls.key; ca.crt for clientAuth), "
        "such as the one cert-manager writes for a Certificate. Rotations reach running pods.",
    )
    client_auth: bool = Field(
        False,
        alias="clientAuth",
        description="Mutual TLS: clients must present a certificate signed by the Secret's ca.crt.",
    )


class Access(ApiModel):
    """Who may call the servers; unset: plaintext, open to what the NetworkPolicy admits."""

    tls: Tls | None = None
    token_secret: SecretName | None = Field(
        None,
        alias="tokenSecret",
        description="A Secret whose key 'token' every call but health checks must carry as "
        "'authorization: Bearer <token>'.",
    )


class LipSyncModelSpec(ApiModel):
    """A lip-sync model to build for every GPU product and serve with N replicas per GPU."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.precision != 'int8' || has(self.calibration)",
                    "message": "precision int8 needs spec.calibration",
                }
            ]
        }
    )

    model: ModelSource
    audio_encoder: AudioEncoderSource | None = Field(
        None,
        alias="audioEncoder",
        description="Audio encoder built and served beside the UNet (speech in); none: features.",
    )
    avatar: AvatarSource
    io: IoSpec = Field(
        default_factory=IoSpec,
        json_schema_extra=_EMPTY_OBJECT_DEFAULT,
        description="Input/output contract of the model.",
    )
    precision: Precision = Field("fp16", description="Engine precision; int8 needs calibration.")
    calibration: Calibration | None = Field(None, description="INT8 calibration data.")
    accuracy: Accuracy = Field(default_factory=Accuracy, json_schema_extra=_EMPTY_OBJECT_DEFAULT)
    gpus: Gpus = Field(default_factory=Gpus, json_schema_extra=_EMPTY_OBJECT_DEFAULT)
    replicas_per_gpu: int = Field(
        6,
        ge=1,
        le=32,
        alias="replicasPerGPU",
        description=(
            "Model instances per GPU: N instances in one pod per GPU (exclusive), "
            "or N pods per GPU (timeSlicing, mps)."
        ),
    )
    sharing: Sharing = Field(
        "exclusive",
        description=(
            "exclusive: one pod per GPU; timeSlicing / mps: N pods per GPU on nodes the "
            "GPU operator configured for that strategy."
        ),
    )
    batching: Batching = Field(default_factory=Batching, json_schema_extra=_EMPTY_OBJECT_DEFAULT)
    autoscaling: Autoscaling = Field(
        default_factory=Autoscaling, json_schema_extra=_EMPTY_OBJECT_DEFAULT
    )
    images: Images = Field(default_factory=Images, json_schema_extra=_EMPTY_OBJECT_DEFAULT)
    access: Access = Field(default_factory=Access, json_schema_extra=_EMPTY_OBJECT_DEFAULT)
    credentials_secret: SecretName | None = Field(
        None,
        alias="credentialsSecret",
        description="A Secret whose key 'token' the build Job sends as 'Authorization: Bearer' "
        "to https:// sources (model, audio encoder, calibration), and whose optional key "
        "'ca.crt' (PEM) it trusts for them besides the system's CAs; only build Jobs read it.",
    )

    @model_validator(mode="after")
    def _int8_needs_calibration(self) -> LipSyncModelSpec:
        if self.precision == "int8" and self.calibration is None:
            raise ValueError("precision int8 needs spec.calibration")
        return self
