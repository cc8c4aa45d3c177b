"""``check --fix`` never turns a labelled defect into background: an image one of whose label lines cannot be
repaired is left out of the copy, as Ultralytics' own label verification leaves it out (the oracle), while
duplicates dropped and boxes clipped keep their image (hand-made labels, known answer)."""

from pathlib import Path

import cv2
import numpy as np
import yaml

from gradkit.data import fix_dataset

LABELS = {
    "only_bad": "3 0.5 0.5 0.2 0.2\n",  # class 3 with nc=2: the image's one defect
    "good_and_bad": "0 0.5 0.5 0.2 0.2\n1 0.4 abc 0.1 0.1\n",  # a second defect with an unreadable line
    "duplicate": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n",
    "sticking_out": "1 0.95 0.5 0.2 0.2\n",
    "clean": "0 0.3 0.3 0.1 0.1\n",
    "no_area": "0 0.5 0.5 0 0.1\n0 0.3 0.3 0.1 0.1\n",  # a line describing nothing the image shows: kept
}


def _dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for i, (name, text) in enumerate(LABELS.items()):
        cv2.imwrite(str(root / "images" / "train" / f"{name}.png"), np.full((32, 32, 3), 30 * i, np.uint8))
        (root / "labels" / "train" / f"{name}.txt").write_text(text)
    cv2.imwrite(str(root / "images" / "val" / "v.png"), np.full((32, 32, 3), 250, np.uint8))
    (root / "labels" / "val" / "v.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                                    "names": {0: "scratch", 1: "pit"}}))
    return root / "data.yaml"


def _ultralytics_keeps(image: Path) -> bool:
    from ultralytics.data.utils import verify_image_label

    label = image.parent.parent.parent / "labels" / "train" / f"{image.stem}.txt"
    return verify_image_label((str(image), str(label), "", False, 2, 0, 0, False))[0] is not None


def test_an_image_whose_defect_label_is_lost_is_left_out(tmp_path):
    data_yaml = _dataset(tmp_path)
    fixed, changes = fix_dataset(data_yaml, tmp_path / "fixed")
    kept = {p.stem for p in (fixed.parent / "images" / "train").iterdir()}
    assert kept == {"duplicate", "sticking_out", "clean", "no_area"}
    ultralytics_drops = {p.stem for p in (data_yaml.parent / "images" / "train").iterdir() if not _ultralytics_keeps(p)}
    assert ultralytics_drops == {"only_bad", "good_and_bad"}  # training itself leaves out the same images
    left_out = {Path(c.path).stem: c.detail for c in changes if c.action == "left out"}
    assert set(left_out) == {"only_bad", "good_and_bad"}
    assert "line 1" in left_out["only_bad"] and "line 2" in left_out["good_and_bad"]
    assert (fixed.parent / "labels" / "train" / "duplicate.txt").read_text().count("\n") == 1
    assert not (fixed.parent / "labels" / "train" / "only_bad.txt").exists()
