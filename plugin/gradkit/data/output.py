"""The output folder of a converter or ``check --fix``: never on the sources, never mixed with stale files.

Rules (issue 18 §1, issue 12 §4): an output that resolves to, contains, or lies inside a source
(dataset root, split folder, annotation file, image folder) is refused; a non-empty output is
refused unless ``overwrite=true``, which removes only the files a previous gradkit run listed in the
folder's manifest; every write is checked to land inside the output and on no source file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

__all__ = ["MANIFEST", "OutputFolder", "OutputRefused"]

MANIFEST = ".gradkit-manifest.json"


class OutputRefused(ValueError):
    """An ``out=`` that would touch the sources or mix with files gradkit did not write: the user's to fix."""


def _refuse(command: str, message: str) -> OutputRefused:
    return OutputRefused(f"{message}; {command} refused, nothing was written")


def _check_not_on_sources(out: Path, sources: dict[str, Path], command: str) -> None:
    for label, source in sources.items():
        src = source.resolve()
        if out == src:
            raise _refuse(command, f"out={out} is the {label} {src}")
        if out.is_relative_to(src):
            raise _refuse(command, f"out={out} lies inside the {label} {src}")
        if src.is_relative_to(out):
            raise _refuse(command, f"out={out} contains the {label} {src}")


def _manifest_entries(out: Path, command: str) -> list[PurePosixPath]:
    """Files a previous gradkit run wrote, each checked to stay inside ``out``."""
    try:
        listed = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise _refuse(command, f"out={out} is not empty and holds no list of files a previous gradkit run "
                               f"wrote ({MANIFEST}), so overwrite=true cannot tell its files from yours: "
                               "empty it yourself or choose another out=") from None
    entries = []
    for rel in listed:
        p = PurePosixPath(str(rel))
        if p.is_absolute() or ".." in p.parts or not p.parts:
            raise _refuse(command, f"{out / MANIFEST} lists {rel!r}, a path outside out=")
        entries.append(p)
    return entries


def _refuse_unlisted(out: Path, listed: set[PurePosixPath], command: str) -> None:
    """Files in the places gradkit writes that no previous run listed would mix with the new output."""
    ours = [out / "data.yaml"] + [p for name in ("images", "labels") for p in sorted((out / name).rglob("*"))]
    unlisted = [p for p in ours if (p.is_file() or p.is_symlink()) and
                PurePosixPath(p.relative_to(out).as_posix()) not in listed]
    if unlisted:
        raise _refuse(command, f"out={out} holds {len(unlisted)} file(s) no previous gradkit run wrote, e.g. "
                               f"{unlisted[0]}: they would mix with the new output; move them away")


def _clear_previous(out: Path, command: str) -> None:
    entries = _manifest_entries(out, command)
    for rel in entries:  # a linked folder would make the deletions below land outside out=
        folder = out / rel.parent
        if os.path.realpath(folder) != str(folder):
            raise _refuse(command, f"{folder} is or lies below a symbolic link (to {os.path.realpath(folder)}); "
                                   "overwrite=true deletes nothing through links")
    _refuse_unlisted(out, set(entries), command)
    for rel in entries:
        path = out / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
    for folder in sorted({out / d for rel in entries for d in rel.parents if d.parts}, key=lambda p: -len(p.parts)):
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
    (out / MANIFEST).unlink(missing_ok=True)


class OutputFolder:
    """A guarded output folder: ``plan`` the files, then ``path(rel)`` for each write."""

    def __init__(self, out: str | Path, sources: dict[str, Path], overwrite: bool, command: str,
                 source_files: Iterable[Path] = ()):
        self.command = command
        self.root = self.precheck(out, sources, overwrite, command)
        self._source_files = {Path(p).resolve() for p in source_files}
        self._sources = [s.resolve() for s in sources.values()]
        if self.root.is_dir() and any(self.root.iterdir()):
            _manifest_entries(self.root, command)  # refused now if overwrite=true cannot tell its files apart
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def precheck(out: str | Path, sources: dict[str, Path], overwrite: bool, command: str) -> Path:
        """The refusals that need no writing, to run before reading the sources; returns ``out`` resolved."""
        root = Path(out).resolve()
        _check_not_on_sources(root, sources, command)
        if root.exists() and not root.is_dir():
            raise _refuse(command, f"out={root} is a file, not a folder")
        if root.is_dir() and any(root.iterdir()) and not overwrite:
            raise _refuse(command, f"out={root} is not empty: choose an empty or new folder, or pass "
                                   "overwrite=true to remove what a previous gradkit run wrote there first")
        return root

    def plan(self, rels: Iterable[str | PurePosixPath]) -> None:
        """Record every file about to be written before writing any, so a crash leaves a complete list. A
        previous run's files go first (``overwrite``); a file at a planned path that no previous run listed
        is refused before anything is removed or written."""
        files = sorted({str(PurePosixPath(r)) for r in rels} | {MANIFEST})
        if (self.root / MANIFEST).exists():
            previous = set(_manifest_entries(self.root, self.command))
            foreign = [f for f in files if f != MANIFEST and PurePosixPath(f) not in previous
                       and ((self.root / f).exists() or (self.root / f).is_symlink())]
            if foreign:
                raise _refuse(self.command, f"out={self.root} holds {self.root / foreign[0]}, which no previous "
                                            "gradkit run wrote and this one would overwrite; move it away")
            _clear_previous(self.root, self.command)
        (self.root / MANIFEST).write_text(json.dumps({"written_by": f"gradkit {self.command}", "files": files},
                                                     indent=0), encoding="utf-8")

    def path(self, rel: str | PurePosixPath) -> Path:
        """Where to write ``rel``; refuses a path that escapes the folder (links) or lands on a source file."""
        dst = self.root / PurePosixPath(rel)
        real = Path(os.path.realpath(dst))
        on_source = real in self._source_files or any(real.is_relative_to(s) for s in self._sources)
        where = ("a source file" if on_source else
                 "outside out=" if not real.is_relative_to(self.root) else None)
        if where:
            raise ValueError(f"{dst} resolves to {real}, {where}; {self.command} stopped before writing it")
        dst.parent.mkdir(parents=True, exist_ok=True)
        return dst
