"""YAML files read back as untrusted input: their content, or one line naming the file and where it fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: Path) -> Any:
    """``path``'s YAML content; a file that is not UTF-8 text or not YAML raises a one-line ValueError naming it and
    the line (OSError for one that cannot be read at all)."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}:{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
