"""gradkit's augmentation stages inside Ultralytics' training dataset pipeline, and the preview."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradkit.augment.affine_boxes import affine_survivors
from gradkit.augment.copy_paste import paste_defects
from gradkit.config import ULTRALYTICS_AUGMENT_KEYS, ConfigError, GradkitConfig
from gradkit.integrations.ultralytics.seams import (
    dataset_augmentation,
    edit_albumentations_stage,
    install_dataset_transforms,
    replace_affine_box_filter,
    seed_stock_albumentations,
    stock_check_det_dataset,
)
from gradkit.integrations.ultralytics.version import check_ultralytics_version

__all__ = ["CLASS_COLOURS", "AlbumentationsStage", "CopyPasteStage", "compose_preview", "describe_augmentation",
           "install_augmentation", "preview_augmentation", "seeded_sample"]

#: Okabe-Ito colours (BGR), one per class, cycled: colour-blind safe.
CLASS_COLOURS = [(0, 159, 230), (233, 180, 86), (115, 158, 0), (66, 228, 240), (178, 114, 0), (0, 94, 213),
                 (167, 121, 204)]
PREVIEW_TILE_PX = 256  # tiles smaller than this are upscaled (nearest-neighbour) to stay legible
PREVIEW_GAP_PX = 6


class AlbumentationsStage:
    """Replaces Ultralytics' ``Albumentations`` stage: gradkit's validated pipeline with box filtering.

    Unlike the stock stage, a sample whose boxes were all removed by a crop becomes a clean
    background sample (transformed image, no labels) instead of keeping stale labels.
    """

    def __init__(self, aug_cfg):
        from gradkit.augment.pipeline import build_runner

        self.runner = build_runner(aug_cfg)

    def __call__(self, labels: dict) -> dict:
        if self.runner is None:
            return labels
        if self.runner.seed != torch.initial_seed():  # each dataloader worker its own stream
            self.runner.set_random_seed(torch.initial_seed())
        from ultralytics.utils.instance import Instances

        img = labels["img"]
        h, w = img.shape[:2]
        inst = labels["instances"]
        if len(inst.segments):
            raise ValueError("gradkit augmentation handles box labels only; this dataset has segments")
        inst.convert_bbox("xywh")
        inst.normalize(w, h)
        boxes = np.clip(inst.bboxes, 0.0, 1.0) if len(inst.bboxes) else np.zeros((0, 4), np.float32)
        one_channel = img.ndim == 3 and img.shape[2] == 1  # a channels: 1 dataset: Albumentations takes it as 2-D
        out = self.runner(image=img[..., 0] if one_channel else img, bboxes=boxes,
                          class_labels=labels["cls"].reshape(-1))
        new_boxes = np.array(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels["img"] = out["image"][..., None] if one_channel else out["image"]
        labels["cls"] = np.array(out["class_labels"], dtype=np.float32).reshape(-1, 1)
        labels["instances"] = Instances(new_boxes, segments=inst.segments[:0], bbox_format="xywh", normalized=True)
        return labels


class CopyPasteStage:
    """Ultralytics labels-dict adapter of :func:`gradkit.augment.paste_defects`."""

    def __init__(self, dataset, cp_cfg):
        import random

        from gradkit.augment.copy_paste import DefectBank
        from gradkit.integrations.ultralytics.validation import label_image_hw

        self.p, self.cfg = cp_cfg.p, cp_cfg
        self.dataset = dataset  # its imgsz is read at each paste: size.final_scale changes it mid-run
        self.gray = dataset.data.get("channels", 3) == 1  # sources read as the dataset reads its images
        boxes, classes = [], []
        for lab in dataset.labels:
            b = np.asarray(lab["bboxes"], dtype=np.float32).reshape(-1, 4)
            boxes.append(np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1))
            classes.append(np.asarray(lab["cls"]).reshape(-1))
        files = [lab["im_file"] for lab in dataset.labels]
        self.files = files
        # Ultralytics resizes each image's long side to imgsz: a source's pixels scale by its own size
        self.long_sides = [max(label_image_hw(lab)) for lab in dataset.labels]
        self.bank = DefectBank(boxes, classes, self._load, len(dataset.data["names"]), cp_cfg.class_weights,
                               cp_cfg.rare_first)
        if cp_cfg.min_defect_share > 0:  # once, before the workers fork: every worker gets the screened bank
            _log_screening(self.bank.screen(cp_cfg.min_defect_share, cp_cfg.margin), dataset.data["names"],
                           cp_cfg.min_defect_share)
        self.rng = random  # Ultralytics seeds Python's RNG per worker

    def _load(self, i: int) -> np.ndarray:
        import cv2

        img = cv2.imread(self.files[i], cv2.IMREAD_GRAYSCALE if self.gray else cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"copy-paste source image not readable: {self.files[i]}")
        return img[..., None] if img.ndim == 2 else img

    def _scale(self, source: int) -> float:
        return self.dataset.imgsz / self.long_sides[source]

    def __call__(self, labels: dict) -> dict:
        if self.p <= 0 or self.rng.random() >= self.p:
            return labels
        from ultralytics.utils.instance import Instances

        img = labels["img"]
        h, w = img.shape[:2]
        inst = labels["instances"]
        inst.convert_bbox("xyxy")
        inst.denormalize(w, h)
        new_img, boxes, cls = paste_defects(img, inst.bboxes, labels["cls"].reshape(-1), self.bank, self.rng,
                                            self.cfg.max_per_image, self.cfg.margin, scale=self._scale,
                                            contrast=self.cfg.contrast, d4=self.cfg.d4)
        labels["img"] = new_img
        labels["cls"] = cls.astype(np.float32).reshape(-1, 1)
        labels["instances"] = Instances(boxes, segments=inst.segments[:0], bbox_format="xyxy", normalized=False)
        return labels


def _log_screening(counts: dict[int, tuple[int, int]], names: dict, min_share: float) -> None:
    """One line of what copy-paste kept; a warning for a class it can no longer paste at all."""
    from ultralytics.utils import LOGGER

    kept = ", ".join(f"{names[c]} {k}/{k + r}" for c, (k, r) in counts.items() if k + r)
    LOGGER.info(f"gradkit: copy-paste keeps {kept} defects (the others would paste mostly their background's "
                f"texture: augment.copy_paste.min_defect_share={min_share})")
    lost = [names[c] for c, (k, r) in counts.items() if r and not k]
    if lost:
        LOGGER.warning(f"gradkit: copy-paste will not paste {', '.join(lost)}: no instance stands out from its "
                       f"background enough (augment.copy_paste.min_defect_share={min_share}; 0 pastes every defect)")


def trained_hyps(args, overrides: dict[str, float]) -> dict[str, float]:
    """The value each hyp the config sets trains with: the config's where ``args`` (the trainer's, or the dataset's
    hyp) holds Ultralytics' default (what a ``model.train()`` call left unset looks like; ``gradkit train`` has put
    the values typed for yolo into the config), else the one given to Ultralytics."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {k: v if getattr(args, k, None) == DEFAULT_CFG_DICT.get(k) else getattr(args, k)
            for k, v in overrides.items()}


