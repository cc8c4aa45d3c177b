"""The images of a dataset split, found as Ultralytics finds them (``data/base.py:get_img_files``).

A split (``train:``, ``val:``, ``test:`` of a dataset YAML) is an image folder, a text file listing
one image per line, or a list of either. A folder is searched as Ultralytics' ``glob("**/*.*")``
does: at any depth, through linked folders, skipping hidden files and folders. In a list file a line
starting with ``./`` is relative to the list file's folder; any other relative line is relative to
the working folder (Ultralytics' rule, surprising as it is: the checker says so when such a line is
found only beside the list). Lines that do not end in an image suffix are skipped by Ultralytics
without a word; here they are kept as findings, as are listed images that do not exist (Ultralytics
drops those when it caches the labels).
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

from gradkit.data.convert import IMAGE_SUFFIXES

__all__ = ["UNCHECKED_FORMATS", "UNREAD", "ListedLine", "SplitImages", "is_listed", "list_split_images",
           "resolve_split"]

#: Image formats Ultralytics 8.4.190 trains on (``data/utils.py:IMG_FORMATS``) that gradkit does not read:
#: such images are counted as unchecked, never taken for lines Ultralytics skips (tests/test_splits.py
#: compares this with Ultralytics' own set).
UNCHECKED_FORMATS = ("avif", "dng", "heic", "heif", "jp2", "mpo", "webp")

#: The kinds of :class:`ListedLine` that name an image nobody can read (Ultralytics drops them).
UNREAD = ("missing", "beside")


def resolve_split(value: object, root: Path, key: str, where: Path) -> list[Path]:
    """A split's value in the YAML (a path or a list of paths) as the absolute places Ultralytics'
    ``check_det_dataset`` makes of it: resolved against the dataset ``root``, links followed (a single
    ``../x`` that is not there falls back to ``root/x``, for Roboflow exports). ``key`` and ``where``
    name it in errors."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError(f"{where}: {key}: an empty list; give at least one folder or list file")
    places = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{where}: {key}: takes a folder or list-file path, or a list of them, got {v!r}")
        place = (root / v).resolve()
        if not isinstance(value, list) and not place.exists() and v.startswith("../"):
            place = (root / v[3:]).resolve()
        places.append(place)
    return places


def is_listed(places: list[Path]) -> bool:
    """A split given as a list file or as several places, not as one folder (``check --fix`` copies folders)."""
    return len(places) > 1 or places[0].is_file()


@dataclass(frozen=True)
class ListedLine:
    """An entry of a split that gives no new image. ``why``:

    - ``missing``: no such file;
    - ``beside``: no such file from the working folder, but one beside the list file (the line wants a
      leading ``./``);
    - ``skipped``: not an image path (Ultralytics ignores the line);
    - ``repeated``: an image the split holds already, from ``first_seen`` (Ultralytics reads it again);
    - ``place repeated``: the whole folder or list file is given again (``first_seen``: as which entry of
      the split), so each of its images is read again.

    ``place`` is the list file, or the folder that repeats an image (``line`` None, ``text`` the image).
    """

    place: Path
    line: int | None
    text: str
    why: str
    first_seen: str = ""


@dataclass
class SplitImages:
    """What a split holds: its images (sorted, each once), the places that do not exist, the entries that
    give no new image (list lines that give none, images and places given again), the images
    Ultralytics reads in formats gradkit does not (:data:`UNCHECKED_FORMATS`), and how many image reads
    Ultralytics makes beyond one per image (``extra_reads``)."""

    images: list[Path] = field(default_factory=list)
    unchecked: list[Path] = field(default_factory=list)
    absent: list[Path] = field(default_factory=list)
    lines: list[ListedLine] = field(default_factory=list)
    extra_reads: int = 0
    #: image names in a split's folders that are links to nothing (an unmounted share): Ultralytics lists them,
    #: then drops each with its label
    dangling: list[Path] = field(default_factory=list)


