"""Reduce a KEDA source tree to the trigger types the test bed uses.

KEDA compiles every scaler into one package, so its operator links the SDKs of
some seventy services (Kafka, Azure, GCP, AWS, databases, ...). The test bed's
ScaledObjects use Prometheus triggers only, and building the rest would take
most of a cold CI run on a 2-core machine. This keeps the switch cases of the
kept trigger types in ``pkg/scaling/scalers_builder.go`` (between KEDA's own
``TRIGGERS-START``/``TRIGGERS-END`` markers) and deletes the scaler files whose
constructors are no longer referenced. Constants that the kept files use but
only a deleted file declared (``externalMetricType`` lives in the Azure queue
scaler) are declared again in ``pkg/scalers/trimmed_constants.go``. Everything
else stays as released.

Usage: python3 keda_triggers.py SOURCE_DIR TRIGGER_TYPE...
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path

BUILDER = Path("pkg/scaling/scalers_builder.go")
SCALERS = Path("pkg/scalers")
CASE = re.compile(r'^\s*case (?P<types>"[^"]+"(?:,\s*"[^"]+")*):\s*$')
CONSTRUCTOR = re.compile(r"\bscalers\.(New\w+)\(")
DEFINITION = re.compile(r"^func (New\w+)\(", re.MULTILINE)
CONSTANTS_FILE = "trimmed_constants.go"
# Package-level names: funcs, types, and the names of const/var specs (single or in blocks).
TOP_LEVEL = re.compile(r"^(?:func|type|const|var) (\w+)", re.MULTILINE)
BLOCK = re.compile(r"^(const|var) \((.*?)^\)", re.MULTILINE | re.DOTALL)
LITERAL_CONSTANT = re.compile(
    r'^\s*(?:const )?(?P<name>\w+)(?: \w+)? += (?P<value>"[^"\\]*"|-?\d+(?:\.\d+)?)\s*(?://.*)?$',
    re.MULTILINE,
)
NOISE = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|//[^\n]*')


class TrimError(RuntimeError):
    """The source tree does not look like the KEDA release this was written for."""


def split_switch(text: str) -> tuple[str, list[list[str]], str]:
    """The text before the trigger switch's cases, the cases (lines each), and the rest."""
    start, end = text.find("// TRIGGERS-START"), text.find("// TRIGGERS-END")
    if start < 0 or end < start:
        raise TrimError(f"{BUILDER}: no TRIGGERS-START/TRIGGERS-END markers")
    body = text[start:end].splitlines(keepends=True)
    head_end = next(i for i, line in enumerate(body) if CASE.match(line))
    default = next(i for i, line in enumerate(body) if line.strip() == "default:")
    cases: list[list[str]] = []
    for line in body[head_end:default]:
        if CASE.match(line):
            cases.append([])
        cases[-1].append(line)
    return text[:start] + "".join(body[:head_end]), cases, "".join(body[default:]) + text[end:]


def case_types(case: list[str]) -> set[str]:
    match = CASE.match(case[0])
    assert match is not None
    return set(re.findall(r'"([^"]+)"', match.group("types")))


def trim(source: Path, keep: set[str]) -> list[str]:
    """Trim SOURCE in place; answers the deleted scaler files."""
    builder = source / BUILDER
    head, cases, tail = split_switch(builder.read_text(encoding="utf-8"))
    known = set().union(*(case_types(c) for c in cases))
    if missing := keep - known:
        raise TrimError(f"unknown trigger types: {', '.join(sorted(missing))}")
    kept = [c for c in cases if case_types(c) & keep]
    trimmed = head + "".join("".join(c) for c in kept) + tail
    builder.write_text(trimmed, encoding="utf-8")

    wanted = set(CONSTRUCTOR.findall(trimmed))
    deleted: dict[str, str] = {}
    for path in sorted((source / SCALERS).glob("*.go")):
        if path.name.endswith("_test.go"):
            path.unlink()
            continue
        text = path.read_text(encoding="utf-8")
        defined = set(DEFINITION.findall(text))
        if path.name.endswith("_scaler.go") and defined and not defined & wanted:
            path.unlink()
            deleted[path.name] = text
    write_orphaned_constants(source / SCALERS, deleted.values())
    return list(deleted)


def declared_names(text: str) -> set[str]:
    names = set(TOP_LEVEL.findall(text))
    for block in BLOCK.finditer(text):
        names.update(re.findall(r"^\s*(\w+)", block.group(2), re.MULTILINE))
    return names


def literal_constants(text: str) -> dict[str, str]:
    """Package-level constants with a literal value: ``name = "x"`` in a const block or alone."""
    found: dict[str, str] = {}
    for block in BLOCK.finditer(text):
        if block.group(1) == "const":
            found.update((m["name"], m["value"]) for m in LITERAL_CONSTANT.finditer(block.group(2)))
    found.update(
        (m["name"], m["value"])
        for m in LITERAL_CONSTANT.finditer(text)
        if m.group(0).lstrip().startswith("const ")
    )
    return found


def write_orphaned_constants(package: Path, deleted: Iterable[str]) -> None:
    kept = [p.read_text(encoding="utf-8") for p in sorted(package.glob("*.go"))]
    declared = set().union(*(declared_names(t) for t in kept))
    used = set().union(*(set(re.findall(r"(?<![.\w])\w+", NOISE.sub("", t))) for t in kept))
    orphans: dict[str, str] = {}
    for text in deleted:
        orphans.update(literal_constants(text))
    needed = sorted((used - declared) & set(orphans))
    if needed:
        lines = [f"\t{name} = {orphans[name]}" for name in needed]
        (package / CONSTANTS_FILE).write_text(
            "// Code generated by keda_triggers.py: constants of removed scaler files."
            " DO NOT EDIT.\n\npackage scalers\n\nconst (\n" + "\n".join(lines) + "\n)\n",
            encoding="utf-8",
        )


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    source, keep = Path(argv[0]), set(argv[1:])
    try:
        deleted = trim(source, keep)
    except TrimError as exc:
        print(f"keda_triggers.py: {exc}", file=sys.stderr)
        return 1
    print(f"keda_triggers.py: kept {', '.join(sorted(keep))}; removed {len(deleted)} scalers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
