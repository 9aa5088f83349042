"""LipSync avatar for Pipecat: ``LipSyncAvatar``, a frame processor after TTS."""

from lipsync_pipecat.avatar import LipSyncAvatar

__all__ = ["LipSyncAvatar"]
