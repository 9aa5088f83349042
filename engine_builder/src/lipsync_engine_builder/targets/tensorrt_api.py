"""Types for the part of the TensorRT Python API the builder uses, common to TensorRT 10 and 11.

The published ``tensorrt-stubs`` are generated from the bindings and do not parse (parameters
named ``in``), so the builder types its own narrow view, checked against the Python API pages of
TensorRT 10 and 11 (``Builder``, ``IBuilderConfig``, ``IOptimizationProfile``, ``OnnxParser``).
``BuilderFlag`` exists on both, but its precision members (FP16, INT8, ...) only on 10.
"""

from __future__ import annotations

from typing import Any, Protocol


class HostMemory(Protocol):
    def __buffer__(self, flags: int, /) -> memoryview: ...


class TimingCache(Protocol):
    def serialize(self) -> HostMemory: ...


class OptimizationProfile(Protocol):
    def set_shape(
        self, input: str, min: tuple[int, ...], opt: tuple[int, ...], max: tuple[int, ...]
    ) -> None: ...


class BuilderConfig(Protocol):
    builder_optimization_level: int

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None: ...
    def set_flag(self, flag: Any) -> None: ...
    def add_optimization_profile(self, profile: OptimizationProfile) -> int: ...
    def create_timing_cache(self, serialized_timing_cache: bytes) -> TimingCache: ...
    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool: ...
    def get_timing_cache(self) -> TimingCache: ...


class NetworkDefinition(Protocol): ...


class Builder(Protocol):
    def create_network(self, flags: int = 0) -> NetworkDefinition: ...
    def create_builder_config(self) -> BuilderConfig: ...
    def create_optimization_profile(self) -> OptimizationProfile: ...
    def build_serialized_network(
        self, network: NetworkDefinition, config: BuilderConfig
    ) -> HostMemory | None: ...


class OnnxParser(Protocol):
    num_errors: int

    def parse_from_file(self, model: str) -> bool: ...
    def get_error(self, index: int) -> object: ...


class TensorRTModule(Protocol):
    """The ``tensorrt`` module, as far as the builder uses it."""

    __version__: str
    Logger: Any
    BuilderFlag: Any
    MemoryPoolType: Any

    def Builder(self, logger: Any) -> Builder: ...  # noqa: N802 (TensorRT's class name)
    def OnnxParser(self, network: NetworkDefinition, logger: Any) -> OnnxParser: ...  # noqa: N802
