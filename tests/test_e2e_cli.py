"""The ``gradkit`` console script drives the real ``yolo`` CLI with the plugin active."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import read_csv
from gradkit.cli import split_plugin_args
from gradkit.config import ConfigError

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
GRADKIT = str(Path(sys.executable).with_name("gradkit"))


def _run(args, cwd):
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    return subprocess.run([GRADKIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_split_plugin_args_keeps_yolo_args_untouched():
    src, over, rest = split_plugin_args(["train", "data=x.yaml", "gradkit=defect", "gradkit.clip.mode=agc",
                                         "gradkit.clip.clip_factor=0.02", "lr0=0.01", "cos_lr"])
    assert src == "defect"
    assert over == {"clip.mode": "agc", "clip.clip_factor": 0.02}
    assert rest == ["train", "data=x.yaml", "lr0=0.01", "cos_lr"]
    with pytest.raises(ConfigError, match=r"gradkit\.SECTION\.KEY=VALUE"):
        split_plugin_args(["train", "gradkit.clip.mode"])


def test_cli_train_passes_yolo_args_and_activates_plugin(tiny_data, tmp_path):
    proc = _run(["train", "model=yolo26n.yaml", f"data={tiny_data}", "epochs=1", "imgsz=64", "batch=4", "nbs=4",
                 "workers=0", "plots=False", "val=False", "optimizer=SGD", "lr0=0.02", "device=cpu",
                 f"project={tmp_path}", "name=cli", f"gradkit={REPO / 'configs/gradkit/default.yaml'}",
                 "gradkit.clip.mode=norm", "gradkit.clip.max_norm=5"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "cli"
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert (args["optimizer"], args["lr0"], args["imgsz"], args["nbs"]) == ("SGD", 0.02, 64, 4)
    assert not any(k.startswith("gradkit") for k in args)  # plugin config never enters trainer.args
    cfg = yaml.safe_load((run / "gradkit.yaml").read_text())
    assert cfg["clip"] == {**cfg["clip"], "mode": "norm", "max_norm": 5.0}
    steps = read_csv(run / "gradient_steps.csv")
    assert steps and all(float(s["total_norm_clipped"]) <= 5.0 * (1 + 1e-5) for s in steps)


def test_cli_bad_plugin_key_fails_before_training(tiny_data, tmp_path):
    proc = _run(["train", "model=yolo26n.yaml", f"data={tiny_data}", f"project={tmp_path}", "name=bad",
                 "gradkit.clip.mode=agcc"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "clip.mode" in proc.stderr and "gradkit.clip.mode=agcc:" in proc.stderr and "'autoclip'" in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_cli_passes_other_modes_through(tmp_path):
    proc = _run(["version"], cwd=tmp_path)
    assert proc.returncode == 0
    import ultralytics

    assert ultralytics.__version__ in proc.stdout + proc.stderr
