"""Where the load generator may send load: this machine and the benchmark range only."""

from __future__ import annotations

import pytest
from lipsync_bench.runner import BenchError, require_benchmark_address

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "198.18.1.7", "198.19.0.10"])
def test_loopback_and_the_benchmark_range_are_targets(host: str) -> None:
    require_benchmark_address(host)


@pytest.mark.parametrize("host", ["192.0.2.1", "10.96.0.10", "198.20.0.1", "8.8.8.8"])
def test_other_addresses_are_refused(host: str) -> None:
    with pytest.raises(BenchError, match="neither loopback nor in the benchmark range"):
        require_benchmark_address(host)
