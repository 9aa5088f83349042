"""Pinned versions (hack/cluster/versions.env) and the location of the built binaries."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

VERSIONS_RELATIVE_PATH = Path("hack/cluster/versions.env")
BINARY_NAMES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)


class ClusterSetupError(RuntimeError):
    """The test bed cannot start: missing binaries, bad configuration, failed component."""


def repo_root() -> Path:
    """The repository root: $LIPSYNC_REPO_ROOT, else the first parent holding versions.env."""
    env = os.environ.get("LIPSYNC_REPO_ROOT")
    if env:
        return Path(env)
    candidates = [Path.cwd(), *Path.cwd().parents, *Path(__file__).resolve().parents]
    for candidate in candidates:
        if (candidate / VERSIONS_RELATIVE_PATH).is_file():
            return candidate
    raise ClusterSetupError(
        f"cannot find {VERSIONS_RELATIVE_PATH} above {Path.cwd()}; set LIPSYNC_REPO_ROOT"
    )


def parse_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (comments and blank lines ignored, optional quotes)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ClusterSetupError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        values[key.strip()] = value.strip().strip("\"'")
    return values


@dataclass(frozen=True)
class Versions:
    kubernetes: str
    etcd: str
    kwok: str
    helm: str
    pause_image: str  # the real nodes' sandbox image (built from the release's pause.c)
    coredns_image: str

    @classmethod
    def load(cls, path: Path | None = None) -> Versions:
        env_path = path or repo_root() / VERSIONS_RELATIVE_PATH
        values = parse_env_file(env_path)
        try:
            return cls(
                kubernetes=values["KUBERNETES_VERSION"],
                etcd=values["ETCD_VERSION"],
                kwok=values["KWOK_VERSION"],
                helm=values["HELM_VERSION"],
                pause_image=values["PAUSE_IMAGE"],
                coredns_image=values["COREDNS_IMAGE"],
            )
        except KeyError as exc:
            raise ClusterSetupError(f"{env_path}: missing {exc.args[0]}") from exc


def cache_root() -> Path:
    return Path(os.environ.get("LIPSYNC_CACHE") or Path.home() / ".cache" / "lipsync")


def default_bin_dir(versions: Versions | None = None) -> Path:
    """Where hack/cluster/build.sh puts the binaries ($LIPSYNC_BIN_DIR overrides)."""
    env = os.environ.get("LIPSYNC_BIN_DIR")
    if env:
        return Path(env)
    pinned = versions or Versions.load()
    return cache_root() / f"k8s-{pinned.kubernetes}" / "bin"


@dataclass(frozen=True)
class Binaries:
    """Paths of the test bed binaries."""

    bin_dir: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def etcd(self) -> Path:
        return self.path("etcd")

    @property
    def kube_apiserver(self) -> Path:
        return self.path("kube-apiserver")

    @property
    def kube_controller_manager(self) -> Path:
        return self.path("kube-controller-manager")

    @property
    def kube_scheduler(self) -> Path:
        return self.path("kube-scheduler")

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")

    @property
    def kwok(self) -> Path:
        return self.path("kwok")

    @property
    def helm(self) -> Path:
        return self.path("helm")

    def missing(self, names: tuple[str, ...] = BINARY_NAMES) -> list[str]:
        return [n for n in names if not os.access(self.path(n), os.X_OK)]

    def require(self, names: tuple[str, ...] = BINARY_NAMES) -> Binaries:
        missing = self.missing(names)
        if missing:
            raise ClusterSetupError(
                f"test bed binaries missing in {self.bin_dir}: {', '.join(missing)}; "
                "build them with `make cluster-build` (hack/cluster/build.sh)"
            )
        return self

    @classmethod
    def default(cls) -> Binaries:
        return cls(default_bin_dir())
