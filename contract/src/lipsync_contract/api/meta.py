"""Names of the LipSyncModel API: group, version, kind."""

GROUP = "lipsync.dev"
VERSION = "v1alpha1"
KIND = "LipSyncModel"
PLURAL = "lipsyncmodels"
SINGULAR = "lipsyncmodel"
SHORT_NAME = "lsm"


def api_version() -> str:
    return f"{GROUP}/{VERSION}"
