"""``size.final_scale``: the training images read at a larger size for the run's last epochs.

Most of the run takes the cheaper steps of the smaller size; its last ``final_share`` of epochs sees thin
defects over more pixels (README, "A larger size for the last epochs"). Which epoch switches is decided from the
epoch index and Ultralytics' epoch count alone, so a resumed run switches where the first run would have.
"""

from __future__ import annotations

import math

from gradkit.config import SizeConfig
from gradkit.integrations.ultralytics.seams import resize_training_images, watch_mosaic_closing


def final_size_epoch(epochs: int, share: float) -> int:
    """The first (0-based) epoch of a run of ``epochs`` whose last ``share`` trains at the final size; at least
    the last epoch does."""
    return max(0, min(epochs - 1, math.floor(epochs * (1 - share))))


def final_imgsz(imgsz: int, scale: float, stride: int) -> int:
    """``imgsz`` times ``scale``, rounded to a multiple of ``stride`` (never below it)."""
    return max(stride, round(imgsz * scale / stride) * stride)


class FinalSize:
    """Switches the training images to the final size once, at the start of the epoch that is due."""

    def __init__(self, cfg: SizeConfig, trainer):
        self.share = cfg.final_share
        self.start_imgsz = int(trainer.args.imgsz)
        self.imgsz = final_imgsz(self.start_imgsz, cfg.final_scale, int(trainer.stride))  # the largest stride
        self.epoch: int | None = None  # the epoch it switched at
        watch_mosaic_closing(trainer)

    def due(self, epoch: int, epochs: int) -> bool:
        return self.epoch is None and self.imgsz != self.start_imgsz and epoch >= final_size_epoch(epochs, self.share)

    def switch(self, trainer) -> None:
        resize_training_images(trainer, self.imgsz)
        self.epoch = int(trainer.epoch)

    def as_record(self) -> dict:
        """``gradkit_summary.json``'s ``final_size``: the two sizes and the first epoch (1-based) at the final one
        (None: the run ended before it)."""
        return {"imgsz": self.start_imgsz, "final_imgsz": self.imgsz,
                "from_epoch": None if self.epoch is None else self.epoch + 1}

    def describe(self, epochs: int) -> str:
        first = final_size_epoch(epochs, self.share)
        return (f"gradkit: size.final_scale: training images read at {self.imgsz} px from epoch {first + 1} of "
                f"{epochs} (Ultralytics' count at the switch), {self.start_imgsz} px before; validation (each epoch's, "
                f"best.pt's choice, the report's) and the saved weights' imgsz stay {self.start_imgsz}: validate "
                f"the final weights with imgsz={self.imgsz} too")
