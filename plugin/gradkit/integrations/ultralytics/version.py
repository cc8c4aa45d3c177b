"""The Ultralytics versions gradkit's integration was written against and tested with."""

from __future__ import annotations

__all__ = ["STATE_SUFFIX", "SUPPORTED_ULTRALYTICS", "check_ultralytics_version"]

SUPPORTED_ULTRALYTICS = ((8, 4, 190), (8, 5, 0))  # [min, max)
STATE_SUFFIX = ".gradkit.pt"


def check_ultralytics_version(version: str | None = None) -> str:
    """Raise if the installed Ultralytics is outside the tested range; return its version."""
    if version is None:
        import ultralytics

        version = ultralytics.__version__
    try:
        parts = tuple(int(p) for p in version.split("+")[0].split(".")[:3])
    except ValueError as exc:
        raise RuntimeError(f"cannot parse the Ultralytics version {version!r}") from exc
    lo, hi = SUPPORTED_ULTRALYTICS
    if not lo <= parts < hi:
        raise RuntimeError(
            f"yolo-gradkit supports ultralytics>={'.'.join(map(str, lo))},<{'.'.join(map(str, hi))}, "
            f"found {version}: gradkit replaces BaseTrainer.optimizer_step and must be re-checked "
            "against a new trainer before use"
        )
    return version


