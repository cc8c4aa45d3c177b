"""Memory and time a rollback snapshot costs, per model size and optimizer.

Builds yolo26{n,s,m}.yaml detection models (no training), gives the optimizer its state with one
step, and measures what `monitor.on_divergence: rollback` keeps: two snapshots (known-good and
candidate) of the model's and the EMA's state dicts and the optimizer state, plus the time to take
one snapshot and to restore it. `--device` picks where the model lives; snapshots go to the host
(`monitor.rollback.device: cpu`) or stay on the model's device (`same`).

    python benchmarks/rollback_cost.py [--scales n,s,m --device cpu]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch


def _timed(fn, repeats: int = 10) -> float:
    """Fastest of ``repeats`` runs in ms: on a shared machine slower runs measure waiting for a core."""
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def measure(scale: str, optimizer: str, device: str, where: str) -> dict:
    from ultralytics.nn.tasks import DetectionModel

    from gradkit.monitor.rollback import SnapshotPair

    model = DetectionModel(f"yolo26{scale}.yaml", nc=4, verbose=False).to(device)
    ema = copy.deepcopy(model).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=0.01, momentum=0.937, nesterov=True) if optimizer == "SGD"
           else torch.optim.AdamW(params, lr=0.001))
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    modules = {"model": model, "ema": ema}
    pair = SnapshotPair(every=1, device="cpu" if where == "cpu" else None)
    for step in (1, 2):  # fills both slots
        pair.after_step(step, lambda snap, at=step: snap.capture(at, modules, opt))
    snap = pair.good()
    n_params = sum(p.numel() for p in model.parameters())
    return {"params": n_params, "bytes": pair.nbytes,
            "capture_ms": _timed(lambda: snap.capture(3, modules, opt)),
            "restore_ms": _timed(lambda: snap.restore(modules, opt))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="n,s,m")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    wheres = ["cpu"] if args.device == "cpu" else ["cpu", "same"]
    print(f"model on {args.device}; two snapshots (known-good + candidate) of model, EMA and optimizer state")
    print(f"{'model':10}{'optimizer':>10}{'snapshots on':>14}{'params (M)':>12}{'memory (MB)':>13}"
          f"{'bytes/param':>13}{'capture (ms)':>14}{'restore (ms)':>14}")
    for scale in args.scales.split(","):
        for optimizer in ("SGD", "AdamW"):
            for where in wheres:
                r = measure(scale, optimizer, args.device, where)
                print(f"{'yolo26' + scale:10}{optimizer:>10}{where:>14}{r['params'] / 1e6:>12.2f}"
                      f"{r['bytes'] / 2**20:>13.1f}{r['bytes'] / r['params']:>13.1f}{r['capture_ms']:>14.1f}"
                      f"{r['restore_ms']:>14.1f}", flush=True)


if __name__ == "__main__":
    main()
