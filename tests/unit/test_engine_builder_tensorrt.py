"""The TensorRT and TensorRT-RTX targets without a GPU: profiles, version typing, cache names, and
the builder's calls into TensorRT 10 and 11.

TensorRT cannot be installed on a machine without an NVIDIA driver, so ``build_engine`` runs here
against a minimal stand-in of the ``tensorrt`` module that records the calls made on it. Its
surface follows ``targets.tensorrt_api`` (the Protocols the builder is typed with); TensorRT 11's
stand-in has a ``BuilderFlag`` without FP16/INT8, as TensorRT 11 has.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lipsync_contract.enginekey import BatchProfile
from lipsync_contract.modelio import preset
from lipsync_engine_builder.errors import BuildFailedError
from lipsync_engine_builder.targets import BuildContext
from lipsync_engine_builder.targets.profiles import (
    optimization_profiles,
    profile_sets,
    profile_shapes,
    shapes_option,
    tensorrt_major,
    tensorrt_typing,
    timing_cache_name,
)
from lipsync_engine_builder.targets.tensorrt import (
    TensorRTSettings,
    build_engine,
    unavailable_reason,
)
from lipsync_engine_builder.targets.tensorrt_api import (
    Builder,
    BuilderConfig,
    NetworkDefinition,
    OnnxParser,
    OptimizationProfile,
    TimingCache,
)

pytestmark = pytest.mark.unit

CONTRACT = preset("unet328-ave")


def test_profile_covers_every_input_over_the_batch_range() -> None:
    shapes = profile_shapes(CONTRACT, BatchProfile(min=1, opt=4, max=16))
    assert shapes == {
        "input": ((1, 6, 320, 320), (4, 6, 320, 320), (16, 6, 320, 320)),
        "audio": ((1, 32, 16, 16), (4, 32, 16, 16), (16, 32, 16, 16)),
    }


def test_a_latency_profile_and_a_throughput_profile_up_to_max_batch() -> None:
    assert optimization_profiles(BatchProfile(min=1, opt=8, max=32)) == [
        BatchProfile(min=1, opt=1, max=1),
        BatchProfile(min=1, opt=8, max=32),
    ]
    # opt 1 would tune the throughput profile for one frame: it is tuned at max instead.
    assert optimization_profiles(BatchProfile(min=1, opt=1, max=16))[1].opt == 16
    assert optimization_profiles(BatchProfile(min=1, opt=1, max=1)) == [
        BatchProfile(min=1, opt=1, max=1)
    ]
    sets = profile_sets(CONTRACT, BatchProfile(min=1, opt=8, max=32))
    assert [s["input"] for s in sets] == [
        ((1, 6, 320, 320),) * 3,
        ((1, 6, 320, 320), (8, 6, 320, 320), (32, 6, 320, 320)),
    ]


def test_shapes_option_uses_the_execution_provider_syntax() -> None:
    assert shapes_option(preset("unet328-export"), 2) == "image:2x6x320x320,audio:2x512x1x8"


@pytest.mark.parametrize(
    ("version", "major"), [("10.13.0.35", 10), ("tensorrt 11.4.0", 11), ("11", 11)]
)
def test_tensorrt_major(version: str, major: int) -> None:
    assert tensorrt_major(version) == major


@pytest.mark.parametrize("version", ["8.6.1", "tensorrt 9.3.0", "tensorrt not-installed"])
def test_old_or_unreadable_tensorrt_versions_are_refused(version: str) -> None:
    with pytest.raises(BuildFailedError, match=r"too old|cannot read"):
        tensorrt_major(version)


@pytest.mark.parametrize(
    ("precision", "flags", "onnx"),
    [("fp32", (), "fp32"), ("fp16", ("FP16",), "fp32"), ("int8", ("INT8", "FP16"), "int8")],
)
def test_tensorrt_10_is_weakly_typed_flags_over_an_fp32_onnx(
    precision: str, flags: tuple[str, ...], onnx: str
) -> None:
    typing = tensorrt_typing(10, precision)  # type: ignore[arg-type]
    assert (typing.builder_flags, typing.onnx_precision, typing.strongly_typed) == (
        flags,
        onnx,
        False,
    )


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_11_is_strongly_typed_precision_from_the_onnx(precision: str) -> None:
    typing = tensorrt_typing(11, precision)  # type: ignore[arg-type]
    assert (typing.builder_flags, typing.onnx_precision, typing.strongly_typed) == (
        (),
        precision,
        True,
    )


def test_timing_cache_is_per_gpu_product_and_version_and_a_safe_file_name() -> None:
    h100 = timing_cache_name("NVIDIA H100 80GB HBM3", "tensorrt 10.13.0")
    assert h100 == "NVIDIA_H100_80GB_HBM3__tensorrt_10.13.0.timing-cache"
    assert h100 != timing_cache_name("NVIDIA-L4", "tensorrt 10.13.0")
    assert h100 != timing_cache_name("NVIDIA H100 80GB HBM3", "tensorrt 11.4.0")
    assert "/" not in timing_cache_name("a/b", "c")


def test_tensorrt_absence_has_a_reason() -> None:
    reason = unavailable_reason()
    try:
        tensorrt = importlib.import_module("tensorrt")
    except ImportError:
        assert "not installed" in reason
        return
    assert (reason == "") == hasattr(tensorrt, "Builder")


# --- the builder's calls into TensorRT, against a recording stand-in -------------------------


@dataclass
class Calls:
    network_flags: list[int] = field(default_factory=list)
    builder_flags: list[str] = field(default_factory=list)
    profiles: list[dict[str, tuple[tuple[int, ...], ...]]] = field(default_factory=list)
    parsed: list[str] = field(default_factory=list)


class _Flag:
    def __init__(self, name: str) -> None:
        self.name = name


class _HostMemory(bytes):
    pass


class _TimingCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> _HostMemory:
        return _HostMemory(b"timing:" + self.blob)


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(
        self, input: str, min: tuple[int, ...], opt: tuple[int, ...], max: tuple[int, ...]
    ) -> None:
        self.shapes[input] = (min, opt, max)


class _Config:
    def __init__(self, calls: Calls) -> None:
        self.builder_optimization_level = 3
        self._calls = calls
        self._cache = _TimingCache(b"")

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        assert pool == "WORKSPACE"

    def set_flag(self, flag: Any) -> None:
        self._calls.builder_flags.append(flag.name)

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        assert isinstance(profile, _Profile)
        self._calls.profiles.append(profile.shapes)
        return len(self._calls.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> TimingCache:
        return _TimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        assert isinstance(cache, _TimingCache)
        self._cache = cache
        return True

    def get_timing_cache(self) -> TimingCache:
        return self._cache


class _Network:
    pass


class _Builder:
    def __init__(self, calls: Calls) -> None:
        self._calls = calls

    def create_network(self, flags: int = 0) -> NetworkDefinition:
        self._calls.network_flags.append(flags)
        return _Network()

    def create_builder_config(self) -> BuilderConfig:
        return _Config(self._calls)

    def create_optimization_profile(self) -> OptimizationProfile:
        return _Profile()

    def build_serialized_network(
        self, network: NetworkDefinition, config: BuilderConfig
    ) -> _HostMemory | None:
        return _HostMemory(b"plan")


class _Parser:
    num_errors = 0

    def __init__(self, calls: Calls) -> None:
        self._calls = calls

    def parse_from_file(self, model: str) -> bool:
        self._calls.parsed.append(model)
        return True

    def get_error(self, index: int) -> object:
        return ""


class _Namespace:
    def __init__(self, *names: str) -> None:
        for name in names:
            setattr(self, name, _Flag(name))


class _Logger:
    WARNING = "WARNING"

    def __init__(self, min_severity: object) -> None:
        self.min_severity = min_severity


class FakeTensorRT:
    """``tensorrt`` as far as the builder uses it; BuilderFlag has FP16/INT8 on 10 only."""

    Logger = _Logger

    def __init__(self, version: str, calls: Calls) -> None:
        self.__version__ = version
        self._calls = calls
        flags = ("FP16", "INT8", "TF32") if version.startswith("10.") else ("TF32",)
        self.BuilderFlag = _Namespace(*flags)
        self.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "WORKSPACE"})

    def Builder(self, logger: Any) -> Builder:  # noqa: N802 (TensorRT's class name)
        return _Builder(self._calls)

    def OnnxParser(self, network: NetworkDefinition, logger: Any) -> OnnxParser:  # noqa: N802
        return _Parser(self._calls)


def _build(
    version: str, precision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Calls, dict[str, str | int]]:
    calls = Calls()
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(version, calls))
    model = tmp_path / "prepared.onnx"
    model.write_bytes(b"onnx")
    context = BuildContext(
        model=model, workdir=tmp_path, contract=CONTRACT,
        batch=BatchProfile(min=1, opt=8, max=32), precision=precision,  # type: ignore[arg-type]
        timing_cache=b"old",
    )  # fmt: skip
    built = build_engine(context, TensorRTSettings(workspace_bytes=1 << 30))
    assert built.path.read_bytes() == b"plan"
    assert built.timing_cache == b"timing:old"
    assert calls.parsed == [str(model)]
    return calls, built.session_options


@pytest.mark.parametrize(
    ("precision", "flags"), [("fp32", []), ("fp16", ["FP16"]), ("int8", ["INT8", "FP16"])]
)
def test_tensorrt_10_build_sets_precision_flags_on_a_weakly_typed_network(
    precision: str, flags: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, options = _build("10.13.0.35", precision, tmp_path, monkeypatch)
    assert calls.network_flags == [0]
    assert calls.builder_flags == flags
    assert options["typing"] == "weak"


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_11_build_sets_no_precision_flag(
    precision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, options = _build("11.4.0.106", precision, tmp_path, monkeypatch)
    assert calls.network_flags == [0]  # strongly typed always; STRONGLY_TYPED is ignored on 11
    assert calls.builder_flags == []
    assert (options["typing"], options["flags"]) == ("strong", "none")


def test_build_adds_the_latency_and_the_throughput_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, options = _build("11.4.0.106", "fp16", tmp_path, monkeypatch)
    assert [p["audio"] for p in calls.profiles] == [
        ((1, 32, 16, 16),) * 3,
        ((1, 32, 16, 16), (8, 32, 16, 16), (32, 32, 16, 16)),
    ]
    assert (options["profiles"], options["max_batch"]) == (2, 32)


def test_tensorrt_9_is_refused_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BuildFailedError, match=r"TensorRT 9\.3\.0 is too old"):
        _build("9.3.0", "fp16", tmp_path, monkeypatch)