def _format(name: str) -> str | None:
    """``checked`` or ``unchecked`` for an image path Ultralytics reads (by its suffix, as Ultralytics
    judges it), None for anything else."""
    suffix = name.rpartition(".")[2].lower()
    if suffix in {s.lstrip(".") for s in IMAGE_SUFFIXES}:
        return "checked"
    return "unchecked" if suffix in UNCHECKED_FORMATS else None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system: no such image
        return False


def _lines(list_file: Path) -> list[tuple[int, str]]:
    """(line number in the file, text) of each line Ultralytics reads: it strips the whole text first, so
    leading blank lines are counted here, not passed on."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{list_file}: a split's list file must be UTF-8 text "
                         f"({exc.reason} at byte {exc.start})") from None
    stripped = text.strip()
    first = 1 + len(re.findall(r"\r\n|\r|\n", text[:len(text) - len(text.lstrip())]))
    return [(first + i, line) for i, line in enumerate(stripped.splitlines())]


def _listed(list_file: Path, found: SplitImages) -> list[tuple[Path, int, str]]:
    """(image, line number, line) of each image of one list file (UTF-8, with or without a byte-order mark), as
    Ultralytics reads it; images in unread formats go to ``found.unchecked``."""
    images = []
    for n, line in _lines(list_file):
        if not line.strip():
            continue
        kind = _format(line)
        if kind is None:  # Ultralytics keeps a line only when its suffix is an image format
            found.lines.append(ListedLine(list_file, n, line, "skipped"))
            continue
        img = list_file.parent / line[2:] if line.startswith("./") else Path.cwd() / line  # absolute stays
        if not _is_file(img):
            beside = not Path(line).is_absolute() and not line.startswith("./") and _is_file(list_file.parent / line)
            found.lines.append(ListedLine(list_file, n, line, "beside" if beside else "missing"))
            continue
        if kind == "checked":
            images.append((img, n, line))
        else:
            found.unchecked.append(img)
    return images


def _folder_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """What Ultralytics' ``glob("**/*.*", recursive=True)`` finds below ``folder``: the files, and the links to
    nothing."""
    found = [Path(f) for f in glob.glob(str(Path(glob.escape(str(folder))) / "**" / "*.*"), recursive=True)]
    files = [f for f in found if _is_file(f)]
    return files, [f for f in found if f.is_symlink() and not f.exists()]


def _first_seen(place: Path, line: int | None, here: Path) -> str:
    """Where an entry came first, as said from ``here``: ``line 3`` in the same list file."""
    if line is None:
        return str(place)
    return f"line {line}" if place == here else f"{place}:{line}"


def list_split_images(places: list[Path]) -> SplitImages:
    """The images a split's ``places`` (:func:`resolve_split`) hold, with what gives none."""
    found = SplitImages()
    entries: list[tuple[Path, Path, int | None, str]] = []  # (image, place, line number or None, text)
    read: dict[Path, int] = {}
    for k, place in enumerate(places):
        if place.exists() and place.resolve() in read:  # read again by Ultralytics: said once, not per image
            found.lines.append(ListedLine(place, None, str(place), "place repeated",
                                          f"entry {read[place.resolve()] + 1} of the split"))
            found.extra_reads += len(list_split_images([place]).images)
            continue
        read[place.resolve()] = k
        if place.is_dir():
            files, dangling = _folder_files(place)
            found.dangling += sorted(p for p in dangling if _format(p.name))
            entries += [(p, place, None, str(p)) for p in sorted(files) if _format(p.name) == "checked"]
            found.unchecked += [p for p in files if _format(p.name) == "unchecked"]
        elif place.is_file():
            entries += [(img, place, n, line) for img, n, line in _listed(place, found)]
        else:
            found.absent.append(place)
    first: dict[Path, tuple[Path, Path, int | None]] = {}
    for img, place, n, text in entries:
        key = img.resolve()
        if key in first:
            _, where, at = first[key]
            found.lines.append(ListedLine(place, n, text, "repeated", _first_seen(where, at, place)))
            found.extra_reads += 1
        else:
            first[key] = (img, place, n)
    found.images = sorted(img for img, _, _ in first.values())  # the first place an image was found names it
    return found
