"""The gateway's page in headless Chromium, as a person uses it: the microphone (a spoken WAV)
goes out, and the avatar's video plays in the page's <video> at the avatar's size, decoded by
the browser from the server's H.264, with the speech's audio beside it; Stop ends the session."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import soundfile
import soxr

from lipsync_gateway.app import SESSIONS, running_gateway
from lipsync_server.process import ServerProcess
from lipsync_server.speech.tts import speak
from lipsync_testbed.browser import headless_chromium

pytestmark = pytest.mark.component

PLAYBACK = """(() => {
  const video = document.getElementById("avatar");
  return {width: video.videoWidth, height: video.videoHeight,
          frames: video.getVideoPlaybackQuality().totalVideoFrames,
          state: document.getElementById("state").textContent};
})()"""
INBOUND = """peer.getStats().then((report) => {
  const seen = {codecs: []};
  report.forEach((s) => {
    if (s.type === "codec") seen.codecs.push(s.mimeType);
    if (s.type !== "inbound-rtp") return;
    seen[s.kind] = s.kind === "video" ? s.framesDecoded : s.packetsReceived;
  });
  return seen;
})"""


def test_the_page_plays_the_avatar_speaking_what_the_microphone_hears(
    speech_server: ServerProcess, tmp_path: Path
) -> None:
    samples, rate = speak("Hello! This is my microphone, and the avatar says it with me.")
    microphone = tmp_path / "microphone.wav"
    soundfile.write(str(microphone), soxr.resample(samples, rate, 48_000), 48_000, "PCM_16")

    async def scenario() -> None:
        async with (
            running_gateway(speech_server.target) as (base, app),
            headless_chromium(microphone) as page,
        ):
            await page.open(f"{base}/")
            await page.evaluate("document.getElementById('start').click()")
            playing = await page.wait_for(
                f"(() => {{ const p = {PLAYBACK}; return p.frames >= 25 && p; }})()", 120
            )
            assert (playing["width"], playing["height"]) == (320, 240)
            assert playing["state"] == "connected"
            inbound = await page.evaluate(INBOUND)
            assert inbound["video"] >= 25
            assert inbound["audio"] > 0
            assert "video/H264" in inbound["codecs"]
            assert len(app[SESSIONS]) == 1
            await page.evaluate("document.getElementById('stop').click()")
            for _ in range(40):
                if not app[SESSIONS]:
                    break
                await asyncio.sleep(0.25)
            assert app[SESSIONS] == {}

    asyncio.run(scenario())