def _apply_hyp(hyp, overrides: dict[str, float]):
    """A copy of the dataset hyp with the values that train (:func:`trained_hyps`)."""
    from copy import copy

    hyp = copy(hyp)
    for k, v in trained_hyps(hyp, overrides).items():
        setattr(hyp, k, v)
    return hyp


def resolve_auto_augment(aug_cfg, data: dict, data_yaml: str, kept: dict | None = None):
    """``aug_cfg`` with ``preset: auto`` resolved on the training split Ultralytics resolved (``data``, the
    dict of ``check_det_dataset``: its ``train`` places and ``names``), and what was chosen (``configured``,
    ``used``, ``reason``); any other preset unchanged, with None. ``kept``: the choice a resumed run made
    when it started (reused, so the list never changes mid-run). A split that cannot be measured gets the
    largest list, and says why."""
    from gradkit.augment.pipeline import AUTO_CHOICES
    from gradkit.data.fingerprint import fingerprint_dataset
    from gradkit.plan import resolve_auto_preset

    if aug_cfg.preset != "auto":
        return aug_cfg, None
    if kept and kept.get("used") in AUTO_CHOICES:  # a state file is untrusted: only a known list is reused
        reason = f"kept from the start of the run: {kept.get('reason')}"
        return aug_cfg.model_copy(update={"preset": kept["used"]}), {**kept, "configured": "auto", "reason": reason}
    train, names = data.get("train"), data.get("names")
    try:
        if not train or not isinstance(train, str | list):
            raise ValueError(f"train is {train!r}, not an image folder, a list file or a list of them")
        names = {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else None
        fp = fingerprint_dataset(data.get("yaml_file") or data_yaml, "train", split_places=train, names=names)
        resolved, reason = resolve_auto_preset(aug_cfg, fp)
    except (ValueError, OSError) as exc:  # not hidden: the log and gradkit_summary.json say it
        resolved = aug_cfg.model_copy(update={"preset": AUTO_CHOICES[-1]})
        reason = f"the training split could not be measured ({exc}): the {resolved.preset} list, auto's fallback"
    return resolved, {"configured": "auto", "used": resolved.preset, "reason": reason}


def install_augmentation(dataset, aug_cfg, hyp, training: bool = True) -> None:
    """Make the dataset build gradkit's stages on every (re)build of its transforms.

    Ultralytics rebuilds transforms at ``close_mosaic`` and rebuilds the whole dataset after an OOM
    retry; patching ``build_transforms`` on the instance covers the first, calling this again on
    the new dataset (idempotent) covers the second.
    """
    if dataset_augmentation(dataset) is aug_cfg:
        return
    stage = AlbumentationsStage(aug_cfg)
    min_visibility = aug_cfg.bbox.min_visibility

    def keep_box(warped, clipped):  # Ultralytics' warp keeps a box while enough of it is in view, whatever its shape
        return affine_survivors(warped, clipped, min_visibility)

    paste = CopyPasteStage(dataset, aug_cfg.copy_paste) if aug_cfg.copy_paste.p > 0 else None
    replace_stock = aug_cfg.preset != "none" or bool(aug_cfg.transforms)

    def build(stock_build, hyp):
        compose = stock_build(_apply_hyp(hyp, aug_cfg.ultralytics) if hyp is not None else hyp)
        compose = replace_affine_box_filter(compose, dataset, keep_box)  # raises if the warp's filter changed
        return edit_albumentations_stage(compose, dataset, AlbumentationsStage,  # raises if the stage is gone
                                         replace_with=stage if replace_stock else None, insert_before=paste)

    install_dataset_transforms(dataset, build, hyp, aug_cfg)
    from ultralytics.utils import LOGGER

    LOGGER.info(f"gradkit: training augmentation: {describe_augmentation(aug_cfg)}")
    kept = {k: getattr(hyp, k) for k, v in trained_hyps(hyp, aug_cfg.ultralytics).items()
            if hyp is not None and getattr(hyp, k, None) != v}
    if kept and training:  # the first file a user opens says otherwise (a preview writes no args.yaml)
        LOGGER.info(f"gradkit: args.yaml keeps {', '.join(f'{k}={v:g}' for k, v in kept.items())}; the config's "
                    "values train (gradkit_summary.json's as_run). From Python, a value passed to model.train() "
                    "that equals Ultralytics' default cannot win: set it in the gradkit config")


def _transform_name(t: Any) -> str:
    if isinstance(t, dict):
        inner = t.get("transform", t)
        name = inner.get("__class_fullname__") if isinstance(inner, dict) else None
        return str(name).rsplit(".", 1)[-1] if name else "transform"
    return str(t)


#: What a gradkit transform list stands in for, as the log and the preview's title say it.
REPLACED = "Ultralytics' Albumentations stage (the transforms its 'albumentations:' log line lists do not run)"


def describe_augmentation(aug_cfg) -> str:
    """The active augmentation in one line: preset, transforms, copy-paste p, Ultralytics hyp. Ultralytics
    logs its own ``albumentations:`` line (Blur, MedianBlur, ...) when it builds the stage gradkit then
    replaces, so the line says that those do not run."""
    parts = [f"preset {aug_cfg.preset}"] if aug_cfg.preset != "none" else []
    if isinstance(aug_cfg.transforms, str):
        parts.append(f"transforms from {aug_cfg.transforms}")
    elif aug_cfg.transforms:
        parts.append("transforms " + ", ".join(_transform_name(t) for t in aug_cfg.transforms))
    parts = [" + ".join(parts) + f" in place of {REPLACED}"] if parts else ["Ultralytics' stock Albumentations stage"]
    if aug_cfg.copy_paste.p > 0:
        turned = ", each turned or mirrored (d4)" if aug_cfg.copy_paste.d4 else ""
        parts.append(f"copy-paste p={aug_cfg.copy_paste.p:g} (at most {aug_cfg.copy_paste.max_per_image} per image"
                     f"{turned})")
    if aug_cfg.ultralytics:
        parts.append("Ultralytics hyp " + ", ".join(f"{k}={v:g}" for k, v in aug_cfg.ultralytics.items()))
    return "; ".join(parts)


def _wrap(text: str, width_px: int, font, scale: float) -> list[str]:
    import cv2

    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}".strip()
        if line and cv2.getTextSize(trial, font, scale, 1)[0][0] > width_px:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def _text_band(lines: list[str], width: int, font, scale: float, line_px: int) -> np.ndarray:
    import cv2

    band = np.full((line_px * len(lines) + 8, width, 3), 255, np.uint8)
    for k, text in enumerate(lines):
        cv2.putText(band, text, (8, 4 + line_px * (k + 1) - 6), font, scale, (30, 30, 30), 1, cv2.LINE_AA)
    return band


