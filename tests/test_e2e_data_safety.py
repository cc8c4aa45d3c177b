"""No code from a dataset YAML: its ``download:`` never runs through any gradkit entry point.

The planted fault: a copy of the tiny dataset with one split folder removed and a ``download:`` that
writes a marker file, in Ultralytics' Python form and in its ``bash ...`` form. Stock Ultralytics
runs it (checked through the opt-in, which hands over to Ultralytics); gradkit must not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e
GRADKIT = str(Path(sys.executable).with_name("gradkit"))
TRAIN = ["model=yolo26n.yaml", "epochs=1", "imgsz=64", "batch=4", "nbs=4", "workers=0", "device=cpu",
         "plots=False"]
FORMS = ("python", "bash")


def _run(args, cwd):
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    proc = subprocess.run([GRADKIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _evil_dataset(tiny_data: Path, tmp_path: Path, form: str, missing: str = "val") -> tuple[Path, Path, Path]:
    """A copy of the tiny dataset without its ``missing`` split and with a marker-writing ``download:``.

    Returns (data.yaml, marker, missing folder)."""
    root = tmp_path / "evil"
    shutil.copytree(tiny_data.parent, root)
    shutil.rmtree(root / "images" / missing)
    shutil.rmtree(root / "labels" / missing)
    marker = tmp_path / f"marker-{form}"
    data = yaml.safe_load((root / "data.yaml").read_text())
    data["path"] = str(root)
    data["download"] = (f"open({str(marker)!r}, 'w').write('ran')" if form == "python"
                        else f"bash -c touch${{IFS}}{marker}")  # Ultralytics splits the string on spaces
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml", marker, root / "images" / missing


def _assert_refused(rc: int, out: str, marker: Path, missing: Path, download_note: bool = True):
    assert not marker.exists(), "the YAML's download: ran"
    assert rc != 0, out[-3000:]
    assert str(missing) in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    if download_note:
        assert "download: script is not run" in out, out[-3000:]


@pytest.mark.parametrize("form", FORMS)
def test_opt_in_runs_the_download_as_ultralytics_does(tiny_data, tmp_path, form):
    """The oracle: the planted download is live, and allow_download hands it to Ultralytics."""
    data, marker, _ = _evil_dataset(tiny_data, tmp_path, form)
    _run(["val", "model=yolo26n.yaml", f"data={data}", "imgsz=64", "device=cpu", "gradkit.data.allow_download=true"],
         tmp_path)
    assert marker.exists()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("entry", ["train", "train-nocheck", "val", "predict", "demo", "check", "augment", "report"])
def test_no_entry_point_runs_download(tiny_data, tmp_path, form, entry):
    data, marker, missing = _evil_dataset(tiny_data, tmp_path, form, "test" if entry == "report" else "val")
    image = next((data.parent / "images" / "train").glob("*.png"))
    args = {
        "train": ["train", *TRAIN, f"data={data}", f"project={tmp_path}", "name=r"],
        "train-nocheck": ["train", *TRAIN, f"data={data}", f"project={tmp_path}", "name=r",
                          "gradkit.data.check=false"],
        "val": ["val", "model=yolo26n.yaml", f"data={data}", "imgsz=64", "device=cpu"],
        "predict": ["predict", "model=yolo26n.yaml", f"source={image}", f"data={data}", "imgsz=64", "device=cpu",
                    f"project={tmp_path}", "name=p"],
        # the demo reuses a data_dir whose data.yaml says it holds the synthetic set it would generate
        "demo": ["demo", f"data_dir={data.parent}", "images=24", "imgsz=64", "seed=3", "epochs=1",
                 f"out={tmp_path / 'demo'}"],
        "check": ["check", f"data={data}"],
        "augment": ["augment", f"data={data}", "n=2", "imgsz=64", f"out={tmp_path / 'p.jpg'}"],
        # the end-of-training report evaluates report.split: a missing one is found before training
        "report": ["train", *TRAIN, f"data={data}", f"project={tmp_path}", "name=r", "gradkit.report.split=test",
                   "gradkit.data.check=false"],
    }[entry]
    rc, out = _run(args, tmp_path)
    _assert_refused(rc, out, marker, missing)
    assert not (tmp_path / "r" / "weights" / "last.pt").exists()  # refused before training


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("check", [True, False])
def test_attach_never_runs_download(tiny_data, tmp_path, form, check):
    from ultralytics import YOLO

    import gradkit
    from gradkit.integrations.ultralytics import DatasetError

    data, marker, missing = _evil_dataset(tiny_data, tmp_path, form)
    model = YOLO("yolo26n.yaml")
    gradkit.attach(model, "default", {"data.check": check})
    with pytest.raises(DatasetError, match="download: script is not run") as err:
        model.train(data=str(data), epochs=1, imgsz=64, workers=0, device="cpu", project=str(tmp_path), name="r")
    assert str(missing) in str(err.value) and str(data) in str(err.value)
    with pytest.raises(DatasetError, match=str(missing)):  # the validator of an attached process as well
        model.val(data=str(data), imgsz=64, device="cpu")
    assert not marker.exists()
