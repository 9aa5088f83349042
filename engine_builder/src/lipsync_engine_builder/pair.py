"""The UNet and its audio encoder built as two models, one after the other, each with its key.

The UNet's result is the top-level result (its key does not depend on the encoder, so builds
with and without one share the UNet's engine); the encoder's is nested under ``audioEncoder``.
The run fails, with the worse exit code, when either build fails.
"""

from __future__ import annotations

from lipsync_contract.request import BuildRequest
from lipsync_contract.result import BuildResult
from lipsync_engine_builder.errors import EXIT_BAD_INPUT
from lipsync_engine_builder.pipeline import execute
from lipsync_engine_builder.progress import Progress


def combine(unet: BuildResult, encoder: BuildResult | None) -> BuildResult:
    """One result for both builds (pure)."""
    if encoder is None:
        return unet
    failed = [
        (name, result)
        for name, result in (("model", unet), ("audio encoder", encoder))
        if result.state == "Failed"
    ]
    update: dict[str, object] = {"audio_encoder": encoder}
    if failed:
        update |= {
            "state": "Failed",
            "exit_code": max(result.exit_code for _, result in failed),
            "reason": "; ".join(f"{name}: {result.reason}" for name, result in failed),
        }
    return unet.model_copy(update=update)


def execute_pair(request: BuildRequest, progress: Progress) -> BuildResult:
    """Build (or find) the model's engine, then the audio encoder's when one is requested."""
    try:
        encoder_request = request.encoder_request()
    except ValueError as exc:
        return BuildResult(state="Failed", reason=str(exc), exit_code=EXIT_BAD_INPUT)
    unet = execute(request, progress)
    if encoder_request is None:
        return unet
    progress.info("audio encoder", model=encoder_request.model, io=encoder_request.io)
    return combine(unet, execute(encoder_request, progress))