def _legend(names: dict[int, str], width: int) -> np.ndarray:
    """Class colour swatches and names, wrapped over as many rows as needed."""
    import cv2

    font, scale, row_px = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 24
    items = [(CLASS_COLOURS[c % len(CLASS_COLOURS)], str(n)) for c, n in sorted(names.items())]
    rows, x, row = [[]], 8, 0
    for colour, name in items:
        w = 22 + cv2.getTextSize(name, font, scale, 1)[0][0] + 16
        if x + w > width and rows[-1]:
            rows.append([])
            x = 8
        rows[-1].append((x, colour, name))
        x += w
    band = np.full((row_px * len(rows) + 6, width, 3), 255, np.uint8)
    for row, entries in enumerate(rows):
        y = 4 + row * row_px
        for x0, colour, name in entries:
            cv2.rectangle(band, (x0, y + 4), (x0 + 16, y + 18), colour, -1)
            cv2.putText(band, name, (x0 + 22, y + 17), font, scale, (30, 30, 30), 1, cv2.LINE_AA)
    return band


def compose_preview(tiles: list[np.ndarray], boxes: list[list[tuple[int, float, float, float, float]]],
                    names: dict[int, str], title: str) -> np.ndarray:
    """The preview sheet: a title naming the pipeline, tiles separated by white gaps with a dark outline, boxes
    in per-class colours labelled inside their tile, and a class legend. ``boxes`` per tile: (class, x0, y0, x1,
    y1) normalised. Outlines and labels stay off the box (the outline in the gap at a tile's edge), so a 1 px
    scratch inside it stays visible."""
    import math

    import cv2

    size = max(max(t.shape[:2]) for t in tiles)
    f = max(1, math.ceil(PREVIEW_TILE_PX / size))
    drawn = []
    for tile in tiles:
        if tile.ndim == 2 or tile.shape[2] == 1:  # a channels: 1 dataset: shown gray, boxes in colour
            tile = cv2.cvtColor(tile.reshape(tile.shape[:2]), cv2.COLOR_GRAY2BGR)
        drawn.append(cv2.resize(tile, (tile.shape[1] * f, tile.shape[0] * f), interpolation=cv2.INTER_NEAREST))
    cols = math.ceil(math.sqrt(len(drawn)))
    rows = math.ceil(len(drawn) / cols)
    th, tw = drawn[0].shape[:2]
    g = PREVIEW_GAP_PX
    grid = np.full((rows * (th + g) + g, cols * (tw + g) + g, 3), 255, np.uint8)
    for k, (t, tile_boxes) in enumerate(zip(drawn, boxes, strict=True)):
        r, c = divmod(k, cols)
        top, left = g + r * (th + g), g + c * (tw + g)
        h, w = min(th, t.shape[0]), min(tw, t.shape[1])
        grid[top:top + h, left:left + w] = t[:h, :w]
        cv2.rectangle(grid, (left - 1, top - 1), (left + w, top + h), (60, 60, 60), 1)  # in the gap
        _draw_boxes(grid, top, left, h, w, tile_boxes, names)
    font = cv2.FONT_HERSHEY_SIMPLEX
    header = _text_band(_wrap(title, grid.shape[1] - 16, font, 0.55), grid.shape[1], font, 0.55, 22)
    return np.concatenate([header, grid, _legend(names, grid.shape[1])], 0)


