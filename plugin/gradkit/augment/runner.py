"""Runs a transform list on an image with YOLO boxes: cheaply, and with independent random draws.

Four things make the training stage faster than one ``A.Compose`` without changing what it does:

- Albumentations checks and filters the boxes after *every* transform of a box-aware Compose, also
  after photometric ones that cannot move a box. The list is cut after its last spatial transform:
  the head runs box-aware, the image-only tail runs without box processing.
- Inspection images are grayscale, stored as three equal channels. When every transform is known to
  treat channels alike, such an image is augmented on one channel and expanded at the end: a third
  of the pixel work, same result.
- Seeding: ``A.Compose(seed=s)`` seeds every transform with the same ``s``, so their ``p`` draws are
  identical and the transforms fire together (with ``p=0.5`` and ``p=0.5``: both or neither). The
  runner shares one numpy and one Python generator between all transforms instead.
- When the spatial head only permutes pixels (flips, transposes, D4), no box can be cut or lost:
  the transforms are called directly, with Albumentations' box conversion and one filter, instead
  of the box-aware Compose, which validates and filters the boxes on every call (~0.25 ms a sample).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

__all__ = ["CHANNEL_AGNOSTIC", "LOSSLESS", "AugmentRunner", "gray_plane", "treats_channels_alike"]

#: Transforms that treat the channels of an image alike: a 3-channel gray image gives the same result
#: as its single channel, expanded (tested for each, with scalar fill values; a colour fill tuple would
#: be lost on the one-channel path; noise only with ``per_channel`` off). One exception, on purpose:
#: CLAHE equalises a colour image's
#: LAB lightness, and that round trip tints a gray image by a few levels; on one channel it equalises
#: the gray value itself, which is what CLAHE is for.
CHANNEL_AGNOSTIC = frozenset({
    "D4", "HorizontalFlip", "VerticalFlip", "Transpose", "RandomRotate90", "Rotate", "SafeRotate", "Affine",
    "ShiftScaleRotate", "Perspective", "RandomCrop", "CenterCrop", "Crop", "RandomResizedCrop",
    "RandomSizedBBoxSafeCrop", "BBoxSafeRandomCrop", "AtLeastOneBBoxRandomCrop", "RandomScale", "LongestMaxSize",
    "SmallestMaxSize", "Resize", "PadIfNeeded", "RandomBrightnessContrast", "RandomGamma", "Illumination", "CLAHE",
    "GaussNoise", "GaussianBlur", "Blur", "MedianBlur", "MotionBlur", "Defocus", "ImageCompression", "Sharpen",
    "UnsharpMask", "Downscale", "InvertImg", "Equalize", "RandomToneCurve", "NoOp",
})


def treats_channels_alike(transform) -> bool:
    """Whether ``transform`` gives a gray image's three channels the same treatment."""
    return type(transform).__name__ in CHANNEL_AGNOSTIC and not getattr(transform, "per_channel", False)


def gray_plane(image: np.ndarray) -> np.ndarray | None:
    """The single channel of a (H, W, 3) image whose three channels are identical, else None."""
    import cv2

    if image.ndim != 3 or image.shape[2] != 3:
        return None
    b, g, r = cv2.split(image)  # contiguous planes: the comparison below is a vectorised scan
    if cv2.norm(b, g, cv2.NORM_INF) or cv2.norm(b, r, cv2.NORM_INF):
        return None
    return b


#: Spatial transforms that permute pixels: boxes move exactly and are never cut.
LOSSLESS = frozenset({"D4", "HorizontalFlip", "VerticalFlip", "Transpose", "RandomRotate90"})


def _is_spatial(transform) -> bool:
    import albumentations as A

    return not isinstance(transform, A.ImageOnlyTransform)


