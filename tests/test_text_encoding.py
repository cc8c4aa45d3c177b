"""Every text file gradkit reads or writes is UTF-8 whatever the locale (Ultralytics reads and writes its files as
UTF-8; under LC_ALL=C or Windows' cp1252 the locale's default garbles or refuses class names). Ruff's PLW1514
catches ``open()`` and some ``Path`` calls without ``encoding=``, not ``x.read_text()`` on any expression; this
walks the source for all three."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _missing_encoding(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name in ("read_text", "write_text"):
            lines.append(node.lineno)
        elif name == "open" and isinstance(func, ast.Name | ast.Attribute):
            at = 0 if isinstance(func, ast.Attribute) and not _is_pil(func) else 1  # Path.open(mode) / open(f, mode)
            mode = node.args[at] if len(node.args) > at else next((k.value for k in node.keywords if k.arg == "mode"),
                                                                  None)
            binary = isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" in mode.value
            opened = node.args[0] if node.args else None
            if not binary and not (isinstance(func, ast.Attribute) and not isinstance(opened, ast.Constant | None)
                                   and func.attr == "open" and _is_pil(func)):
                lines.append(node.lineno)
    return lines


def _is_pil(func: ast.Attribute) -> bool:
    """``Image.open(...)`` and the like: not a text file."""
    return isinstance(func.value, ast.Name) and func.value.id in {"Image", "PIL", "tarfile", "zipfile", "os"}


def test_no_text_is_read_or_written_in_the_locale_s_encoding():
    found = []
    for path in sorted([*(ROOT / "plugin" / "gradkit").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        for line in _missing_encoding(ast.parse(path.read_text(encoding="utf-8"))):
            found.append(f"{path.relative_to(ROOT)}:{line}")
    assert not found, "text without encoding='utf-8':\n" + "\n".join(found)


def test_the_walk_finds_what_it_looks_for():
    planted = ast.parse("p.read_text()\nq.write_text(s)\nopen(f)\nopen(f, 'rb')\nImage.open(f)\n"
                        "p.read_text(encoding='utf-8')\nopen(f, 'w', encoding='utf-8')\np.open('rb')\np.open('w')\n")
    assert _missing_encoding(planted) == [1, 2, 3, 9]