#: Where a preview box's outline lies: this many 1 px rings just outside the box.
OUTLINE_RINGS = 2


def _draw_boxes(grid: np.ndarray, top: int, left: int, h: int, w: int, tile_boxes, names: dict[int, str]) -> None:
    """A tile's boxes on the sheet (the tile at ``top``, ``left``, ``h`` x ``w``): outlined outside the box, into the
    gap at the tile's edge; labelled inside the tile and off the box where it has room (:func:`_label_anchor`)."""
    import cv2

    from gradkit.report.render import draw_label

    tile = grid[top:top + h, left:left + w]  # a view: labels drawn here stay inside the tile
    labels = []
    for c, x0, y0, x1, y1 in tile_boxes:
        colour = CLASS_COLOURS[int(c) % len(CLASS_COLOURS)]
        bx0, by0 = max(0, round(x0 * w)), max(0, round(y0 * h))  # a box reaching past the tile: its part inside
        bx1, by1 = min(w - 1, max(bx0, round(x1 * w) - 1)), min(h - 1, max(by0, round(y1 * h) - 1))
        for ring in range(1, OUTLINE_RINGS + 1):
            cv2.rectangle(grid, (left + bx0 - ring, top + by0 - ring), (left + bx1 + ring, top + by1 + ring),
                          colour, 1)
        text = str(names.get(int(c), str(int(c))))
        labels.append((text, *_label_anchor(text, (bx0, by0, bx1, by1), h, w), colour))
    for text, x, y, colour in labels:
        draw_label(tile, text, x, y, colour)


