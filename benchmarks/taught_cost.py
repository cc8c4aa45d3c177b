"""What ``monitor.taught`` adds to a training step: yolo26n's loss with its assigner's targets recorded, against
Ultralytics' stock loss, and against a whole optimizer step (forward, loss, backward).

    OMP_NUM_THREADS=1 python benchmarks/taught_cost.py [--imgsz 256] [--batch 16] [--boxes 6] [--threads 1]

A batch of random images with ``--boxes`` random boxes of four classes per image; the model is untrained (the
assignment's cost does not depend on what it assigns). Stock and recorded losses take turns in blocks of
``--block`` calls, which one goes first alternating, so a change of load hits both alike; each figure is the
median block mean.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch


def _batch(batch: int, imgsz: int, boxes: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    wh = 0.02 + 0.3 * torch.rand(batch * boxes, 2, generator=g)
    xy = wh / 2 + (1 - wh) * torch.rand(batch * boxes, 2, generator=g)
    return {"img": torch.rand(batch, 3, imgsz, imgsz, generator=g),
            "batch_idx": torch.arange(batch).repeat_interleave(boxes).float(),
            "cls": torch.randint(0, 4, (batch * boxes, 1), generator=g).float(),
            "bboxes": torch.cat([xy, wh], 1)}


def _model():
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", nc=4, verbose=False)
    model.args = get_cfg()
    model.criterion = model.init_criterion()
    return model.train()


def _block_mean(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--boxes", type=int, default=6, help="boxes per image")
    ap.add_argument("--blocks", type=int, default=20)
    ap.add_argument("--block", type=int, default=5, help="calls per block")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from gradkit.config import TaughtConfig
    from gradkit.integrations.ultralytics.taught import TeachingWatch

    batch = _batch(args.batch, args.imgsz, args.boxes)
    stock, recorded = _model(), _model()
    watch = TeachingWatch(TaughtConfig(), {i: f"class{i}" for i in range(4)})
    watch.install(SimpleNamespace(model=recorded))
    with torch.no_grad():
        preds = stock(batch["img"])

    def loss_of(model):
        with torch.enable_grad():  # as in training: the recorder skips assignments made with gradients off
            return model.criterion(preds, batch)

    def step():
        stock.zero_grad(set_to_none=True)
        stock.loss(batch)[0].sum().backward()

    for _ in range(2):  # warm-up
        loss_of(stock), loss_of(recorded), step()
    times = {"stock loss": [], "recorded loss": []}
    for b in range(args.blocks):
        order = list(times) if b % 2 == 0 else list(reversed(times))
        for name in order:
            model = stock if name == "stock loss" else recorded
            times[name].append(_block_mean(lambda m=model: loss_of(m), args.block))
    steps = [_block_mean(step, 1) for _ in range(max(args.blocks // 4, 3))]
    median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    step_ms = statistics.median(steps) * 1e3
    extra = median["recorded loss"] - median["stock loss"]
    print(f"yolo26n, batch {args.batch} x {args.imgsz} px, {args.boxes} boxes per image, torch threads "
          f"{torch.get_num_threads()}")
    print("| | ms | ratio |\n|---|---|---|")
    print(f"| stock loss (both branches' assignments) | {median['stock loss']:.2f} | 1.00 |")
    print(f"| loss with monitor.taught recording | {median['recorded loss']:.2f} | "
          f"{median['recorded loss'] / median['stock loss']:.3f} |")
    print(f"| a whole step (forward, loss, backward) | {step_ms:.1f} | recording adds {extra / step_ms:+.2%} |")
    print(f"(epoch tally read once: {len(watch.tally.epoch_end())} classes)")


if __name__ == "__main__":
    main()
