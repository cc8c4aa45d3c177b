"""The architecture's import rules: enforced by lint-imports (make lint), and the rules hold at run time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(package_parent: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
                          cwd=package_parent, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("module", "planted", "contract"), [
    (None, None, None),
    ("config.py", "def _validate():\n    from gradkit.augment.pipeline import build_transforms\n",
     "gradkit.config imports only pydantic and yaml"),
    ("monitor/alerts.py", "def _thresholds():\n    from gradkit.config import AlertsConfig\n",
     "gradkit.monitor uses gradkit.clip only"),
    ("clip.py", "import ultralytics\n", "Pure cores, data code and the planner know nothing of Ultralytics"),
    ("synth.py", "import torch\n", "gradkit.data and the gradkit.synth* generators are pure data code"),
    ("synth_surface.py", "import torch\n", "gradkit.data and the gradkit.synth* generators are pure data code"),
    ("data/check.py", "from gradkit.integrations.ultralytics import attach\n", "Pure cores, data code"),
    ("plan.py", "def _timer():\n    from gradkit.integrations.ultralytics.throughput import DATA_OVERHEAD\n",
     "Pure cores, data code and the planner"),
])
def test_lint_imports_fails_on_a_planted_violation(tmp_path, module, planted, contract):
    assert LINT_IMPORTS.exists(), "import-linter is not installed: `make test` installs the dev extra"
    shutil.copytree(ROOT / "plugin" / "gradkit", tmp_path / "gradkit", ignore=shutil.ignore_patterns("__pycache__"))
    if module:
        with open(tmp_path / "gradkit" / module, "a", encoding="utf-8") as f:
            f.write("\n\n" + planted)
    result = _lint(tmp_path)
    out = result.stdout + result.stderr
    if contract is None:
        assert result.returncode == 0, out
        assert "0 broken" in out
    else:
        assert result.returncode != 0, out
        assert "Broken contracts" in out, out
        assert contract in out.split("Broken contracts", 1)[1], out  # the named rule is among the broken ones


def test_loading_a_config_imports_no_deep_learning_or_image_library():
    code = ("import sys; from gradkit.config import load_config; "
            "load_config('defect', {'augment.transforms': [{'__class_fullname__': 'GaussNoise'}]}); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'cv2', 'albumentations', 'numpy', 'ultralytics', 'matplotlib', 'PIL'}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_bad_transform_fails_at_attach_before_training():
    from ultralytics import YOLO

    import gradkit
    from gradkit.config import ConfigError

    model = YOLO("yolo26n.yaml")
    with pytest.raises(ConfigError) as info:
        gradkit.attach(model, "defect", {"augment.transforms": [{"__class_fullname__": "GaussNoize"}]})
    message = str(info.value)
    assert "from defect with overrides augment.transforms=" in message
    assert "augment.transforms[0]: unknown Albumentations transform 'GaussNoize'; did you mean 'GaussNoise'" in message
    assert not getattr(model, "gradkit", None)  # nothing was attached


def test_cli_train_with_a_bad_transform_exits_2_before_training(tiny_data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin")}
    cmd = [sys.executable, "-m", "gradkit.cli", "train", "model=yolo26n.yaml", f"data={tiny_data}", "epochs=1",
           "imgsz=64", f"project={tmp_path}", "name=run", "gradkit=defect",
           "gradkit.augment.transforms=[{'__class_fullname__': 'GaussNoise', 'std_range': [0.5, 0.1]}]"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "augment.transforms[0]: GaussNoise cannot be built" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