def _label_anchor(text: str, box: tuple[int, int, int, int], h: int, w: int) -> tuple[int, int]:
    """Where :func:`draw_label` puts ``text`` for a box (its first and last pixels) in an ``h`` x ``w`` tile: above its
    outline, else below it, else beside it (right, then left) at its top, else over the box's top (a box as large as
    the tile leaves no room outside)."""
    from gradkit.report.render import label_size

    x0, y0, x1, y1 = box
    lw, lh = label_size(text)
    gap = OUTLINE_RINGS + 1
    if y0 - gap - lh >= 0:
        return x0 - OUTLINE_RINGS, y0 - gap
    if y1 + gap + lh < h:  # draw_label's box ends on its anchor row: this puts it below the box's outline
        return x0 - OUTLINE_RINGS, y1 + gap + lh
    beside = min(y0 + lh - 1, h - 1)  # from the box's top row, kept in the tile
    if x1 + gap + lw <= w:
        return x1 + gap, beside
    if x0 - gap - lw >= 0:
        return x0 - gap - lw, beside
    return x0, y0


@contextmanager
def _seeded_globals(seed: int):
    """Seed Python's, numpy's and torch's global generators for a block, then put their states back,
    so a preview is reproducible and leaves the caller's random streams where they were."""
    import random

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def seeded_sample(dataset, i: int, seed: int) -> dict:
    """Training sample ``i`` as the generators seeded with ``seed`` draw it: the global ones Ultralytics'
    stages use, and the private one of its stock Albumentations stage where that stage runs."""
    with _seeded_globals(seed):
        seed_stock_albumentations(dataset, seed)
        return dataset[i]


