"""``lipsync model export`` without PyTorch: argument parsing, checkpoint shapes, clear errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from lipsync_core.cli_model import model
from lipsync_core.export_torch import (
    ExportError,
    import_model_class,
    parse_init_kwargs,
    state_dict_from,
)

pytestmark = pytest.mark.unit


def test_init_kwargs_are_typed() -> None:
    parsed = parse_init_kwargs("n_channels=6, mode=ave,scale=0.5,half=False,name=")
    assert parsed == {"n_channels": 6, "mode": "ave", "scale": 0.5, "half": False, "name": ""}
    assert type(parsed["n_channels"]) is int
    assert parse_init_kwargs("") == {}


@pytest.mark.parametrize("text", ["n_channels", "=6", "two words=1"])
def test_init_items_must_be_name_equals_value(text: str) -> None:
    with pytest.raises(ExportError, match="is not NAME=VALUE"):
        parse_init_kwargs(text)


def test_state_dict_is_found_bare_or_wrapped_and_loses_the_dataparallel_prefix() -> None:
    weights = {"module.inc.weight": 1, "head.bias": 2}
    expected = {"inc.weight": 1, "head.bias": 2}
    assert state_dict_from(weights, Path("a.pth")) == expected
    assert state_dict_from({"state_dict": weights, "epoch": 3}, Path("a.pth")) == expected


def test_a_checkpoint_without_weights_is_refused() -> None:
    with pytest.raises(ExportError, match=r"empty\.pth: not a state dict"):
        state_dict_from({}, Path("empty.pth"))


def test_module_target_errors_name_the_module(tmp_path: Path) -> None:
    (tmp_path / "tiny_net_for_export.py").write_text("class Model:\n    pass\n")
    assert import_model_class("tiny_net_for_export:Model", tmp_path).__name__ == "Model"
    with pytest.raises(ExportError, match="is not MODULE:CLASS"):
        import_model_class("tiny_net_for_export", tmp_path)
    with pytest.raises(ExportError, match="has no class 'Net'"):
        import_model_class("tiny_net_for_export:Net", tmp_path)
    with pytest.raises(ExportError, match="cannot import 'no_such_module_here'"):
        import_model_class("no_such_module_here:Model", tmp_path)


def test_export_without_torch_names_the_missing_extra(tmp_path: Path) -> None:
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    arguments = ["export", "--module", "unet_328:Model", "--checkpoint", str(tmp_path / "c.pth")]
    result = CliRunner().invoke(model, [*arguments, "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: lipsync model export needs PyTorch: install the [torch] extra "
        "(pip install 'lipsync-core[torch]')"
    )
    assert not (tmp_path / "m.onnx").exists()
