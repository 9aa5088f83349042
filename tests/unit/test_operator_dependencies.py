"""The operator image stays light: no ML library is installed with it or imported by it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from lipsync_contract.api import LipSyncModelSpec
from lipsync_operator.config import OperatorConfig
from lipsync_operator.engines import build_request

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "onnx", "onnxruntime", "onnxslim", "sympy", "torch")
# The packages that bring those in: the operator must not need them either.
ML_COMPONENTS = ("lipsync_core", "lipsync_engine_builder", "lipsync_server")

SPEC = {
    "model": {"uri": "https://m.example/models/unet.onnx", "sha256": "a" * 64},
    "avatar": {"uri": "https://m.example/a/"},
}


def runtime_closure(lock: Mapping[str, Any], root: str) -> set[str]:
    """Names of the packages ``root`` installs (no dev groups), following extras, from uv.lock."""
    packages = {package["name"]: package for package in lock["package"]}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    stack: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    while stack:
        name, extras = stack.pop()
        package = packages[name]
        deps = list(package.get("dependencies", []))
        for extra in extras:
            deps += package.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            wanted = (dep["name"], tuple(dep.get("extra", ())))
            if wanted not in seen:
                seen.add(wanted)
                stack.append(wanted)
    return {name for name, _ in seen}


def test_closure_follows_dependencies_and_their_extras() -> None:
    lock = {
        "package": [
            {"name": "app", "dependencies": [{"name": "lib", "extra": ["fast"]}]},
            {
                "name": "lib",
                "dependencies": [{"name": "base"}],
                "optional-dependencies": {"fast": [{"name": "speedup"}], "slow": [{"name": "x"}]},
            },
            {"name": "base"},
            {"name": "speedup"},
            {"name": "x"},
        ]
    }
    assert runtime_closure(lock, "app") == {"lib", "base", "speedup"}


def test_the_operator_installs_no_ml_library() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    installed = runtime_closure(lock, "lipsync-operator")
    assert {"lipsync-contract", "kopf", "kubernetes"} <= installed
    heavy = sorted(installed & {*HEAVY, "lipsync-core", "lipsync-engine-builder"})
    assert heavy == [], f"the operator would install {heavy}"


GUARDED_IMPORT = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    REFUSED = set(sys.argv[1].split(","))

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in REFUSED:
                raise ImportError(f"the operator imported {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    import lipsync_contract, lipsync_operator
    for package in (lipsync_contract, lipsync_operator):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    from lipsync_contract.api import LipSyncModelSpec
    from lipsync_operator.config import OperatorConfig
    from lipsync_operator.engines import build_request
    spec = LipSyncModelSpec.model_validate({spec!r})
    print(build_request(spec, "NVIDIA-H100", "9.0", OperatorConfig()).key())
    """
)


def test_the_operator_imports_no_ml_library_and_computes_the_same_key() -> None:
    """Every operator and contract module imports with numpy, onnx, torch (and the components
    that use them) refused, and the engine key it computes there is the one computed here,
    where the engine builder is installed too."""
    refused = ",".join((*HEAVY, *ML_COMPONENTS))
    script = GUARDED_IMPORT.replace("{spec!r}", repr(SPEC))
    done = subprocess.run(
        [sys.executable, "-c", script, refused],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    expected = build_request(
        LipSyncModelSpec.model_validate(SPEC), "NVIDIA-H100", "9.0", OperatorConfig()
    ).key()
    assert done.stdout.strip() == expected
