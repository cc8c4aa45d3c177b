"""One rank of the gloo DDP test: gradkit's optimizer step on a DDP-wrapped yolo26n, on CPU.

Run by tests/test_ddp_gloo.py as ``python ddp_step_worker.py OUT_DIR STEPS NAN_STEP NAN_RANK [MODE]`` with
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set. MODE ``grad`` (default) plants NaN gradients in layer 10;
``loss-amp`` plants a NaN loss, under an enabled CPU GradScaler as AMP runs. Ultralytics' DDP launcher
needs CUDA; this runs the same plugin object (events and step) inside a trainer-shaped namespace around real parts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist


def _batch(gen: torch.Generator, n: int = 4, imgsz: int = 64) -> dict[str, torch.Tensor]:
    boxes = torch.rand(n, 2, generator=gen) * 0.5 + 0.25
    wh = torch.rand(n, 2, generator=gen) * 0.2 + 0.05
    return {
        "img": torch.rand(n, 3, imgsz, imgsz, generator=gen),
        "cls": torch.randint(0, 4, (n, 1), generator=gen).float(),
        "bboxes": torch.cat([boxes, wh], 1),
        "batch_idx": torch.arange(n).float(),
    }


def main(out: Path, steps: int, nan_step: int, nan_rank: int, mode: str = "grad") -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.nn.parallel import DistributedDataParallel
    from ultralytics.cfg import get_cfg
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import ModelEMA

    from gradkit.config import load_config
    from gradkit.integrations.ultralytics import GradkitCallback

    torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
    model = DetectionModel("yolo26n.yaml", nc=4, verbose=False)
    model.args = get_cfg()  # the loss reads its gains from the trainer args, as in Ultralytics
    ddp = DistributedDataParallel(model, find_unused_parameters=True)  # as Ultralytics wraps it
    save_dir = out / f"save_rank{rank}"
    save_dir.mkdir(parents=True)
    # Ultralytics' own trainer class without its __init__ (no dataset, no DDP launcher): the plugin finds
    # the stock methods it checks and patches, and the attributes the training loop would have set
    trainer = BaseTrainer.__new__(BaseTrainer)
    vars(trainer).update(
        model=ddp, optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10, enabled=mode == "loss-amp"), ema=ModelEMA(model),
        epoch=0, save_dir=save_dir,
        args=SimpleNamespace(resume=False, data="", nbs=4), batch_size=4, resume=False, lr={}, metrics={},
        loss=None, stop=False)
    cfg = load_config("default", {"clip.mode": "autoclip", "clip.percentile": 50.0, "report.enabled": False,
                                  "monitor.plot": False, "monitor.flush_every": 1})
    plugin = GradkitCallback(cfg)
    plugin.on_pretrain_routine_end(trainer)

    planted = [p for n, p in model.named_parameters() if n.startswith("model.10.")]
    for p in planted:
        p.register_hook(lambda g: g * float("nan") if mode == "grad" and rank == nan_rank
                        and plugin.step + 1 == nan_step else g)

    gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own data
    record = []
    for _ in range(steps):
        ddp.train()
        loss, _items = ddp(_batch(gen))
        trainer.loss = loss.sum()
        if mode == "loss-amp" and rank == nan_rank and plugin.step + 1 == nan_step:
            trainer.loss = trainer.loss * float("nan")
        trainer.scaler.scale(trainer.loss).backward()
        trainer.optimizer_step()
        record.append({
            "step": plugin.step,
            "local_loss": float(trainer.loss),
            "total_norm": plugin._epoch_totals[-1],
            "clipped_so_far": plugin._epoch_clipped,
            "skipped_so_far": plugin._epoch_skipped,
            "threshold": list(plugin.clipper.history)[-1] if plugin.clipper.history else None,
            "weights_sum": float(sum(p.detach().double().sum() for p in model.parameters())),
            "ema_updates": trainer.ema.updates,
            "consecutive_nonfinite": plugin.consecutive_nonfinite,
            "alert_count": plugin.alert_count,
        })
    plugin.on_train_epoch_end(trainer)
    plugin.on_train_end(trainer)
    (out / f"decisions_rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:])
