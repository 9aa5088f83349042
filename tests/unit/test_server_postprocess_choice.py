"""Which post-processing path a server runs, from its setting and the model's device."""

from __future__ import annotations

import pytest

from lipsync_server.errors import NotConfiguredError
from lipsync_server.postprocess import choose_postprocess

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("requested", "device", "have_torch", "expected"),
    [
        ("auto", "cuda:0", True, ("torch", "cuda:0")),
        ("auto", "cuda:0", False, ("numpy", "cpu")),
        ("auto", "cpu", True, ("numpy", "cpu")),
        ("numpy", "cuda:1", True, ("numpy", "cpu")),
        ("torch", "cpu", True, ("torch", "cpu")),
        ("torch", "cuda:1", True, ("torch", "cuda:1")),
    ],
)
def test_the_path_follows_the_setting_and_the_models_device(
    requested: str, device: str, have_torch: bool, expected: tuple[str, str]
) -> None:
    assert choose_postprocess(requested, device, have_torch) == expected  # type: ignore[arg-type]


def test_asking_for_torch_without_it_says_what_to_install() -> None:
    with pytest.raises(NotConfiguredError, match=r"\[torch\] extra"):
        choose_postprocess("torch", "cpu", have_torch=False)
