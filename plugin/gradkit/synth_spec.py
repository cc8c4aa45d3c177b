"""What ``gradkit synth`` and the evaluation-set generators make: their specs, defaults and checks, apart from
the renderers so that the CLI's usage can show the defaults without importing OpenCV (standard library only)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CLASS_NAMES", "SYNTH_DIR", "SizedSpec", "SynthSpec"]

CLASS_NAMES: tuple[str, ...] = ("scratch", "crack", "pit", "stain")
#: Where ``gradkit synth`` and ``gradkit demo`` write a synthetic set unless told otherwise.
SYNTH_DIR = "datasets/defects-synth"


@dataclass(frozen=True)
class SynthSpec:
    """What to generate.

    Attributes:
        images: Total number of images over all splits.
        imgsz: Side of the square images in pixels.
        seed: Seed of the whole dataset.
        empty_frac: Share of defect-free images.
        class_weights: Relative frequency of each class in ``CLASS_NAMES`` order.
        max_defects: Largest number of defects on one image.
        splits: Fractions of train/val/test; they must sum to 1.
        faint_frac: Share of defects drawn faint, at ``gradkit.synth.FAINT_SCALE`` times their class's contrast:
            about half of those measure as faint (``gradkit.data.standout``: less than half of what stands out in
            their box is theirs), as two in three of the thin defects of two evaluation sets do (README, "And more
            pixels"). Decided by a generator of its own, so the masks, boxes and labels are the same at every
            ``faint_frac``, and a set at 0 has the images and labels it had before this option.
        relief_frac: Share of scratches, cracks and pits drawn as a groove or crater lit from one side (a dark
            and a bright flank, as grooves in metal show under directional light) instead of a darker or brighter
            stroke; their boxes take in both flanks. Stains stay a change of brightness.
        colour_frac: Share of images in colour: the surface tinted (a gain per channel) and each stroke or stain
            in a colour of its own (a relief shows in the surface's). Each of ``relief_frac`` and ``colour_frac``
            is decided by a generator of its own, so a set at 0 has the images and labels it had before it, and
            ``colour_frac`` changes no label.
    """

    images: int = 400
    imgsz: int = 320
    seed: int = 0
    empty_frac: float = 0.15
    class_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    max_defects: int = 3
    splits: tuple[float, float, float] = (0.7, 0.2, 0.1)
    class_names: tuple[str, ...] = field(default=CLASS_NAMES)
    faint_frac: float = 0.0
    relief_frac: float = 0.0
    colour_frac: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self)
        for name in ("faint_frac", "relief_frac", "colour_frac"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 32 <= self.imgsz <= 4096:
            raise ValueError(f"imgsz must be in [32, 4096], got {self.imgsz}")
        if len(self.class_weights) != len(CLASS_NAMES) or min(self.class_weights) < 0 or (
            sum(self.class_weights) <= 0
        ):
            raise ValueError(
                f"class_weights must be {len(CLASS_NAMES)} non-negative numbers for {CLASS_NAMES} "
                f"with a positive sum, got {self.class_weights}"
            )


def _check_common(spec) -> None:
    """The checks every evaluation-set spec shares: a ValueError naming the field and the bad value."""
    if spec.images < 3:
        raise ValueError(f"images must be >= 3 (one per split), got {spec.images}")
    if not 0.0 <= spec.empty_frac < 1.0:
        raise ValueError(f"empty_frac must be in [0, 1), got {spec.empty_frac}")
    if spec.max_defects < 1:
        raise ValueError(f"max_defects must be >= 1, got {spec.max_defects}")
    if len(spec.splits) != 3 or min(spec.splits) < 0 or abs(sum(spec.splits) - 1) > 1e-6:
        raise ValueError(f"splits must be three fractions summing to 1, got {spec.splits}")


@dataclass(frozen=True)
class SizedSpec:
    """What to generate for the ``width`` x ``height`` evaluation sets (``SurfaceSpec``, ``MaterialSpec``,
    ``StripSpec``, ``WeldSpec``, each with its own default size): ``images``, ``seed``, ``empty_frac``,
    ``max_defects`` and ``splits`` as in :class:`SynthSpec`; the classes are ``CLASS_NAMES``."""

    images: int = 400
    width: int = 320
    height: int = 256
    seed: int = 0
    empty_frac: float = 0.2
    max_defects: int = 3
    splits: tuple[float, float, float] = (0.7, 0.2, 0.1)

    def __post_init__(self) -> None:
        _check_common(self)
        if not (64 <= self.width <= 2048 and 64 <= self.height <= 2048):
            raise ValueError(f"width and height must be in [64, 2048], got {self.width} x {self.height}")
