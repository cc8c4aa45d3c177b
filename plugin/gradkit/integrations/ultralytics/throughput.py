"""How fast this machine trains a model: seconds per training image, for ``gradkit plan budget=``.

A few optimizer steps of the model on random images with random boxes (Ultralytics' own model and
loss, built from the model YAML; nothing is downloaded or written), timed at ``CALIBRATION_PX`` and
scaled to the asked size by pixels: a convolutional network's work, and its loss's anchors, grow with
the pixel count. Real training also loads, decodes and augments the images; ``DATA_OVERHEAD`` is what
that added on this project's CPU (README, "A short budget buys steps, not pixels").
"""

from __future__ import annotations

import time

import torch

__all__ = ["CALIBRATION_PX", "DATA_OVERHEAD", "calibration_seconds_per_image", "training_seconds_per_image"]

#: The size the timed steps run at (small, so the measurement takes seconds even for a large imgsz).
CALIBRATION_PX = 128
#: Real training seconds per image over the timed model steps' (Ultralytics' data loading and
#: augmentation, the EMA, the progress bar): 1.20, 1.11 and 0.92 on the design, colour and photographed
#: sets on this project's 2-core CPU (benchmarks/plan_estimate.py; their mean, 1.08, rounded). The
#: augmentation moves it.
DATA_OVERHEAD = 1.1
#: Seconds per image at CALIBRATION_PX, per (model yaml, classes, batch, threads) timed in this process.
_CALIBRATED: dict[tuple[str, int, int, int], float] = {}
#: Steps timed after one untimed warm-up step.
TIMED_STEPS = 3


def _fake_batch(batch: int, size: int, nc: int, generator: torch.Generator) -> dict:
    """Random images with two random boxes each, in the form Ultralytics' detection loss reads."""
    boxes = 2 * batch
    xy = torch.rand(boxes, 2, generator=generator) * 0.6 + 0.2
    wh = torch.rand(boxes, 2, generator=generator) * 0.2 + 0.05
    return {"img": torch.rand(batch, 3, size, size, generator=generator),
            "batch_idx": torch.arange(batch).repeat_interleave(2).float(),
            "cls": torch.randint(0, nc, (boxes, 1), generator=generator).float(),
            "bboxes": torch.cat([xy, wh], 1)}


def training_seconds_per_image(model_yaml: str, imgsz: int, nc: int, batch: int = 16,
                               threads: int | None = None, on_cpu: bool = False) -> float | None:
    """Seconds one training image costs at ``imgsz`` on this machine's CPU, with ``threads`` torch threads
    (None: Ultralytics' NUM_THREADS, min(8, cpus - 1), which its CPU training sets in select_device); None
    where a CUDA GPU would train instead (only the CPU is timed), unless the run trains ``on_cpu`` anyway."""
    if torch.cuda.is_available() and not on_cpu:
        return None
    from ultralytics.utils import NUM_THREADS

    threads = threads or NUM_THREADS
    key = (model_yaml, nc, batch, threads)
    if key not in _CALIBRATED:  # timed once per process: the plan asks for several sizes of one model
        callers = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            _CALIBRATED[key] = calibration_seconds_per_image(model_yaml, nc, batch)
        finally:
            torch.set_num_threads(callers)
    return _CALIBRATED[key] * (imgsz / CALIBRATION_PX) ** 2 * DATA_OVERHEAD


def calibration_seconds_per_image(model_yaml: str, nc: int, batch: int = 16) -> float:
    """Seconds per image of the model's training step alone at ``CALIBRATION_PX``, torch's current threads."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    nc = max(nc, 1)  # a dataset without classes costs what one with a class does
    cfg = {**yaml_model_load(model_yaml), "nc": nc}  # nc set in the YAML itself: no "Overriding nc" log line
    with torch.random.fork_rng():  # the caller's random state is not ours to move
        torch.manual_seed(0)
        model = DetectionModel(cfg, nc=nc, verbose=False)
    model.args = get_cfg()  # the loss reads its gains (box, cls, dfl) from here, as in training
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    data = _fake_batch(batch, CALIBRATION_PX, nc, torch.Generator().manual_seed(0))
    seconds = []
    for _ in range(1 + TIMED_STEPS):
        start = time.perf_counter()
        loss, _items = model.loss(data)
        loss.sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:]) / batch  # the least disturbed step: other work on the machine only adds time
