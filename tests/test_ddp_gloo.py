"""DDP without GPUs: two gloo processes on CPU, a real DDP-wrapped yolo26n, gradkit's step logic."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_csv

pytestmark = pytest.mark.e2e

WORKER = Path(__file__).parent / "helpers" / "ddp_step_worker.py"
STEPS, NAN_STEP, NAN_RANK = 6, 3, 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(out: Path, mode: str = "grad") -> list[list[dict]]:
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), str(STEPS), str(NAN_STEP),
                                       str(NAN_RANK), mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return [json.loads((out / f"decisions_rank{r}.json").read_text()) for r in range(2)]


def test_two_gloo_ranks_take_identical_decisions_and_only_rank0_writes(tmp_path):
    rank0, rank1 = _run_ranks(tmp_path)
    assert len(rank0) == len(rank1) == STEPS
    # each rank saw its own data ...
    assert all(a["local_loss"] != b["local_loss"] for a, b in zip(rank0, rank1, strict=True))
    # ... and decided from the same all-reduced gradients: equal norms, thresholds, clip and skip counts
    for a, b in zip(rank0, rank1, strict=True):
        for key in ("total_norm", "threshold", "clipped_so_far", "skipped_so_far", "weights_sum", "ema_updates"):
            assert a[key] == b[key] or (key == "total_norm" and math.isnan(a[key]) and math.isnan(b[key])), (
                a["step"], key)
    # the NaN planted on rank 1 only reached rank 0 through the all-reduce and was skipped on both
    skipped = [r["step"] for r, prev in zip(rank0, [{"skipped_so_far": 0}, *rank0], strict=False)
               if r["skipped_so_far"] > prev["skipped_so_far"]]
    assert skipped == [NAN_STEP]
    assert math.isnan(rank0[NAN_STEP - 1]["total_norm"]) and math.isfinite(rank0[NAN_STEP - 1]["weights_sum"])
    assert rank0[NAN_STEP - 1]["ema_updates"] == rank0[NAN_STEP - 2]["ema_updates"]
    assert rank0[-1]["ema_updates"] == STEPS - 1
    # autoclip at the median clipped some steps and not others: the decision was not trivial
    assert 0 < rank0[-1]["clipped_so_far"] < STEPS - 1
    # files: rank 0 wrote the records, rank 1 nothing
    assert list((tmp_path / "save_rank1").iterdir()) == []
    steps = read_csv(tmp_path / "save_rank0" / "gradient_steps.csv")
    assert [int(s["skipped"]) for s in steps] == [int(i + 1 == NAN_STEP) for i in range(STEPS)]
    assert (tmp_path / "save_rank0" / "gradkit.yaml").exists()
    lines = (tmp_path / "save_rank0" / "gradient_alerts.jsonl").read_text().splitlines()
    alerts = [json.loads(x) for x in lines if x.strip()]
    assert [(a["kind"], a["step"], a["layer"]) for a in alerts] == [("nonfinite", NAN_STEP, "10")]


def test_a_nan_loss_on_one_rank_under_amp_is_a_fault_on_every_rank(tmp_path):
    """Rank 1's loss is NaN, rank 0's finite, the all-reduced gradients NaN on both, the loss scale 2**10:
    both ranks must call it a fault (not a GradScaler overflow) and count and alert it alike."""
    rank0, rank1 = _run_ranks(tmp_path, "loss-amp")
    assert math.isfinite(rank0[NAN_STEP - 1]["local_loss"]) and math.isnan(rank1[NAN_STEP - 1]["local_loss"])
    for a, b in zip(rank0, rank1, strict=True):
        for key in ("consecutive_nonfinite", "alert_count", "skipped_so_far", "weights_sum"):
            assert a[key] == b[key], (a["step"], key)
    assert [r["consecutive_nonfinite"] for r in rank0] == [int(i + 1 == NAN_STEP) for i in range(STEPS)]
    lines = (tmp_path / "save_rank0" / "gradient_alerts.jsonl").read_text().splitlines()
    assert ("nonfinite", NAN_STEP) in [(a["kind"], a["step"]) for a in map(json.loads, filter(None, lines))]
