"""What the benchmark ran on: CPU, memory, GPUs (nvidia-ml-py where a driver is present),
library versions, and CPU/GPU usage sampled during a run."""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil  # type: ignore[import-untyped]

from lipsync_bench.result import GpuInfo, MachineInfo, ResourceUsage, Versions

log = logging.getLogger(__name__)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvml() -> Any | None:
    """The initialised ``pynvml`` module, or ``None`` where there is no NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver, no device: all mean "no GPU"
        log.debug("no NVML: %s", exc)
        return None
    return pynvml


def gpu_info() -> list[GpuInfo]:
    nvml = _nvml()
    if nvml is None:
        return []
    driver = str(nvml.nvmlSystemGetDriverVersion())
    gpus = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        gpus.append(
            GpuInfo(
                index=index,
                name=str(nvml.nvmlDeviceGetName(handle)),
                memory_total_mib=memory.total / 2**20,
                driver_version=driver,
            )
        )
    return gpus


def machine_info() -> MachineInfo:
    return MachineInfo(
        cpu_model=cpu_model(),
        cpu_cores_logical=psutil.cpu_count(logical=True) or 1,
        cpu_cores_physical=psutil.cpu_count(logical=False),
        memory_gib=psutil.virtual_memory().total / 2**30,
        platform=platform.platform(),
        load_average_1m=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        gpus=gpu_info(),
    )


def package_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def versions(server_version: str = "", backend_version: str = "") -> Versions:
    return Versions(
        python=sys.version.split()[0],
        onnxruntime=package_version("onnxruntime"),
        lipsync=package_version("lipsync-bench"),
        server=server_version,
        backend=backend_version,
        grpcio=package_version("grpcio"),
    )


class ResourceSampler:
    """CPU time of this process and of given server pids, system CPU, and GPU utilisation and
    memory sampled every ``interval_s`` on a thread, between ``__enter__`` and ``__exit__``."""

    def __init__(self, server_pids: list[int] | None = None, interval_s: float = 0.5) -> None:
        self._server_pids = server_pids or []
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gpu_util: list[float] = []
        self._gpu_memory: list[float] = []
        self._nvml = _nvml()
        self.usage: ResourceUsage | None = None

    def _server_cpu_seconds(self) -> float | None:
        total = 0.0
        for pid in self._server_pids:
            try:
                process = psutil.Process(pid)
                processes = [process, *process.children(recursive=True)]
                total += sum(sum(p.cpu_times()[:2]) for p in processes)
            except psutil.Error:
                return None
        return total if self._server_pids else None

    def _sample_gpu(self) -> None:
        nvml = self._nvml
        if nvml is None:
            return
        while not self._stop.wait(self._interval_s):
            util = memory = 0.0
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                util += float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                memory += nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            self._gpu_util.append(util)
            self._gpu_memory.append(memory)

    def __enter__(self) -> ResourceSampler:
        self._wall = time.monotonic()
        psutil.cpu_percent(interval=None)
        self._client_start = sum(psutil.Process().cpu_times()[:2])
        self._server_start = self._server_cpu_seconds()
        self._thread = threading.Thread(target=self._sample_gpu, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        elapsed = max(time.monotonic() - self._wall, 1e-9)
        client = sum(psutil.Process().cpu_times()[:2]) - self._client_start
        server_end = self._server_cpu_seconds()
        server = (
            (server_end - self._server_start) / elapsed * 100.0
            if server_end is not None and self._server_start is not None
            else None
        )
        self.usage = ResourceUsage(
            cpu_percent_system=psutil.cpu_percent(interval=None),
            cpu_percent_client=client / elapsed * 100.0,
            cpu_percent_server=server,
            gpu_util_percent=sum(self._gpu_util) / len(self._gpu_util) if self._gpu_util else None,
            gpu_memory_used_mib=max(self._gpu_memory) if self._gpu_memory else None,
        )