#: The Ultralytics hyps ``gradkit augment`` takes beside its own arguments: those its training dataset builds its
#: pipeline from (``v8_transforms``), so the preview shows a run started with them.
PREVIEW_HYPS = (*ULTRALYTICS_AUGMENT_KEYS, "mosaic", "mixup", "cutmix", "copy_paste", "copy_paste_mode", "bgr")


def preview_augmentation(data_yaml: str, cfg: GradkitConfig, n: int = 16, out: str | Path = "preview.jpg",
                         imgsz: int = 640, seed: int = 0, hyps: dict[str, Any] | None = None) -> Path:
    """A grid of ``n`` training samples with boxes, from exactly the pipeline training builds; ``hyps``: Ultralytics
    augmentation hyps given to yolo (:data:`PREVIEW_HYPS`), which win over the config's as they do in training."""
    with _seeded_globals(seed):  # building the dataset draws from them too
        return _preview(data_yaml, cfg, n, out, imgsz, seed, hyps or {})


def preview_dataset(data_yaml: str, cfg: GradkitConfig, imgsz: int, seed: int, hyps: dict[str, Any]):
    """The training dataset ``gradkit train`` would build, with its augmentation, and what ``auto`` chose."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset

    from gradkit.integrations.ultralytics.datasets import install_dataset_guard, resolve_dataset

    unknown = sorted(set(hyps) - set(PREVIEW_HYPS))
    if unknown:
        raise ConfigError(f"gradkit augment takes Ultralytics' augmentation hyps ({', '.join(PREVIEW_HYPS)}) beside "
                          f"its own arguments, not {', '.join(unknown)}")
    cfg, _ = cfg.with_given_hyps(hyps)  # typed values win over the config's, as in gradkit train
    check_ultralytics_version()
    install_dataset_guard(cfg.data.allow_download)
    data = (stock_check_det_dataset()(data_yaml) if cfg.data.allow_download
            else resolve_dataset(data_yaml, required=("train",)))
    args = get_cfg(overrides={"imgsz": imgsz, "data": data_yaml, "mode": "train", "seed": seed, **hyps})
    dataset = build_yolo_dataset(args, data["train"], 16, data, mode="train")
    aug, choice = resolve_auto_augment(cfg.augment, data, data_yaml)  # as training resolves it
    if choice:
        from ultralytics.utils import LOGGER

        LOGGER.info(f"gradkit: augment.preset auto -> {choice['used']}: {choice['reason']}")
    if aug.active:
        install_augmentation(dataset, aug, args, training=False)
    return dataset, aug, choice, data


def _preview(data_yaml: str, cfg: GradkitConfig, n: int, out: str | Path, imgsz: int, seed: int,
             hyps: dict[str, Any]) -> Path:
    import random

    import cv2

    dataset, aug, choice, data = preview_dataset(data_yaml, cfg, imgsz, seed, hyps)
    tiles, boxes = [], []
    names = {int(k): str(v) for k, v in data["names"].items()}
    for i in random.Random(seed).sample(range(len(dataset)), min(n, len(dataset))):
        item = seeded_sample(dataset, i, seed + i)
        tiles.append(np.ascontiguousarray(item["img"].numpy().transpose(1, 2, 0)[..., ::-1]))  # RGB CHW -> BGR HWC
        boxes.append([(int(c), x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2) for c, (x, y, bw, bh)
                      in zip(item["cls"].reshape(-1).tolist(), item["bboxes"].tolist(), strict=True)])
    pipeline = describe_augmentation(aug) if aug.active else "Ultralytics' stock training pipeline"
    if choice:
        pipeline = f"augment.preset auto -> {choice['used']}; {pipeline}"
    if hyps:
        pipeline += "; given: " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in hyps.items())
    title = (f"gradkit augment: {pipeline}; "
             f"{len(tiles)} training samples of {Path(str(data_yaml)).name}, imgsz {imgsz}, seed {seed}")
    grid = compose_preview(tiles, boxes, names, title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid)
    return out