class AugmentRunner:
    """``transforms`` applied in order to an image and its YOLO boxes, as one ``A.Compose`` would.

    Args:
        transforms: Albumentations transforms (see :func:`gradkit.augment.build_transforms`).
        bbox_params: ``A.BboxParams`` for the spatial head.
        seed: Seed of the shared generators; None draws fresh entropy.
        grayscale_fast_path: Work on one channel when an image's three channels are equal and every
            transform :func:`treats_channels_alike`.
    """

    def __init__(self, transforms: list, bbox_params, seed: int | None = None, grayscale_fast_path: bool = True):
        import albumentations as A

        self.transforms = list(transforms)
        cut = max((i + 1 for i, t in enumerate(self.transforms) if _is_spatial(t)), default=0)
        self.spatial = A.Compose(self.transforms[:cut], bbox_params=bbox_params) if cut else None
        self.photometric = A.Compose(self.transforms[cut:]) if cut < len(self.transforms) else None
        self.grayscale_fast_path = grayscale_fast_path and all(treats_channels_alike(t) for t in self.transforms)
        self.bbox_params = bbox_params
        self.direct_spatial = cut > 0 and all(type(t).__name__ in LOSSLESS for t in self.transforms[:cut])
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int | None) -> None:
        """Reseed: one numpy and one Python generator shared by every transform."""
        self.seed = seed
        rng, py_rng = np.random.default_rng(seed), random.Random(seed)
        for part in (self.spatial, self.photometric):
            if part is not None:
                part.set_random_state(rng, py_rng)

    def __call__(self, image: np.ndarray, bboxes: np.ndarray, class_labels: np.ndarray) -> dict[str, Any]:
        """Augment one sample.

        Args:
            image: (H, W[, C]) uint8 image.
            bboxes: (N, 4) normalised YOLO boxes.
            class_labels: (N,) labels that follow the boxes (dropped with them).

        Returns:
            ``{"image", "bboxes", "class_labels"}`` like ``A.Compose``.
        """
        import cv2

        plane = gray_plane(image) if self.grayscale_fast_path else None
        gray = plane is not None
        work = plane if gray else image
        if self.direct_spatial:
            work, bboxes, class_labels = self._lossless(work, bboxes, class_labels)
        elif self.spatial is not None:
            # force_apply: the Composes themselves have p=1; skipping their draw keeps the random
            # sequence that of a single Compose over the whole list
            out = self.spatial(image=work, bboxes=bboxes, class_labels=class_labels, force_apply=True)
            work, bboxes, class_labels = out["image"], out["bboxes"], out["class_labels"]
        if self.photometric is not None:
            work = self.photometric(image=work, force_apply=True)["image"]
        if gray:
            work = cv2.merge([work, work, work])
        return {"image": work, "bboxes": bboxes, "class_labels": class_labels}

    def _lossless(self, image: np.ndarray, bboxes, class_labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The spatial head called transform by transform, boxes handled as the box-aware Compose does
        (clip, drop invalid, filter once at the end: the same Albumentations functions)."""
        from albumentations.core.bbox_utils import (
            convert_bboxes_from_albumentations,
            convert_bboxes_to_albumentations,
            filter_bboxes,
        )

        bp = self.bbox_params
        labels = np.asarray(class_labels).reshape(-1)
        shape = {"height": image.shape[0], "width": image.shape[1]}
        boxes = convert_bboxes_to_albumentations(np.asarray(bboxes, np.float64).reshape(-1, 4), bp.format, shape)
        boxes = np.concatenate([np.clip(boxes, 0.0, 1.0) if bp.clip else boxes, labels[:, None]], 1)
        if bp.filter_invalid_bboxes:
            boxes = filter_bboxes(boxes, shape, min_area=0, min_visibility=0, min_width=0, min_height=0)
        for transform in self.spatial.transforms:
            out = transform(image=image, bboxes=boxes)
            image, boxes = out["image"], out["bboxes"]
        shape = {"height": image.shape[0], "width": image.shape[1]}
        if len(boxes):
            boxes = filter_bboxes(boxes, shape, min_area=bp.min_area, min_visibility=bp.min_visibility,
                                  min_width=bp.min_width, min_height=bp.min_height,
                                  max_accept_ratio=bp.max_accept_ratio)
        if not len(boxes):  # Albumentations' empty arrays lose the label column
            return image, np.zeros((0, 4)), np.zeros(0)
        return image, convert_bboxes_from_albumentations(boxes[:, :4], bp.format, shape), boxes[:, 4]
