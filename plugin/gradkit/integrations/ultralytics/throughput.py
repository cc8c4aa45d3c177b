"""How fast this machine trains a model: seconds per training and per validation image, for
``gradkit plan budget=``.

A few optimizer steps of the model on random images with random boxes (Ultralytics' own model and
loss, built from the model YAML; nothing is downloaded or written), timed at the two ``CALIBRATION_SIZES``
and drawn as a line through both in the pixel count (``PixelCost``): a convolutional network's work grows with
the pixels, but a model this small also pays per image for what does not (each layer's call, the loss's
assignment of its boxes), a large share at small sizes on a fast CPU. Training steps are timed in the layout the
run will train in (``speed.memory_format``; with ``fastest``, both, and the faster counts). Real training also
loads, decodes and augments the images; ``DATA_OVERHEAD`` is what that added on this project's CPU (README, "The
timer reads two sizes"). Validation, which Ultralytics runs after every epoch and ``time=`` counts, is timed the
same way: the evaluation-mode forward pass and the loss Ultralytics' validator computes during training, at its
batch (twice the training batch); ``VAL_OVERHEAD`` is what loading, post-processing and the metrics added.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "CALIBRATION_SIZES",
    "DATA_OVERHEAD",
    "TRAIN_BATCH",
    "VAL_OVERHEAD",
    "PixelCost",
    "calibration_seconds_per_image",
    "calibration_seconds_per_image_of",
    "calibration_val_seconds_per_image",
    "errors_against_float64",
    "fake_batch",
    "first_step_in_both_layouts",
    "keep_training_threads",
    "layout_step_timers",
    "least_disturbed",
    "timed_training_step",
    "training_seconds_per_image",
    "validation_seconds_per_image",
    "width_family",
]

#: The sizes the timed steps run at: small, so the timing takes seconds even for a large imgsz, and two, so that the
#: cost per image is the line through them in the pixel count (PixelCost). On this project's 2-core CPU (one
#: thread, benchmarks/timer_scaling.py, session 57, two timings) that line came within 0.93-1.05 of steps timed at
#: 192-448 px for yolo26n and at 192-640 px for its half width, where scaling the 128 px step by pixels alone, as
#: the timer did before, read 1.24-1.55x (yolo26n) and 1.40-2.20x (half width) their cost. 384 lies near the
#: geometric middle of the sizes the plan trains at (192 and 640 px: 350); yolo26n's step jumps above the line
#: from 512 px on this CPU (1.0-1.2x it at 512, 1.7-2.0x at 640).
CALIBRATION_SIZES = (128, 384)
#: Real training seconds per image over the timed model steps' (Ultralytics' data loading and
#: augmentation, the EMA, the progress bar), by benchmarks/plan_estimate.py (3 epochs, Ultralytics' default
#: workers and threads, the machine otherwise idle) on the design, colour, photographed and material sets at the
#: plan's sizes (256-352 px), since the timer reads steps off the line through two sizes (session 57): yolo26n
#: 1.04, 1.05, 0.93 and 1.01, its half width 1.31, 1.24, 1.33 and 1.16; pinned to one core beside another run,
#: loading in the training process (workers=0, as benchmarks/defect_quality.py trains), the half width 1.22 and
#: 1.17. The eight default runs' mean, 1.13, rounded: one number, as the width rule compares the two models'
#: seconds, and the half width's excess is within what two timings of its step differ by (its line at 256 px read
#: 26 ms in one run, 30 in another). In the benchmark's runs the half width then made 0.95-1.05 of the steps
#: estimated. Until session 56, timed at 128 px and scaled by pixels, it was 1.1 and real training took 0.72-1.08
#: of the estimate on this project's machines (README, "How good the estimate is"; since then "The timer reads two
#: sizes").
DATA_OVERHEAD = 1.15
#: Real validation seconds per image during training over the timed evaluation passes' (Ultralytics'
#: loading with rect batches, post-processing, the metrics), by the same runs: yolo26n 1.50, 1.16, 0.97 and 0.94,
#: its half width 1.62, 1.33, 1.80 and 1.17 (their mean, 1.31, rounded; 1.6 until session 56, when the passes
#: were scaled from 128 px by pixels).
VAL_OVERHEAD = 1.3
#: Seconds per image (PixelCost), per (what is timed, model yaml, classes, batch, threads, memory layout), timed
#: once in this process.
_CALIBRATED: dict[tuple[str, str, int, int, int, str], PixelCost] = {}
#: Ultralytics' default training batch (``batch`` in its default.yaml), what the plan trains at.
TRAIN_BATCH = 16
#: Steps timed after one untimed warm-up step.
TIMED_STEPS = 3


@dataclass(frozen=True)
class PixelCost:
    """Seconds per image at any size from two timings (``sizes``, ``seconds``, smaller size first): the line
    through both in the pixel count, a fixed part per image plus a part per pixel. Where timing noise makes the
    larger size read no dearer, the larger timing scaled by pixels, never below the smaller timing; where the cost
    grows faster than the pixels (a negative fixed part), the line from the smaller size up, and below it the
    smaller timing scaled by pixels (the line would fall towards zero there)."""

    sizes: tuple[int, int]
    seconds: tuple[float, float]

    def at(self, size: int) -> float:
        (small, large), (t_small, t_large) = self.sizes, self.seconds
        per_pixel = (t_large - t_small) / (large ** 2 - small ** 2)
        fixed = t_small - per_pixel * small ** 2
        if per_pixel <= 0:
            return max(t_small, t_large * (size / large) ** 2)
        if fixed < 0 and size < small:
            return t_small * (size / small) ** 2
        return fixed + per_pixel * size ** 2


def fake_batch(batch: int, size: int, nc: int, generator: torch.Generator) -> dict:
    """Random images with two random boxes each, in the form Ultralytics' detection loss reads."""
    boxes = 2 * batch
    xy = torch.rand(boxes, 2, generator=generator) * 0.6 + 0.2
    wh = torch.rand(boxes, 2, generator=generator) * 0.2 + 0.05
    return {"img": torch.rand(batch, 3, size, size, generator=generator),
            "batch_idx": torch.arange(batch).repeat_interleave(2).float(),
            "cls": torch.randint(0, nc, (boxes, 1), generator=generator).float(),
            "bboxes": torch.cat([xy, wh], 1)}


