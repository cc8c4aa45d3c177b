"""What Ultralytics' task-aligned assigner teaches a trained detector about each class (no training).

For every ground-truth box the assigner picks up to ``topk`` positive anchors among the candidates inside
the box (a side under the second stride, 16 px for yolo26n, is widened to it for this pick), by
``score^0.5 * CIoU^6``, and hands them a class target, which also weighs their box loss, scaled so that
the best-aligned positive gets the highest CIoU any of the box's positives' predictions has with it. A class
whose predicted boxes overlap its objects poorly is taught a class score near 0, and its boxes are pulled
with a weight near 0: nothing corrects it. This script measures that on a trained model: it runs the
model's own loss on batches of its training split (Ultralytics' stock augmentation, not the run's own,
every random source seeded, batch-norm statistics frozen), records what each branch's assigner returns,
and prints per class the objects seen, the share given any positive, positives per object, and the median
best target (the CIoU the class is taught towards; 1 would be a perfect box). Where no prediction
overlaps a box the assigner may still pick positives among tied zeros: their target is 0.

    python benchmarks/assigner_targets.py RUN/weights/last.pt DATA.yaml --imgsz 256 [--batches N] [--nwd-scale C]

``--nwd-scale C`` scores the same assignments as ``assign.nwd`` with that constant would (the larger of CIoU and
the Wasserstein similarity, C in pixels): what a trained model's predictions would be taught under it.

The weights and data of ``benchmarks/defect_quality.py`` runs are in its ``--out`` folder
(``runs/NAME/weights/last.pt``, ``data/SET-IMAGES-IMGSZ/data.yaml``). The dataset is checked as ``gradkit train``
checks it first: Ultralytics' label scan would re-encode a truncated JPEG in place.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

BATCH = 16  # images per batch, as the evaluation runs train


def record_assignments(branch, tally: dict) -> None:
    """Wrap ``branch.assigner.forward`` so each call adds, per ground-truth box, its class, its number of
    positives and its best target score to ``tally[class]``."""
    forward = branch.assigner.forward

    def recording(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **extra):
        out = forward(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **extra)
        _, _, target_scores, fg_mask, target_gt_idx = out
        for b, j in mask_gt.squeeze(-1).bool().nonzero().tolist():
            cls = int(gt_labels[b, j])
            positives = fg_mask[b] & (target_gt_idx[b] == j)
            best = float(target_scores[b, positives, cls].max()) if positives.any() else 0.0
            tally[cls].append((int(positives.sum()), best))
        return out

    branch.assigner.forward = recording


def measure(weights: str, data_yaml: str, imgsz: int, batches: int | None = None, seed: int = 0,
            nwd_scale: float | None = None) -> dict[str, dict]:
    """Per loss branch, per class name: ``[(positives, best target), ...]`` over ``batches`` training batches
    (None: one pass over the training split); with ``nwd_scale``, assigned as ``assign.nwd`` assigns."""
    from ultralytics import YOLO
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_dataloader, build_yolo_dataset
    from ultralytics.utils.torch_utils import init_seeds

    from gradkit.integrations.ultralytics import check_before_training
    from gradkit.integrations.ultralytics.datasets import install_dataset_guard, resolve_dataset

    install_dataset_guard()  # no download: code; no label cache read (a pickle) or written into the data
    check_before_training(data_yaml)  # truncated images refused before Ultralytics' scan rewrites them
    init_seeds(seed, deterministic=True)  # python, numpy and torch: the augmentation draws from all three
    yolo = YOLO(weights)
    model = yolo.model.float()
    data = resolve_dataset(data_yaml, required=("train",))
    model.args = get_cfg(overrides={"imgsz": imgsz, "data": data_yaml})
    stride = int(max(model.stride))
    dataset = build_yolo_dataset(model.args, data["train"], BATCH, data, mode="train", stride=stride)
    loader = build_dataloader(dataset, BATCH, 0, shuffle=True, rank=-1)
    criterion = model.criterion = model.init_criterion()
    if nwd_scale is not None:
        from types import SimpleNamespace

        from gradkit.integrations.ultralytics.assign import install_nwd_overlap

        install_nwd_overlap(SimpleNamespace(model=model), nwd_scale)
    branches = {name: getattr(criterion, name) for name in ("one2many", "one2one") if hasattr(criterion, name)}
    branches = branches or {"loss": criterion}
    tallies = {name: defaultdict(list) for name in branches}
    for name, branch in branches.items():
        if not callable(getattr(getattr(branch, "assigner", None), "forward", None)):
            raise SystemExit(f"{weights}: its loss ({type(branch).__qualname__}) has no task-aligned assigner to "
                             "measure: a detection model is needed")
        record_assignments(branch, tallies[name])
    model.train()
    for module in model.modules():  # the trained statistics, not these batches'
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    with torch.no_grad():
        for k, batch in enumerate(loader):
            if batches is not None and k == batches:
                break
            batch["img"] = batch["img"].float() / 255
            criterion(model(batch["img"]), batch)
    return {name: {yolo.names[c]: v for c, v in sorted(t.items())} for name, t in tallies.items()}


def table(per_class: dict[str, list]) -> str:
    rows = ["| class | objects | with a positive | positives per object | median best target |",
            "|---|---|---|---|---|"]
    for name, seen in per_class.items():
        positives = np.array([p for p, _ in seen])
        best = np.array([t for _, t in seen])
        rows.append(f"| {name} | {len(seen)} | {np.mean(positives > 0):.0%} | {positives.mean():.1f} | "
                    f"{np.median(best):.3f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights")
    p.add_argument("data")
    p.add_argument("--imgsz", type=int, required=True, help="the size the model was trained at")
    p.add_argument("--batches", type=int, default=None, help="training batches to look at (default: one epoch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nwd-scale", type=float, default=None, help="score as assign.nwd with this constant (px)")
    args = p.parse_args()
    if args.nwd_scale is not None and args.nwd_scale <= 0:
        p.error(f"--nwd-scale must be positive pixels, got {args.nwd_scale:g}")
    from gradkit.integrations.ultralytics import DatasetError

    try:
        measured = measure(args.weights, args.data, args.imgsz, args.batches, args.seed, args.nwd_scale)
    except DatasetError as exc:  # the user's data: one message, no traceback
        raise SystemExit(str(exc)) from None
    for branch, per_class in measured.items():
        seen = "one epoch" if args.batches is None else f"{args.batches} batches"
        print(f"\n{branch} ({seen} of batches of {BATCH}, imgsz {args.imgsz}):\n\n{table(per_class)}")


if __name__ == "__main__":
    main()
