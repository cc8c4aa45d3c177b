"""Two splits that read the same folder: one finding naming both, never an image "identical to itself", and
``check --fix`` refusing instead of writing a copy whose splits are empty (hand-made set, known answer)."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from gradkit.data import check_dataset, fix_dataset, fix_output

GRADKIT = str(Path(sys.executable).with_name("gradkit"))


def _dataset(tmp_path: Path, val: str = "images/train", test: str | None = None) -> Path:
    root = tmp_path / "ds"
    for i in range(4):
        (root / "images" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / "train" / f"t{i}.png"), np.full((32, 32, 3), 40 * i, np.uint8))
        (root / "labels" / "train" / f"t{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = {"path": str(root), "train": "images/train", "val": val, "names": {0: "scratch"}}
    if test:
        data["test"] = test
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


@pytest.mark.parametrize("images", [True, False])
def test_val_reading_the_train_folder_is_one_finding(tmp_path, images):
    res = check_dataset(_dataset(tmp_path), images=images)
    shared = [f for f in res.findings if f.kind == "shared split"]
    assert len(shared) == 1, [str(f) for f in res.findings]
    assert "val" in shared[0].message and "train" in shared[0].message
    assert shared[0].severity == ("error" if images else "warning")  # training on it is the user's call
    assert not any(f.kind == "leakage" for f in res.findings)  # no image "identical to itself"


def test_every_split_reading_the_train_folder_is_named_with_it(tmp_path):
    data_yaml = _dataset(tmp_path, val="images/train", test="./images/train/")  # spelled otherwise, same folder
    shared = [f.message for f in check_dataset(data_yaml).findings if f.kind == "shared split"]
    assert len(shared) == 2
    assert shared[0].startswith("the val split reads") and shared[1].startswith("the test split reads")
    assert all("which the train split reads too" in m for m in shared)


def test_fix_refuses_shared_splits_before_writing(tmp_path):
    data_yaml = _dataset(tmp_path)
    with pytest.raises(ValueError, match=r"val: reads .*images/train, which the train split reads too"):
        fix_output(data_yaml, tmp_path / "fixed")
    with pytest.raises(ValueError):
        fix_dataset(data_yaml, tmp_path / "fixed")
    assert not (tmp_path / "fixed").exists()


def test_cli_fix_refuses_in_one_line(tmp_path, gradkit_here):
    data_yaml = _dataset(tmp_path)
    proc = gradkit_here("check", f"data={data_yaml}", "--fix", f"out={tmp_path / 'fixed'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "val" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "fixed").exists()


def test_a_train_split_without_a_single_defect_is_an_error_before_training(tmp_path):
    """Every training label file empty: nothing to learn. One error naming the split (the check before training
    stops on it); a val split without defects is a set of good parts, not an error."""
    data_yaml = _dataset(tmp_path, val="images/val")
    root = data_yaml.parent
    for lab in (root / "labels" / "train").iterdir():
        lab.write_text("")
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "val" / "v.png"), np.full((32, 32, 3), 9, np.uint8))
    (root / "labels" / "val" / "v.txt").write_text("")
    for images in (True, False):
        errors = [f for f in check_dataset(data_yaml, images=images).errors]
        assert [f.kind for f in errors] == ["no defects"], [str(f) for f in errors]
        assert "train" in errors[0].message and "4" in errors[0].message
    # a process of its own: importing Ultralytics patches PIL's Image.open for the rest of a process
    proc = subprocess.run([GRADKIT, "train", "model=yolo26n.yaml", f"data={data_yaml}", "epochs=1", "imgsz=32",
                           "workers=0", f"project={tmp_path / 'runs'}", "name=r"], capture_output=True, text=True,
                          env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 2 and "no labelled defect" in proc.stderr, proc.stderr[-2000:]
    assert "--fix" not in proc.stderr  # a copy would hold no defect either: the advice is to label some
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs" / "r" / "weights" / "last.pt").exists()


def test_what_training_does_not_read_does_not_stop_it_and_is_said(tmp_path):
    """A test: folder that does not exist (training reads train and val only) and val reading the train folder:
    the run trains, and says both before it starts (they were an error that stopped it, and a warning nobody saw)."""
    data_yaml = _dataset(tmp_path, val="images/train", test="images/test")
    proc = subprocess.run([GRADKIT, "train", "model=yolo26n.yaml", f"data={data_yaml}", "epochs=1", "imgsz=32",
                           "batch=4", "workers=0", f"project={tmp_path / 'runs'}", "name=r", "plots=false",
                           "gradkit.report.enabled=false"], capture_output=True, text=True,
                          env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    before = out[:out.index("Starting training")] if "Starting training" in out else out
    assert "test folder does not exist" in before and "training does not read it" in before
    assert "the val split reads" in before and "which the train split reads too" in before
    assert (tmp_path / "runs" / "r" / "weights" / "last.pt").exists()


def test_nc_without_names_names_the_classes_as_ultralytics_does(tmp_path):
    from ultralytics.data.utils import check_det_dataset

    data_yaml = _dataset(tmp_path, val="images/train")
    data = yaml.safe_load(data_yaml.read_text())
    del data["names"]
    data["nc"] = 3
    data_yaml.write_text(yaml.safe_dump(data))
    res = check_dataset(data_yaml, images=False)
    assert res.names == check_det_dataset(str(data_yaml), autodownload=False)["names"]
    assert not [f for f in res.errors if f.kind == "dataset YAML"]
    data["nc"] = "three"
    data_yaml.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="nc"):
        check_dataset(data_yaml)


def _empty_labels(data_yaml: Path) -> Path:
    for lab in (data_yaml.parent / "labels" / "train").iterdir():
        lab.write_text("")
    return data_yaml.parent / "images" / "train"


def test_no_defects_stands_beside_an_image_error_but_not_beside_unread_formats(tmp_path):
    """An unreadable image does not explain empty label files (the finding stays); labelled images in a format
    gradkit does not read may hold the defects (no finding: it cannot tell)."""
    data_yaml = _dataset(tmp_path, val="images/train")
    train = _empty_labels(data_yaml)
    (train / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (data_yaml.parent / "labels" / "train" / "broken.txt").write_text("")
    kinds = [f.kind for f in check_dataset(data_yaml, images=False).errors]
    assert "no defects" in kinds and "unreadable image" in kinds
    (train / "broken.png").unlink()
    (train / "labelled.webp").write_bytes(b"RIFF")  # a format Ultralytics reads and gradkit does not
    (data_yaml.parent / "labels" / "train" / "labelled.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert "no defects" not in [f.kind for f in check_dataset(data_yaml, images=False).errors]


@pytest.mark.parametrize("val", ["images/link", "images/../images/train"])
def test_val_reaching_the_train_folder_another_way_is_one_finding_and_no_leakage(tmp_path, val):
    data_yaml = _dataset(tmp_path, val=val)
    (data_yaml.parent / "images" / "link").symlink_to(data_yaml.parent / "images" / "train")
    (data_yaml.parent / "labels" / "link").symlink_to(data_yaml.parent / "labels" / "train")
    res = check_dataset(data_yaml)
    assert [f.kind for f in res.findings if f.kind in ("shared split", "leakage")] == ["shared split"]


@pytest.mark.parametrize("how", ["symlink", "list file"])
def test_a_train_image_a_val_split_reaches_on_its_own_is_leakage(tmp_path, how):
    """Not a whole shared folder, one image: a symlink in val's own folder to a train image, or val's list file
    naming a train image. The same file read by two splits is leakage (the check skipped it as "itself"; a
    byte-identical copy in val was called leakage). Known answer: one leakage finding naming that image."""
    data_yaml = _dataset(tmp_path, val="images/val")
    root = data_yaml.parent
    (root / "images" / "val").mkdir()
    (root / "labels" / "val").mkdir()
    cv2.imwrite(str(root / "images" / "val" / "v0.png"), np.full((32, 32, 3), 200, np.uint8))
    (root / "labels" / "val" / "v0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    if how == "symlink":
        (root / "images" / "val" / "dup.png").symlink_to(root / "images" / "train" / "t1.png")
        (root / "labels" / "val" / "dup.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    else:
        (root / "val.txt").write_text("./images/val/v0.png\n./images/train/t1.png\n")
        data = yaml.safe_load(data_yaml.read_text())
        data_yaml.write_text(yaml.safe_dump({**data, "val": "val.txt"}))
    res = check_dataset(data_yaml)
    leaks = [f for f in res.findings if f.kind in ("leakage", "shared split")]
    assert [f.kind for f in leaks] == ["leakage"], [str(f) for f in res.findings]
    assert "t1.png" in str(leaks[0]) and "train split" in leaks[0].message


def test_a_link_to_an_image_that_is_not_there_is_named_not_called_an_orphan_label(tmp_path):
    """An image that is a symbolic link to an unmounted share: Ultralytics lists it, then drops it with its label.
    The check left it out silently and called its label file an orphan ("no image for this file")."""
    data_yaml = _dataset(tmp_path, val="images/train")
    root = data_yaml.parent
    data_yaml.write_text(yaml.safe_dump({**yaml.safe_load(data_yaml.read_text()), "val": "images/val"}))
    (root / "images" / "val").mkdir()
    (root / "labels" / "val").mkdir()
    cv2.imwrite(str(root / "images" / "val" / "v.png"), np.full((32, 32, 3), 9, np.uint8))
    (root / "labels" / "val" / "v.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "images" / "train" / "d.png").symlink_to(tmp_path / "unmounted" / "d.png")
    (root / "labels" / "train" / "d.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    for images in (False, True):
        res = check_dataset(data_yaml, images=images)
        said = [f for f in res.findings if f.path.endswith("d.png")]
        assert len(said) == 1 and said[0].severity == "error" and "does not exist" in said[0].message, \
            [str(f) for f in res.findings]
        assert str(tmp_path / "unmounted" / "d.png") in said[0].message
        assert not [f for f in res.findings if f.path.endswith("d.txt")], [str(f) for f in res.findings]


def test_a_link_beside_a_shared_folder_is_still_leakage(tmp_path):
    """val reads one of train's folders (one "shared split" finding) and a folder of its own holding a link to an
    image of train's other folder: that link is leakage of its own, not part of the shared folder's finding."""
    data_yaml = _dataset(tmp_path, val="images/train")
    root = data_yaml.parent
    for folder in ("extra", "own"):
        (root / "images" / folder).mkdir()
        (root / "labels" / folder).mkdir()
    cv2.imwrite(str(root / "images" / "extra" / "x.png"), np.full((32, 32, 3), 222, np.uint8))
    (root / "labels" / "extra" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "images" / "own" / "dup.png").symlink_to(root / "images" / "extra" / "x.png")
    (root / "labels" / "own" / "dup.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data_yaml.write_text(yaml.safe_dump({**yaml.safe_load(data_yaml.read_text()),
                                         "train": ["images/train", "images/extra"],
                                         "val": ["images/train", "images/own"]}))
    kinds = [(f.kind, Path(f.path).name) for f in check_dataset(data_yaml).findings
             if f.kind in ("leakage", "shared split")]
    assert sorted(kinds) == [("leakage", "dup.png"), ("shared split", "train")], kinds
