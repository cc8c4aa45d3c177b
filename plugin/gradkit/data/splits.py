"""The images of a dataset split, found as Ultralytics finds them (``data/base.py:get_img_files``).

A split (``train:``, ``val:``, ``test:`` of a dataset YAML) is an image folder (searched below, at
any depth), a text file listing one image per line, or a list of either. In a list file a line
starting with ``./`` is relative to the list file's folder; any other relative line is relative to
the working folder (Ultralytics' rule, surprising as it is: the checker says so when such a line is
found only beside the list). Lines that do not end in an image suffix are skipped by Ultralytics
without a word; here they are kept as findings, as are listed images that do not exist (Ultralytics
drops those when it caches the labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gradkit.data.convert import IMAGE_SUFFIXES

__all__ = ["UNCHECKED_FORMATS", "ListedLine", "SplitImages", "list_split_images", "split_sources"]

#: Image formats Ultralytics 8.4.190 trains on (``data/utils.py:IMG_FORMATS``) that gradkit does not read:
#: such images are counted as unchecked, never taken for lines Ultralytics skips (tests/test_splits.py
#: compares this with Ultralytics' own set).
UNCHECKED_FORMATS = ("avif", "dng", "heic", "heif", "jp2", "mpo", "webp")


def split_sources(value: object, root: Path, key: str, where: Path) -> list[Path]:
    """A split's value in the YAML (a path or a list of paths) as absolute places, resolved against the
    dataset ``root`` as Ultralytics' ``check_det_dataset`` does (a single ``../x`` that is not there
    falls back to ``root/x``, for Roboflow exports). ``key`` and ``where`` name it in errors."""
    values = value if isinstance(value, list) else [value]
    places = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{where}: {key}: takes a folder or list-file path, or a list of them, got {v!r}")
        p = Path(v)
        place = p if p.is_absolute() else root / p
        if not isinstance(value, list) and not place.exists() and v.startswith("../"):
            place = root / v[3:]
        places.append(place)
    return places


@dataclass(frozen=True)
class ListedLine:
    """A line of a list file that gives no image: ``why`` is ``missing`` (no such file), ``beside`` (no
    such file from the working folder, but one beside the list file: the line wants a leading ``./``)
    or ``skipped`` (not an image path: Ultralytics ignores it)."""

    list_file: Path
    line: int
    text: str
    why: str


@dataclass
class SplitImages:
    """What a split holds: its images (sorted, each once), the places that do not exist, the lines of
    its list files that give no image, the images listed more than once, and the images Ultralytics
    reads in formats gradkit does not (:data:`UNCHECKED_FORMATS`)."""

    images: list[Path] = field(default_factory=list)
    unchecked: list[Path] = field(default_factory=list)
    absent: list[Path] = field(default_factory=list)
    lines: list[ListedLine] = field(default_factory=list)
    repeated: list[Path] = field(default_factory=list)


def _format(name: str) -> str | None:
    """``checked`` or ``unchecked`` for an image path Ultralytics reads (by its suffix, as Ultralytics
    judges it), None for anything else."""
    suffix = name.rpartition(".")[2].lower()
    if suffix in {s.lstrip(".") for s in IMAGE_SUFFIXES}:
        return "checked"
    return "unchecked" if suffix in UNCHECKED_FORMATS else None


def _listed(list_file: Path, found: SplitImages) -> list[Path]:
    """The images of one list file (UTF-8, with or without a byte-order mark), as Ultralytics reads it."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{list_file}: a split's list file must be UTF-8 text "
                         f"({exc.reason} at byte {exc.start})") from None
    images = []
    for n, line in enumerate(text.strip().splitlines(), 1):
        if not line.strip():
            continue
        kind = _format(line)
        if kind is None:  # Ultralytics keeps a line only when its suffix is an image format
            found.lines.append(ListedLine(list_file, n, line, "skipped"))
            continue
        img = list_file.parent / line[2:] if line.startswith("./") else Path.cwd() / line  # absolute stays
        if not img.is_file():
            beside = not Path(line).is_absolute() and not line.startswith("./") and (list_file.parent / line).is_file()
            found.lines.append(ListedLine(list_file, n, line, "beside" if beside else "missing"))
            continue
        (images if kind == "checked" else found.unchecked).append(img)
    return images


def list_split_images(sources: list[Path]) -> SplitImages:
    """The images a split's ``sources`` (:func:`split_sources`) hold, with what gives none."""
    found = SplitImages()
    images: list[Path] = []
    for place in sources:
        if place.is_dir():
            files = [p for p in place.rglob("*") if p.is_file()]
            images += [p for p in files if _format(p.name) == "checked"]
            found.unchecked += [p for p in files if _format(p.name) == "unchecked"]
        elif place.is_file():
            images += _listed(place, found)
        else:
            found.absent.append(place)
    seen: set[Path] = set()
    for img in images:
        key = img.resolve()
        if key in seen:
            found.repeated.append(img)
        seen.add(key)
    unique = {img.resolve(): img for img in reversed(images)}  # the first place an image was found names it
    found.images = sorted(unique.values())
    return found
