"""Is class imbalance why thin defects fail? Per evaluation set, each class's training boxes.

For every set ``defect_quality.py`` builds (same generator, seed and size), prints per class: the training
boxes (as ``gradkit.data.fingerprint`` reads the labels), their share of the set's boxes, and the training
images holding the class. README ("Why thin defects fail") sets these beside stock's held-out AP50 per class from the
benchmark: if the unlearnt classes were the rare ones, imbalance would be a suspect.

    python benchmarks/class_balance.py --images 300 --imgsz 256 --out DIR [--sets NAMES]   # default: all of them

No training; the sets are generated under ``--out`` (or reused from a ``defect_quality.py`` ``--out``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from defect_quality import SET_NAMES, build_sets


def class_rows(data_yaml: Path) -> list[tuple[str, int, float, int]]:
    """(class, training boxes, share of boxes, training images holding it) per class."""
    from gradkit.data.fingerprint import fingerprint_dataset

    fp = fingerprint_dataset(data_yaml, "train", max_decoded=0)  # labels only: no pixel statistics needed
    total = max(sum(fp.class_counts.values()), 1)
    return [(name, n, n / total, fp.class_images[name]) for name, n in fp.class_counts.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(SET_NAMES))
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--out", type=Path, default=Path("runs/class_balance"))
    args = p.parse_args()

    sets = build_sets(args.out, args.sets.split(","), args.images, args.imgsz)
    print("| set | class | training boxes | share of boxes | training images with it |")
    print("|---|---|---|---|---|")
    for name, data in sets.items():
        for cls, boxes, share, images in class_rows(data):
            print(f"| {name} | {cls} | {boxes} | {share:.2f} | {images} |")


if __name__ == "__main__":
    main()
