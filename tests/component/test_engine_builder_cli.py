"""``lipsync build`` and ``lipsync cache`` as subprocesses, end to end on the reference model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lipsync_contract.digest import sha256_file
from lipsync_contract.modelio import preset
from lipsync_core.samples import random_inputs

pytestmark = pytest.mark.component

LIPSYNC = str(Path(sys.executable).parent / "lipsync")
# A small profile keeps the self-measurement short on a slow machine.
FAST = ["--batch-min", "1", "--batch-opt", "1", "--batch-max", "2", "--measure-frames", "2"]


def lipsync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIPSYNC, *args], capture_output=True, text=True, timeout=600, check=False
    )


def build(model: Path, cache: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    """Run a build; return (exit code, the JSON result, stderr)."""
    done = lipsync("build", "--model", str(model), "--cache", str(cache), *FAST, *extra)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return done.returncode, result, done.stderr


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "engines").iterdir()) if (cache / "engines").exists() else []


@pytest.fixture(scope="module")
def fp32_cache(reference_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fp32-cache")


@pytest.fixture(scope="module")
def fp32_build(reference_model: Path, fp32_cache: Path) -> dict[str, Any]:
    code, result, stderr = build(reference_model, fp32_cache)
    assert code == 0, stderr
    return result


def test_fp32_build_publishes_artifact_and_manifest(
    fp32_build: dict[str, Any], fp32_cache: Path
) -> None:
    assert fp32_build["state"] == "Ready"
    assert fp32_build["cacheHit"] is False
    [entry] = entries(fp32_cache)
    assert entry.name == fp32_build["key"].removeprefix("sha256:")
    manifest = json.loads((entry / "manifest.json").read_text())
    assert (entry / manifest["artifact"]).stat().st_size == manifest["artifact_bytes"]
    artifact = entry / manifest["artifact"]
    assert fp32_build["artifactSha256"] == manifest["artifact_sha256"] == sha256_file(artifact)
    assert manifest["precision"] == "fp32"
    assert manifest["accuracy"]["psnr_db"] >= 60.0
    assert [t["batch"] for t in manifest["throughput"]] == [1, 2]
    assert all(t["frames_per_second"] > 0 for t in manifest["throughput"])
    precision = onnx.load(str(entry / manifest["artifact"]), load_external_data=False)
    assert {p.key: p.value for p in precision.metadata_props}["lipsync.precision"] == "fp32"


def test_second_identical_build_is_a_cache_hit(
    reference_model: Path, fp32_cache: Path, fp32_build: dict[str, Any], tmp_path: Path
) -> None:
    termination = tmp_path / "termination-log"
    start = time.perf_counter()
    code, result, _ = build(reference_model, fp32_cache, "--termination-log", str(termination))
    seconds = time.perf_counter() - start
    assert code == 0
    assert result["cacheHit"] is True
    assert result["key"] == fp32_build["key"]
    assert json.loads(termination.read_text()) == result
    print(f"cache hit: {seconds:.2f} s including process start")


def test_cache_ls_show_and_gc(fp32_cache: Path, fp32_build: dict[str, Any]) -> None:
    listed = lipsync("cache", "ls", "--cache", str(fp32_cache))
    assert listed.returncode == 0
    hex_key = fp32_build["key"].removeprefix("sha256:")
    assert hex_key[:16] in listed.stdout
    shown = lipsync("cache", "show", hex_key[:10], "--cache", str(fp32_cache))
    assert json.loads(shown.stdout)["key"] == fp32_build["key"]
    leftover = fp32_cache / "engines" / ".tmp-abandoned"
    leftover.mkdir()
    collected = lipsync("cache", "gc", "--grace-minutes", "0", "--cache", str(fp32_cache))
    assert collected.returncode == 0
    assert not leftover.exists()
    assert len(entries(fp32_cache)) == 1


def write_calibration(directory: Path, count: int) -> Path:
    directory.mkdir()
    contract = preset("unet328-ave")
    rng = np.random.default_rng(7)
    for index in range(0, count, 4):
        batch = random_inputs(contract, min(4, count - index), rng)
        np.savez(directory / f"samples-{index:03d}.npz", **batch)  # type: ignore[arg-type]
    return directory


def test_int8_build_passes_its_gate_against_fp32(reference_model: Path, tmp_path: Path) -> None:
    calibration = write_calibration(tmp_path / "calibration", 12)
    code, result, stderr = build(
        reference_model, tmp_path / "cache", "--precision", "int8",
        "--calibration", str(calibration), "--calibration-samples", "8",
    )  # fmt: skip
    assert code == 0, stderr
    [entry] = entries(tmp_path / "cache")
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    assert result["psnrDb"] >= manifest["accuracy"]["min_psnr_db"] == 30.0
    print(f"int8 vs fp32: {result['psnrDb']} dB, max abs error {result['maxAbsError']}")


def test_two_builders_racing_on_one_key_leave_one_artifact(
    reference_model: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    command = [LIPSYNC, "build", "--model", str(reference_model), "--cache", str(cache), *FAST]
    racers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=600)[0] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    results = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    assert results[0]["key"] == results[1]["key"]
    assert results[0]["artifact"] == results[1]["artifact"]
    [entry] = entries(cache)
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        ["manifest.json", Path(results[0]["artifact"]).name]
    )


def wrong_audio_shape_model(path: Path) -> Path:
    """A valid ONNX model whose audio input is [B,512,1,8], which the 'ave' contract rejects."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "wrong-audio",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", 6, 320, 320]),
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["B", 512, 1, 8]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", 6, 320, 320])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def assert_bad_input(outcome: tuple[int, dict[str, Any], str], cache: Path, *words: str) -> None:
    code, result, stderr = outcome
    assert code == 2, stderr
    assert result["state"] == "Failed"
    line = error_line(stderr)
    assert "\n" not in result["reason"]
    for word in words:
        assert word in line
    assert not [p for p in entries(cache) if not p.name.startswith(".tmp-probe")]


@pytest.mark.parametrize("cut", [0.5, 0.0])
def test_corrupt_or_truncated_model_is_bad_input(
    reference_model: Path, tmp_path: Path, cut: float
) -> None:
    broken = tmp_path / "broken.onnx"
    data = reference_model.read_bytes()
    broken.write_bytes(data[: int(len(data) * cut)] if cut else b"not an onnx model at all")
    cache = tmp_path / "cache"
    assert_bad_input(build(broken, cache), cache, "broken.onnx")


def test_wrong_input_shape_is_bad_input(tmp_path: Path) -> None:
    model = wrong_audio_shape_model(tmp_path / "export.onnx")
    cache = tmp_path / "cache"
    assert_bad_input(build(model, cache), cache, "'audio'", "[B,32,16,16]")


@pytest.mark.parametrize(
    "calibration_args",
    [["--calibration", "/nonexistent/calibration"], []],
    ids=["missing-directory", "not-given"],
)
def test_missing_calibration_is_bad_input(
    reference_model: Path, tmp_path: Path, calibration_args: Sequence[str]
) -> None:
    cache = tmp_path / "cache"
    outcome = build(reference_model, cache, "--precision", "int8", *calibration_args)
    assert_bad_input(outcome, cache, "calibration")


def test_unreachable_model_and_unwritable_cache_are_bad_input(
    reference_model: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    assert_bad_input(build(tmp_path / "absent.onnx", cache), cache, "not found")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, stderr = build(reference_model, blocker / "cache")
    assert code == 2
    assert "Not a directory" in error_line(stderr)