def training_seconds_per_image(model_yaml: str, imgsz: int, nc: int, batch: int = TRAIN_BATCH,
                               threads: int | None = None, on_cpu: bool = False,
                               memory_format: str = "contiguous") -> float | None:
    """Seconds one training image costs at ``imgsz`` on this machine's CPU, with ``threads`` torch threads
    (None: Ultralytics' NUM_THREADS, min(8, cpus - 1), which its CPU training sets in select_device), in the
    layout ``speed.memory_format`` trains in (``contiguous``: the default, and the plan's), with what the steps
    do not run (DATA_OVERHEAD); None where a CUDA GPU would train instead (only the CPU is timed), unless the
    run trains ``on_cpu`` anyway."""
    cost = _calibrated("train", model_yaml, nc, batch, threads, on_cpu, memory_format)
    return None if cost is None else cost.at(imgsz) * DATA_OVERHEAD


def keep_training_threads(yolo, threads: int) -> None:
    """Make the training steps of ``yolo``'s next ``train()`` run on ``threads`` torch threads on the CPU.
    Ultralytics' CPU training sets torch's threads to its NUM_THREADS (min(8, max(1, cpus - 1))) in select_device,
    after any the caller set, so the count is set again once the trainer is built (``on_pretrain_routine_end``,
    before the first step). The steps alone: the final validation builds a validator that sets NUM_THREADS again,
    as does any later ``val()``, and the process keeps that count after ``train()`` returns."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    yolo.add_callback("on_pretrain_routine_end", lambda trainer: torch.set_num_threads(threads))


def validation_seconds_per_image(model_yaml: str, imgsz: int, nc: int, batch: int = TRAIN_BATCH,
                                 threads: int | None = None, on_cpu: bool = False) -> float | None:
    """Seconds validating one image costs during training at ``imgsz`` (``batch``: the training batch;
    Ultralytics validates at twice it); threads and None as :func:`training_seconds_per_image`."""
    cost = _calibrated("val", model_yaml, nc, 2 * batch, threads, on_cpu)
    return None if cost is None else cost.at(imgsz) * VAL_OVERHEAD


def _calibrated(what: str, model_yaml: str, nc: int, batch: int, threads: int | None, on_cpu: bool,
                memory_format: str = "contiguous") -> PixelCost | None:
    """Seconds per image (PixelCost) of training steps (``train``, in ``memory_format``) or validation passes
    (``val``, always NCHW)."""
    if torch.cuda.is_available() and not on_cpu:
        return None
    from ultralytics.utils import NUM_THREADS

    threads = threads or NUM_THREADS
    key = (what, model_yaml, nc, batch, threads, memory_format)
    if key not in _CALIBRATED:  # timed once per process: the plan asks for several sizes of one model
        callers = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            if what == "train":
                # the plan compares a model with its variants (their ratio decides the width): timed interleaved,
                # so that the machine's drift between two timings cannot tip that choice
                models = width_family(model_yaml)
                seconds = calibration_seconds_per_image_of(models, nc, batch, memory_format)
                _CALIBRATED.update({(what, m, nc, batch, threads, memory_format): PixelCost(CALIBRATION_SIZES, t)
                                    for m, t in zip(models, seconds, strict=True)})
            else:
                _CALIBRATED[key] = PixelCost(CALIBRATION_SIZES,
                                             calibration_val_seconds_per_image(model_yaml, nc, batch))
        finally:
            torch.set_num_threads(callers)
    return _CALIBRATED[key]


def width_family(model_yaml: str) -> list[str]:
    """``model_yaml`` and the models the plan compares it with: the Ultralytics model a gradkit variant is made
    from and every variant made from it (``models.VARIANTS``), that model first; any other model alone."""
    from gradkit.integrations.ultralytics.models import VARIANTS

    base = VARIANTS[model_yaml][0] if model_yaml in VARIANTS else model_yaml
    variants = [name for name, (made_from, _share) in VARIANTS.items() if made_from == base]
    return [base, *variants] if variants else [model_yaml]


def calibration_seconds_per_image(model_yaml: str, nc: int, batch: int = TRAIN_BATCH,
                                  memory_format: str = "contiguous",
                                  sizes: tuple[int, ...] = CALIBRATION_SIZES) -> tuple[float, ...]:
    """Seconds per image of the model's training step alone at each of ``sizes``, torch's current threads, in
    ``memory_format`` (``speed.memory_format``'s values): with ``fastest`` the faster of the two layouts, which
    that setting keeps (``layout.py``). The steps are timed interleaved, each the fastest of TIMED_STEPS after a
    warm-up."""
    return calibration_seconds_per_image_of([model_yaml], nc, batch, memory_format, sizes)[0]


def calibration_seconds_per_image_of(models: list[str], nc: int, batch: int = TRAIN_BATCH,
                                     memory_format: str = "contiguous",
                                     sizes: tuple[int, ...] = CALIBRATION_SIZES) -> list[tuple[float, ...]]:
    """:func:`calibration_seconds_per_image` of each of ``models``, every model's steps at every size in every
    layout timed in turn, so that drift hits each alike."""
    layouts = {"contiguous": (False,), "channels_last": (True,), "fastest": (False, True)}[memory_format]
    steps = []
    for model_yaml in models:
        for size in sizes:
            model, data = _model_and_batch(model_yaml, nc, batch, size)
            steps += [timed_training_step(copy.deepcopy(model), dict(data), channels_last)
                      for channels_last in layouts]
    seconds = least_disturbed(steps)
    fastest = [min(seconds[i:i + len(layouts)]) / batch for i in range(0, len(seconds), len(layouts))]
    return [tuple(fastest[i:i + len(sizes)]) for i in range(0, len(fastest), len(sizes))]


def _training_step(model: torch.nn.Module, data: dict) -> Callable[[], None]:
    """One SGD step of ``model`` on ``data`` with Ultralytics' loss."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        loss, _items = model.loss(data)
        loss.sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _in_layout(model: torch.nn.Module, data: dict, channels_last: bool) -> tuple[torch.nn.Module, dict]:
    if not channels_last:
        return model, data
    return (model.to(memory_format=torch.channels_last),
            {**data, "img": data["img"].contiguous(memory_format=torch.channels_last)})


def timed_training_step(model: torch.nn.Module, data: dict, channels_last: bool = False) -> Callable[[], float]:
    """A callable making one training step (as :func:`calibration_seconds_per_image` times) of ``model`` on
    ``data``, in NHWC if ``channels_last`` (both converted first), and returning its seconds."""
    return _timed(_training_step(*_in_layout(model, data, channels_last)))


def layout_step_timers(model_yaml: str, nc: int, batch: int, size: int) -> tuple[Callable[[], float], ...]:
    """:func:`timed_training_step` of two copies of the model at ``size``, NCHW and NHWC: to be called
    interleaved."""
    return tuple(timed_training_step(*_model_and_batch(model_yaml, nc, batch, size), channels_last)
                 for channels_last in (False, True))


def _outputs_and_gradients(model: torch.nn.Module, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training-mode forward pass's outputs and the gradients of their sum of squares, each as one float64
    vector: a smooth function of the outputs, so no assigner choice can flip between two computations."""
    model.train()
    flat: list[torch.Tensor] = []

    def walk(o) -> None:
        if isinstance(o, torch.Tensor):
            flat.append(o.double().flatten())
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(model(img))
    outputs = torch.cat(flat)
    outputs.pow(2).sum().backward()
    return outputs.detach(), torch.cat([p.grad.double().flatten() for p in model.parameters() if p.grad is not None])


def errors_against_float64(model_yaml: str, nc: int, batch: int, size: int) -> dict[str, tuple[float, float]]:
    """Relative error of the float32 outputs and gradients (:func:`_outputs_and_gradients`) in each layout
    (``contiguous``, ``channels_last``) against the same model computed in float64 NCHW."""
    model, data = _model_and_batch(model_yaml, nc, batch, size)
    ref_out, ref_grad = _outputs_and_gradients(copy.deepcopy(model).double(), data["img"].double())
    errors = {}
    for name, channels_last in (("contiguous", False), ("channels_last", True)):
        copy_, layout_data = _in_layout(copy.deepcopy(model), dict(data), channels_last)
        out, grad = _outputs_and_gradients(copy_, layout_data["img"])
        errors[name] = (float((out - ref_out).norm() / ref_out.norm()),
                        float((grad - ref_grad).norm() / ref_grad.norm()))
    return errors


def first_step_in_both_layouts(model_yaml: str, nc: int, batch: int, size: int):
    """``(loss, gradients)`` of the same model's first training step on the same batch, NCHW then NHWC."""
    out = []
    for channels_last in (False, True):
        model, data = _in_layout(*_model_and_batch(model_yaml, nc, batch, size), channels_last)
        model.train()
        loss, _items = model.loss(data)
        loss.sum().backward()
        out.append((loss.detach(), [p.grad.detach().contiguous() for p in model.parameters() if p.grad is not None]))
    return out


def calibration_val_seconds_per_image(model_yaml: str, nc: int, batch: int,
                                      sizes: tuple[int, ...] = CALIBRATION_SIZES) -> tuple[float, ...]:
    """Seconds per image of what Ultralytics' validator does with the model during training, at each of
    ``sizes`` (timed in turn): the evaluation-mode forward pass and the loss on its predictions, without
    gradients."""
    seconds = least_disturbed([_timed(_validation_pass(*_model_and_batch(model_yaml, nc, batch, size)))
                               for size in sizes])
    return tuple(s / batch for s in seconds)


def _validation_pass(model: torch.nn.Module, data: dict) -> Callable[[], None]:
    model.eval()

    def step() -> None:
        with torch.inference_mode():
            model.loss(data, model(data["img"]))

    return step


def _model_and_batch(model_yaml: str, nc: int, batch: int, size: int) -> tuple[torch.nn.Module, dict]:
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    from gradkit.integrations.ultralytics.models import variant_config

    nc = max(nc, 1)  # a dataset without classes costs what one with a class does
    # nc set in the YAML itself: no "Overriding nc" log line
    cfg = {**(variant_config(model_yaml) or yaml_model_load(model_yaml)), "nc": nc}
    with torch.random.fork_rng():  # the caller's random state is not ours to move
        torch.manual_seed(0)
        model = DetectionModel(cfg, nc=nc, verbose=False)
    model.args = get_cfg()  # the loss reads its gains (box, cls, dfl) from here, as in training
    return model, fake_batch(batch, size, nc, torch.Generator().manual_seed(0))


def least_disturbed(steps: list[Callable[[], float]], rounds: int = TIMED_STEPS) -> list[float]:
    """Seconds of each timed step (a callable returning its own seconds): the fastest of ``rounds`` calls after
    an untimed warm-up, the steps called in turn so that drift hits each alike; other work on the machine only
    adds time."""
    for step in steps:
        step()
    seconds = [[step() for step in steps] for _ in range(rounds)]
    return [min(r[i] for r in seconds) for i in range(len(steps))]


def _timed(step: Callable[[], None]) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    return timed
