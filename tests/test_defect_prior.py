"""``benchmarks/defect_prior.py``: what a prior carries over into a model built from scratch, checked with
Ultralytics' own loading (``DetectionModel.load``, what ``pretrained=`` calls) on a model with planted weights
(no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import defect_prior as dp  # a benchmark script, found through the path above


def _model(nc: int = 4):
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel("yolo26n.yaml", nc=nc, verbose=False)


def test_the_prior_carries_everything_but_the_class_outputs():
    trained = _model()
    with torch.no_grad():  # planted: every tensor of the "trained" model reads 0.5
        for t in trained.state_dict().values():
            t.fill_(0.5)
    reset = dp.reset_class_outputs(trained, dp.fresh_like(trained))
    # yolo26n's head: three levels, a class branch each in both the one-to-many and the one-to-one head
    assert len(reset) == 12 and all(k.endswith((".weight", ".bias")) for k in reset)
    assert {k.split(".")[2] for k in reset} == {"cv3", "one2one_cv3"}
    target = _model()
    target.load(trained)  # Ultralytics' own transfer, as pretrained= does it
    loaded = target.state_dict()
    for k, v in loaded.items():
        if not v.is_floating_point():
            continue
        planted = bool(torch.all(v == 0.5))
        assert planted == (k not in reset), k  # the class outputs come from the fresh init, the rest transfer
    # a fresh class-output bias is Ultralytics' prior (bias_init), not the planted value
    assert all(not torch.all(loaded[k] == 0.5) for k in reset if k.endswith(".bias"))
