"""Dataset resolution without running code from the data file.

Ultralytics' ``check_det_dataset(data, autodownload=True)`` runs a dataset YAML's ``download:``
value when a split folder is missing: a ``bash ...`` string in a shell, anything else that is not
a URL through ``exec``. Trainers, validators and the exporter call it with that default, so a shared
data YAML could run arbitrary code. :func:`install_dataset_guard` replaces it (through
``seams.replace_check_det_dataset``), in ``ultralytics.data.utils`` and in every Ultralytics module
that imported it by name, with :func:`resolve_dataset`, which never downloads and turns every
dataset problem into a one-line :class:`DatasetError`. ``gradkit.data.allow_download=true`` restores
Ultralytics' behaviour.

Ultralytics also reads each split's label cache (``labels/train.cache``, written beside the labels by an
earlier run) with ``np.load(allow_pickle=True)``: a cache shipped with a dataset could run code when it is
unpickled. :func:`load_label_cache` replaces that loader (``seams.replace_label_cache_io``), always: it
reads no cache, so Ultralytics rescans the labels each run, as it does when a cache is stale. With it,
:func:`skip_label_cache` replaces the writer, which would put that file in the user's dataset (replacing
one already there): a cache gradkit never reads is not worth a write into data that is not ours.

And Ultralytics treats ``<image>.npy`` beside every image as its own image cache in every cache mode: it
trains on that array when it is newer than the image, overwrites it when its channels differ and deletes it
when unreadable; ``cache=disk`` writes one beside each image. A height map saved beside its photograph is
the user's. :func:`image_cache_path` moves those caches into gradkit's own folder (``seams.redirect_image_caches``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import yaml

from gradkit.integrations.ultralytics.callback import DatasetError
from gradkit.integrations.ultralytics.seams import (
    redirect_image_caches,
    replace_check_det_dataset,
    replace_label_cache_io,
    stock_check_det_dataset,
)

__all__ = ["LabelCacheRefused", "cache_dir", "image_cache_path", "install_dataset_guard", "load_label_cache",
           "resolve_dataset", "skip_label_cache"]


class LabelCacheRefused(Exception):
    """Raised in place of reading a label cache; Ultralytics catches it and rescans the labels."""


def load_label_cache(path: Path) -> dict:
    """Never read a label cache: it is a pickle, and no restricted unpickler of numpy arrays is safe (a
    crafted dtype state alone corrupts memory). A missing file raises as ``np.load`` does; an existing one
    is refused with one line, and Ultralytics rescans the labels as it does for a stale cache."""
    from ultralytics.utils import LOGGER

    if not Path(path).is_file():
        raise FileNotFoundError(path)
    LOGGER.info(f"gradkit: label cache {path} not read (a pickle; gradkit never unpickles a data file): "
                "labels rescanned")
    raise LabelCacheRefused(path)


def skip_label_cache(prefix: str, path: Path, x: dict, version: str) -> None:
    """Write nothing where Ultralytics would write the label cache (``path``, beside the user's labels):
    gradkit reads no cache, and a dataset is the user's, never written into. ``x`` gets its ``version`` as
    the stock writer adds it in place: Ultralytics pops that key from the scan it keeps."""
    from ultralytics.utils import LOGGER

    x["version"] = version
    LOGGER.info(f"{prefix}gradkit: label cache not written to {path} (gradkit writes nothing into a dataset)")


def cache_dir() -> Path:
    """gradkit's own cache folder: ``GRADKIT_CACHE_DIR``, else ``gradkit`` in the XDG cache folder."""
    if os.environ.get("GRADKIT_CACHE_DIR"):
        return Path(os.environ["GRADKIT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gradkit"


def image_cache_path(image: Path) -> Path:
    """Where Ultralytics' cache of one image goes instead of beside it: ``images/<digest>.npy`` under
    :func:`cache_dir`, the digest of the image's resolved path, size, modification and change times. A
    cache is read whenever it is newer than its image, and copies keep file times, so a dataset replaced by
    another at the same path must not find the old arrays: any change to the file is a new name (a miss
    costs one decode; the orphan stays until the folder is cleared)."""
    resolved = Path(image).resolve()
    try:
        st = resolved.stat()
        identity = f"{resolved}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
    except OSError:  # a missing image: Ultralytics' own check names it; its cache name is never used
        identity = str(resolved)
    folder = cache_dir() / "images"
    _make_folder(folder)
    return folder / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.npy"


@functools.lru_cache(maxsize=16)
def _make_folder(folder: Path) -> None:
    """Made once per process (one folder for every image); where it cannot be (a read-only home) the caches are
    simply absent: nothing is read from them, and ``cache=disk`` says per image that it could not write one,
    as Ultralytics does."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from ultralytics.utils import LOGGER

        LOGGER.warning(f"gradkit: image cache folder {folder} cannot be made ({exc.strerror}); set GRADKIT_CACHE_DIR")


_state: dict[str, Any] = {"allow_download": False}
#: Ultralytics' own message for a missing split, raised when ``autodownload=False``.
_MISSING = re.compile(r"missing path '([^']+)'")


def _has_download(dataset: str) -> bool:
    try:
        data = yaml.safe_load(Path(dataset).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and bool(data.get("download"))


#: Keys of a dataset YAML that name something other than a split's images.
NOT_SPLITS = ("path", "names", "download", "yaml_file")


def _check_keys(dataset: str, split: str = "") -> None:
    """The keys every detection YAML needs, and the ``split`` asked for, said plainly (Ultralytics' own messages
    span lines, and call a split the YAML does not name "images not found")."""
    path = Path(dataset)
    if path.suffix not in {".yaml", ".yml"} or not path.is_file():
        return
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DatasetError(f"gradkit: data {dataset} is not valid YAML: {_one_line(exc)}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"gradkit: data {dataset} must be a mapping with path, train, val and names")
    present = {k for k, v in data.items() if v} | ({"val"} if data.get("validation") else set())
    missing = [k for k in ("train", "val", "names") if k not in present and not (k == "names" and "nc" in present)]
    if missing:
        raise DatasetError(f"gradkit: data {dataset} has no {', '.join(repr(k) for k in missing)}; a detection "
                           "dataset YAML needs train: and val: (image folders) and names: (the class names, "
                           "e.g. names: {0: scratch, 1: pit})")
    if split and split not in present:
        named = ", ".join(str(k) for k, v in data.items() if k not in NOT_SPLITS and (
            isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(x, str) for x in v))))
        raise DatasetError(f"gradkit: data {dataset} has no split {split!r} (it names {named})")


def _missing_split(dataset: str, split: str, path: str) -> DatasetError:
    note = ("; its download: script is not run (gradkit never runs code from a data file; "
            "gradkit.data.allow_download=true opts in)") if _has_download(dataset) else ""
    return DatasetError(f"gradkit: data {dataset}: the {split} split {path} does not exist{note}; "
                        "create it or fix the path in the YAML")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).replace(" ❌", "").replace("❌", "").split())
    return text.removeprefix("gradkit: ")


def resolve_dataset(dataset: str | Path, split: str = "", required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Ultralytics' dataset dictionary, without auto-download; every split needed must exist.

    Args:
        dataset: A dataset YAML (or anything ``check_det_dataset`` accepts).
        split: The split the caller evaluates ("" means val), as Ultralytics' ``split``.
        required: Further splits that must exist when the YAML names them (the trainer: train).

    Raises:
        DatasetError: one line naming the YAML, the split and the missing path, or Ultralytics'
            own complaint (no ``names``, no ``train:``) on one line.
    """
    original = stock_check_det_dataset()
    dataset = str(dataset)
    _check_keys(dataset, split)
    try:
        data = original(dataset, autodownload=False, split=split)
    except FileNotFoundError as exc:
        found = _MISSING.search(str(exc))
        if found:
            raise _missing_split(dataset, split or "val", found.group(1)) from None
        raise DatasetError(f"gradkit: data {dataset}: {_one_line(exc)}; check the data= path") from None
    except (SyntaxError, TypeError, ValueError, KeyError) as exc:
        raise DatasetError(f"gradkit: data {dataset}: {_one_line(exc)}; see the Ultralytics dataset YAML format "
                           "(path, train, val, names)") from None
    for name in dict.fromkeys((split or "val", *required)):
        paths = data.get(name)
        for p in paths if isinstance(paths, list) else [paths] if paths else []:
            if not Path(p).exists():
                raise _missing_split(dataset, name, str(p))
    return data


def _guard(required: tuple[str, ...]):
    def check_det_dataset(dataset, autodownload: bool = True, split: str = ""):
        if _state["allow_download"]:
            return stock_check_det_dataset()(dataset, autodownload=autodownload, split=split)
        return resolve_dataset(dataset, split, required)

    check_det_dataset.gradkit_guard = True
    return check_det_dataset


def install_dataset_guard(allow_download: bool = False) -> None:
    """Replace ``check_det_dataset`` and the label-cache loader everywhere Ultralytics looks them up
    (idempotent).

    ``allow_download`` is process-wide: the last ``attach`` or ``gradkit`` command sets it. The
    trainer's copy also requires the train split.
    """
    _state["allow_download"] = bool(allow_download)
    replace_check_det_dataset(_guard(()), _guard(("train",)))
    replace_label_cache_io(load_label_cache, skip_label_cache)
    redirect_image_caches(image_cache_path)


def model_config_exists(model: str) -> bool:
    """Whether Ultralytics would find the model configuration ``model`` (a YAML file, or a name among its
    own configurations such as ``yolo26n.yaml``): its own lookup, run before training so that a missing
    one is a one-line error instead of a traceback from inside the model's construction."""
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(model)
    except FileNotFoundError:
        return False
    return True
