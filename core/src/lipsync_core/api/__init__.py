"""The ``LipSyncModel`` resource: spec and status types, and the CRD generated from them."""

from lipsync_core.api.meta import GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION, api_version
from lipsync_core.api.spec import (
    Accuracy,
    Autoscaling,
    AvatarSource,
    Batching,
    Calibration,
    Gpus,
    Images,
    IoSpec,
    LipSyncModelSpec,
    ModelSource,
    Sharing,
)
from lipsync_core.api.status import (
    CONDITION_TYPES,
    Condition,
    ConditionStatus,
    EngineState,
    EngineStatus,
    LipSyncModelStatus,
    Phase,
)

__all__ = [
    "CONDITION_TYPES",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAME",
    "SINGULAR",
    "VERSION",
    "Accuracy",
    "Autoscaling",
    "AvatarSource",
    "Batching",
    "Calibration",
    "Condition",
    "ConditionStatus",
    "EngineState",
    "EngineStatus",
    "Gpus",
    "Images",
    "IoSpec",
    "LipSyncModelSpec",
    "LipSyncModelStatus",
    "ModelSource",
    "Phase",
    "Sharing",
    "api_version",
]
