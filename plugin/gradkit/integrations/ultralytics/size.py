"""``size.final_scale``: the training images read at a larger size for the run's last epochs.

Most of the run takes the cheaper steps of the smaller size; its last ``final_share`` of epochs sees thin
defects over more pixels (README, "A larger size for the last epochs"). The switch is due from the epoch index and
Ultralytics' epoch count; the epoch it happened at is kept in gradkit's state file, so a resumed run reads its images
at the final size again from its first epoch and reports where the switch was.
"""

from __future__ import annotations

import math

from gradkit.config import SizeConfig
from gradkit.integrations.ultralytics.seams import resize_training_images, training_images_size, watch_mosaic_closing


def final_size_epoch(epochs: int, share: float) -> int:
    """The first (0-based) epoch of a run of ``epochs`` whose last ``share`` trains at the final size; at least
    the last epoch does. (Rounded before the ceiling: 10 x 0.8 is 8.000000000000002 in floating point.)"""
    return max(0, epochs - max(1, math.ceil(round(epochs * share, 9))))


def final_imgsz(imgsz: int, scale: float, grid: int) -> int:
    """``imgsz`` times ``scale``, rounded half up to a multiple of ``grid`` (never below it)."""
    return max(grid, math.floor(imgsz * scale / grid + 0.5) * grid)


def final_size_clash(args, device_type: str) -> str | None:
    """What in a run's arguments Ultralytics sizes once from imgsz, which the larger images would not fit, with the
    fix (None: nothing): ``rect=True`` batch shapes (a larger image is letterboxed back into them), ``multi_scale``
    (each batch resized around imgsz), an automatic batch on CUDA (chosen for imgsz's memory; on a CPU
    Ultralytics gives 16)."""
    if getattr(args, "rect", False):
        return "rect=True shapes the batches once from imgsz (set rect=False"
    if getattr(args, "multi_scale", 0):
        return f"multi_scale={args.multi_scale} resizes each batch around imgsz (set multi_scale=0"
    batch = float(args.batch)
    if device_type == "cuda" and (batch == -1 or 0 < batch < 1):
        return f"batch={args.batch} sizes the batch for imgsz's memory (give a batch that fits the final size"
    return None


class FinalSize:
    """Switches the training images to the final size, at the start of the epoch that is due, and again after
    anything that rebuilt the dataset at the start size (Ultralytics' first-epoch out-of-memory retry)."""

    def __init__(self, cfg: SizeConfig, trainer, switched_at: int | None = None):
        self.share = cfg.final_share
        self.start_imgsz = int(trainer.args.imgsz)
        # trainer.stride: Ultralytics' grid, the model's largest stride and at least 32 (imgsz is a multiple of it)
        self.imgsz = final_imgsz(self.start_imgsz, cfg.final_scale, int(trainer.stride))
        self.epoch = switched_at  # the (0-based) epoch it switched at; from the state file on a resume
        watch_mosaic_closing(trainer)

    def due(self, trainer) -> bool:
        if self.imgsz == training_images_size(trainer):
            return False
        return self.epoch is not None or int(trainer.epoch) >= final_size_epoch(int(trainer.epochs), self.share)

    def switch(self, trainer) -> None:
        resize_training_images(trainer, self.imgsz)
        if self.epoch is None:
            self.epoch = int(trainer.epoch)

    def as_record(self) -> dict:
        """``gradkit_summary.json``'s ``final_size``: the two sizes and the first epoch (1-based) at the final one
        (None: the run ended before it)."""
        return {"imgsz": self.start_imgsz, "final_imgsz": self.imgsz,
                "from_epoch": None if self.epoch is None else self.epoch + 1}

    def describe(self, epochs: int) -> str:
        return (f"gradkit: size.final_scale: training images read at {self.imgsz} px from epoch {self.epoch + 1} of "
                f"{epochs} (Ultralytics' count then), {self.start_imgsz} px before; validation (each epoch's, "
                f"best.pt's choice, the report's) and the saved weights' imgsz stay {self.start_imgsz}: validate "
                f"the final weights with imgsz={self.imgsz} too")
