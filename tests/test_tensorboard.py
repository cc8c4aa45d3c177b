"""gradkit's epoch summary reaches TensorBoard through Ultralytics' own logger: read back the event files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from conftest import read_csv

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).parent / "helpers" / "tensorboard_run.py"


def test_grad_scalars_in_tensorboard_event_files(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "yolo-config")  # the user's Ultralytics settings stay untouched
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tiny_data), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = tmp_path / "run"
    assert list(run.glob("events.out.tfevents.*")), sorted(p.name for p in run.iterdir())
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"grad/total_norm", "grad/clip_rate", "grad/skipped", "grad/alerts"} <= tags, tags

    # oracle: the per-step records gradkit wrote, summarised independently
    per_epoch: dict[int, list[float]] = defaultdict(list)
    clipped: dict[int, list[bool]] = defaultdict(list)
    for row in read_csv(run / "gradient_steps.csv"):
        per_epoch[int(row["epoch"])].append(float(row["total_norm"]))
        clipped[int(row["epoch"])].append(float(row["total_norm_clipped"]) < float(row["total_norm"]))
    board = {e.step: e.value for e in events.Scalars("grad/total_norm")}
    assert sorted(board) == sorted(per_epoch) == [1, 2]
    for epoch, norms in per_epoch.items():
        assert board[epoch] == pytest.approx(float(np.median(norms)), rel=1e-5)  # the CSV keeps 6 significant digits
    rates = [e.value for e in events.Scalars("grad/clip_rate")]
    assert rates == pytest.approx([np.mean(clipped[1]), np.mean(clipped[2])]) and max(rates) > 0
    assert [e.value for e in events.Scalars("grad/skipped")] == [0.0, 0.0]
