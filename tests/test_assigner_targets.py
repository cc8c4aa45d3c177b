"""benchmarks/assigner_targets.py records what Ultralytics' task-aligned assigner hands each box.

Oracle: a hand-made assignment whose answer is known independently: two boxes of one class (a box's record
must come from its own positives, not the class's) on a 96 px grid of stride-8 anchors. One is predicted exactly
at every anchor (best target 1); the other 6 px off, and 2 px off at one anchor (best target: the CIoU of that
box pair, from Ultralytics' ``bbox_iou``; a mean would be lower). The candidate anchors are counted from the
anchor centres by hand, capped at ``topk``.
"""

import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from assigner_targets import record_assignments, table

TOPK = 10
BOX_A = [8.0, 8.0, 40.0, 40.0]  # predicted exactly
BOX_B = [56.0, 56.0, 88.0, 80.0]  # predicted 6 px to the right, at one anchor 2 px
SHIFT, BEST_SHIFT = 6.0, 2.0


def _inside(box, centres):
    x0, y0, x1, y1 = box
    return (centres[:, 0] > x0) & (centres[:, 0] < x1) & (centres[:, 1] > y0) & (centres[:, 1] < y1)


def _case():
    from ultralytics.utils.tal import TaskAlignedAssigner

    c = torch.arange(4.0, 96.0, 8.0)
    centres = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)  # (144, 2) x, y
    pred = torch.zeros(1, len(centres), 4)
    pred[0, _inside(BOX_A, centres)] = torch.tensor(BOX_A)
    in_b = _inside(BOX_B, centres).nonzero().flatten()
    pred[0, in_b] = torch.tensor(BOX_B) + torch.tensor([SHIFT, 0.0, SHIFT, 0.0])
    shifted = torch.tensor(BOX_B) + torch.tensor([BEST_SHIFT, 0.0, BEST_SHIFT, 0.0])
    pred[0, in_b[0]] = shifted
    scores = torch.full((1, len(centres), 2), 0.5)
    labels = torch.tensor([[[1.0], [1.0]]])
    gt = torch.tensor([[BOX_A, BOX_B]])
    mask = torch.ones(1, 2, 1)
    assigner = TaskAlignedAssigner(topk=TOPK, num_classes=2, alpha=0.5, beta=6.0, stride=[8, 16, 32])
    return assigner, (scores, pred, centres, labels, gt, mask), centres, shifted


def test_each_box_s_positives_and_best_target_are_recorded_and_the_assignment_is_unchanged():
    from ultralytics.utils.metrics import bbox_iou

    assigner, args, centres, shifted = _case()
    expected = assigner(*args)
    branch, tally = SimpleNamespace(assigner=assigner), defaultdict(list)
    record_assignments(branch, tally)
    got = branch.assigner.forward(*args)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)  # the wrapper only looks
    ciou = float(bbox_iou(torch.tensor([BOX_B]), shifted[None], xywh=False, CIoU=True).clamp(0))
    assert 0.3 < ciou < 0.95  # the case is not degenerate
    assert set(tally) == {1}
    (pos_a, best_a), (pos_b, best_b) = tally[1]
    assert pos_a == min(TOPK, int(_inside(BOX_A, centres).sum())) == TOPK
    assert pos_b == min(TOPK, int(_inside(BOX_B, centres).sum()))
    assert best_a == pytest.approx(1.0, abs=1e-5)
    assert best_b == pytest.approx(ciou, abs=1e-5)


def test_padding_is_not_counted_and_a_box_nothing_overlaps_is_taught_zero():
    assigner, (scores, pred, centres, labels, gt, mask), _, _ = _case()
    mask[0, 1] = 0  # box B is padding: not an object, not counted
    tally = defaultdict(list)
    branch = SimpleNamespace(assigner=assigner)
    record_assignments(branch, tally)
    branch.assigner.forward(scores, pred, centres, labels, gt, mask)
    assert len(tally[1]) == 1
    empty = torch.zeros(1, len(centres), 4)  # no prediction overlaps either box: CIoU 0 everywhere
    tally.clear()
    branch.assigner.forward(scores, empty, centres, labels, gt, torch.ones(1, 2, 1))
    # positives may still be picked among tied zeros (Ultralytics' topk): whatever they are, their target is 0
    assert [best for _, best in tally[1]] == [0.0, 0.0]
    assert all(0 <= pos <= TOPK for pos, _ in tally[1])


def test_table_summarises_per_class():
    text = table({"pit": [(0, 0.0), (3, 0.02), (2, 0.04)], "stain": [(10, 0.7), (9, 0.5)]})
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    assert rows["pit"] == f"| pit | 3 | 67% | {np.mean([0, 3, 2]):.1f} | 0.020 |"
    assert rows["stain"] == "| stain | 2 | 100% | 9.5 | 0.600 |"


def test_a_truncated_jpeg_is_refused_before_ultralytics_scan_rewrites_it(tmp_path):
    """Planted fault: a JPEG that does not end with its end-of-image marker (bytes after it, as some tools
    write). Ultralytics' label scan re-encodes such a file in place (shown on a copy); the script must stop
    first, with the dataset untouched and no label cache written beside it."""
    import cv2
    from assigner_targets import measure
    from ultralytics.data.utils import verify_image_label

    from gradkit.integrations.ultralytics import DatasetError

    root = tmp_path / "data"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 100, np.uint8))[1].tobytes() + b"\x00\x00"
    image = root / "images" / "train" / "a.jpg"
    image.write_bytes(jpeg)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames: {{0: pit}}\n")
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(jpeg)
    verify_image_label((str(copy), str(root / "labels" / "train" / "a.txt"), "", False, 1, 0, 0, False))
    assert copy.read_bytes() != jpeg  # what the stock scan does to it
    with pytest.raises(DatasetError, match=r"a\.jpg: JPEG not ending with its end-of-image marker"):
        measure(str(tmp_path / "never-loaded.pt"), str(data), 64)
    assert image.read_bytes() == jpeg
    assert sorted(p.name for p in (root / "labels").iterdir()) == ["train"]
