"""Pod IP addresses for local pods: one distinct address per pod, reachable only on this host.

Two kinds, both bound to the loopback interface and never routed off the machine:

- `alias` (default when the runner may change addresses: CAP_NET_ADMIN, e.g. root,
  or passwordless `sudo ip`):
  addresses from 198.18.0.0/15, the range reserved for benchmarking (RFC 2544, not
  private and not public), each added as a /32 with host scope to `lo` while its pod
  runs and removed when the pod is gone. The API server accepts these in
  EndpointSlices, so Services list real, reachable endpoints.
- `loopback`: addresses from 127.0.0.0/8 (Linux delivers the whole /8 on `lo`, nothing
  is added). Pods get them as status.podIP, but the API server rejects loopback
  addresses in EndpointSlices ("may not be in the loopback range"), so such pods do
  not appear behind a Service.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

AddressKind = Literal["alias", "loopback"]
ALIAS_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
LOOPBACK_NETWORK = ipaddress.IPv4Network("127.64.0.0/16")


class AddressPool:
    """Hands out distinct addresses of a network and takes them back (no I/O).

    Starts at a random offset so two runners on one host rarely try the same
    address first; `claim` (the kernel, for aliases) has the final word. Addresses
    ending in .0 or .255 are skipped (some tools treat them specially).
    """

    def __init__(self, network: ipaddress.IPv4Network, seed: int | None = None) -> None:
        self._first = int(network.network_address) + 1
        self._size = network.num_addresses - 2
        self._next = random.Random(seed).randrange(self._size)
        self._in_use: set[str] = set()

    def candidates(self) -> Iterable[str]:
        """Free addresses, in allocation order (advances the cursor as they are taken)."""
        for _ in range(self._size):
            value = self._first + self._next
            self._next = (self._next + 1) % self._size
            address = str(ipaddress.IPv4Address(value))
            if value & 0xFF not in (0, 255) and address not in self._in_use:
                yield address

    def take(self, address: str) -> None:
        self._in_use.add(address)

    def release(self, address: str) -> None:
        self._in_use.discard(address)

    @property
    def in_use(self) -> frozenset[str]:
        return frozenset(self._in_use)


ALIAS_LABEL_PREFIX = "lo:k"  # + the runner's pid: lets a later runner remove a dead one's
_ALIAS_LINE = re.compile(r"\sinet (\d+\.\d+\.\d+\.\d+)/32\s.*?\blo:k(\d+)\b")


def stale_aliases(ip_addr_output: str, alive: Callable[[int], bool]) -> list[str]:
    """Pod addresses in `ip -o -4 addr show dev lo` output whose runner process is gone."""
    stale = []
    for match in _ALIAS_LINE.finditer(ip_addr_output):
        address, pid = match.group(1), int(match.group(2))
        if ipaddress.IPv4Address(address) in ALIAS_NETWORK and not alive(pid):
            stale.append(address)
    return stale


class PodAddresses:
    """Allocates a pod address, adding it to `lo` for the `alias` kind.

    Aliases carry the label `lo:k<pid>`; `sweep()` removes those of runners that died
    without cleaning up (killed test runs).
    """

    def __init__(self, kind: AddressKind, seed: int | None = None) -> None:
        self.kind = kind
        network = ALIAS_NETWORK if kind == "alias" else LOOPBACK_NETWORK
        self._pool = AddressPool(network, seed)
        self._lock = threading.Lock()
        self._ip = shutil.which("ip") or "/sbin/ip"
        self._prefix: list[str] = []

    @staticmethod
    def detect() -> AddressKind:
        """`alias` when an address can be added to `lo` here, else `loopback`."""
        probe = PodAddresses("alias")
        try:
            address = probe.allocate()
        except OSError as exc:
            log.info("pod addresses: cannot add addresses to lo (%s); using 127/8", exc)
            return "loopback"
        probe.free(address)
        return "alias"

    def sweep(self) -> list[str]:
        """Remove aliases left behind by runner processes that no longer exist."""
        if self.kind != "alias":
            return []
        shown = self._exec([self._ip, "-o", "-4", "addr", "show", "dev", "lo"])
        stale = stale_aliases(shown.stdout, lambda pid: Path(f"/proc/{pid}").exists())
        for address in stale:
            log.info("pod addresses: removing %s, left by a runner that is gone", address)
            self._run("del", address)
        return stale

    def allocate(self) -> str:
        with self._lock:
            for address in self._pool.candidates():
                if self.kind == "loopback" or self._add_alias(address):
                    self._pool.take(address)
                    return address
        raise OSError("no free pod address")

    def claim(self, address: str) -> bool:
        """Take a given address again (a pod adopted from an earlier runner keeps its IP)."""
        network = ALIAS_NETWORK if self.kind == "alias" else LOOPBACK_NETWORK
        with self._lock:
            if address in self._pool.in_use or ipaddress.IPv4Address(address) not in network:
                return False
            if self.kind == "alias" and not self._add_alias(address):
                return False
            self._pool.take(address)
            return True

    def free(self, address: str) -> None:
        with self._lock:
            if address not in self._pool.in_use:
                return
            self._pool.release(address)
            if self.kind == "alias":
                self._run("del", address)

    def free_all(self) -> None:
        for address in sorted(self._pool.in_use):
            self.free(address)

    def _add_alias(self, address: str) -> bool:
        """True when added; False when another process holds the address already."""
        result = self._run("add", address)
        if result.returncode == 0:
            return True
        if "File exists" in result.stderr:
            return False
        raise OSError(f"ip addr add {address}/32 dev lo: {result.stderr.strip()}")

    def _run(self, verb: str, address: str) -> subprocess.CompletedProcess[str]:
        argv = [self._ip, "addr", verb, f"{address}/32", "dev", "lo"]
        if verb == "add":
            argv += ["scope", "host", "label", f"{ALIAS_LABEL_PREFIX}{os.getpid()}"]
        result = self._exec([*self._prefix, *argv])
        sudo = shutil.which("sudo")
        if (
            result.returncode != 0
            and "Operation not permitted" in result.stderr
            and not self._prefix
            and sudo is not None
        ):
            # Not root: passwordless sudo (as on CI runners) may still change addresses.
            retry = self._exec([sudo, "-n", *argv])
            if retry.returncode == 0 or "File exists" in retry.stderr:
                self._prefix = [sudo, "-n"]
            return retry
        return result

    def _exec(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
        except FileNotFoundError as exc:
            raise OSError(f"{argv[0]} not found") from exc
