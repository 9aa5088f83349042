"""Headless Chromium driven over the DevTools protocol, for pages a person would watch.

Its microphone is a WAV file (Chromium's fake capture device, looped) and permission prompts
are granted, so a page's ``getUserMedia`` gets speech. Needs Debian's ``chromium``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from lipsync_testbed.processes import terminate
from lipsync_testbed.waiting import WaitTimeoutError


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or a page's script failed."""


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise BrowserError("no chromium here: apt-get install chromium")
    return found


class Page:
    """One tab, over its DevTools websocket."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def _call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._socket.send_json({"id": call_id, "method": method, "params": params})
        async for message in self._socket:
            reply = json.loads(message.data)
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result
        raise BrowserError(f"{method}: the browser closed the connection")

    async def evaluate(self, expression: str) -> Any:
        """The expression's value (promises awaited); a thrown error raises BrowserError."""
        result = await self._call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def open(self, url: str, timeout: float = 30.0) -> None:
        await self._call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", timeout)

    async def wait_for(self, expression: str, timeout: float) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.25)
        raise WaitTimeoutError(
            f"timed out after {timeout:.0f}s waiting for {expression!r}: {value!r}"
        )


@asynccontextmanager
async def headless_chromium(microphone_wav: Path, timeout: float = 30.0) -> AsyncIterator[Page]:
    """A headless Chromium whose microphone plays ``microphone_wav``; yields its first tab."""
    with tempfile.TemporaryDirectory(prefix="lipsync-chromium-") as profile:
        argv = [
            chromium_binary(),
            "--headless=new",
            "--no-sandbox",  # root in a VM or container; the page is our own
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone_wav}",
            "--autoplay-policy=no-user-gesture-required",
            "about:blank",
        ]
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            port = await _devtools_port(Path(profile), process, timeout)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as listing:
                    targets = await listing.json()
                [tab] = [t for t in targets if t["type"] == "page"]
                async with http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                    yield Page(socket)
        finally:
            terminate(process)


async def _devtools_port(profile: Path, process: subprocess.Popen[str], timeout: float) -> int:
    """The port Chromium wrote to ``DevToolsActivePort`` in its profile once listening."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = process.stderr.read()[-2000:] if process.stderr else ""
            raise BrowserError(f"chromium exited {process.returncode}: {said}")
        if marker.is_file() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        await asyncio.sleep(0.1)
    raise BrowserError(f"chromium did not open its DevTools port within {timeout:.0f}s")
