"""Does the plan's timer price a training step at a size it did not time?

``gradkit plan budget=`` times a few training steps at the two ``throughput.CALIBRATION_SIZES`` and reads
any other size off the line through both in the pixel count (``throughput.PixelCost``). Here the same steps
(Ultralytics' model and loss on random images, batch 16, as the timer runs them) are also timed directly at
each size of ``--sizes``, every step of both models timed in turn with the others so that the machine's drift
hits each alike. Printed per model and size: the step's own seconds per image, the line's, and what scaling
the smallest calibration size's step by pixels alone (the timer before session 57) gives, each as a ratio to
the step's own; then the two models' ratio at each size (the width rule's speed-up before the overheads).

    python benchmarks/timer_scaling.py [--threads 1] [--sizes 192,256,320,384,448,512,640]

``--threads``: torch threads (Ultralytics trains on min(8, cpus - 1) on a CPU: one on this project's 2-core
machine). Times one step at a time: run it alone.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch

MODELS = ("yolo26n.yaml", "yolo26n-half.yaml")


def main() -> None:
    from gradkit.integrations.ultralytics import throughput as T

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sizes", default="192,256,320,384,448,512,640")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=T.TIMED_STEPS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sizes = sorted({*T.CALIBRATION_SIZES, *(int(s) for s in args.sizes.split(","))})
    small = T.CALIBRATION_SIZES[0]
    print(f"| model | imgsz | step ms/image | line through {'/'.join(map(str, T.CALIBRATION_SIZES))} px: ms, "
          f"ratio | {small} px scaled by pixels: ms, ratio |\n|---|---|---|---|---|")
    runs = [(model, size) for model in MODELS for size in sizes]
    steps = [T.timed_training_step(*T._model_and_batch(m, args.classes, T.TRAIN_BATCH, s)) for m, s in runs]
    seconds = dict(zip(runs, (t / T.TRAIN_BATCH for t in T.least_disturbed(steps, args.rounds)), strict=True))
    for model in MODELS:
        line = T.PixelCost(T.CALIBRATION_SIZES, tuple(seconds[model, s] for s in T.CALIBRATION_SIZES))
        for size in sizes:
            own, fit, scaled = seconds[model, size], line.at(size), seconds[model, small] * (size / small) ** 2
            print(f"| {model} | {size} | {1000 * own:.1f} | {1000 * fit:.1f}, {fit / own:.2f} | "
                  f"{1000 * scaled:.1f}, {scaled / own:.2f} |", flush=True)
    for size in sizes:
        print(f"{size} px: yolo26n's step / the half width's {seconds[MODELS[0], size] / seconds[MODELS[1], size]:.2f}")


if __name__ == "__main__":
    main()
