"""`lipsync operator run` refuses what it cannot honour before it starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lipsync_operator.cli import operator

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("pattern", ["team-*", "team-?", "!kube-system", "a,b"])
def test_namespace_patterns_are_refused_with_the_value_named(pattern: str) -> None:
    result = CliRunner().invoke(operator, ["run", "--namespace", "models", "--namespace", pattern])
    assert result.exit_code == 2
    assert repr(pattern) in result.output
    assert "name each namespace exactly" in result.output
