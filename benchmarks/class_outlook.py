"""Which classes does no recipe learn, and can the fingerprint tell them before training?

Per evaluation set ``defect_quality.py`` builds (same generator, seed and size), measures each class on the
training split as ``gradkit plan`` does (``gradkit.data.fingerprint``: stroke width, thin share, the share
of boxes whose defect stands out from the texture around it), and sets beside it the held-out AP50 each
class reached in finished benchmark runs (``--results``: their ``results.json``; the mean over every run
of the ``--recipe`` names in them). README reads the table ("What the fingerprint measures per class",
under "Why thin defects fail").

    python benchmarks/class_outlook.py --out DIR --results 'RUNS/*/results.json' --recipe plan@time

No training; the sets are generated under ``--out`` (or reused from a ``defect_quality.py`` ``--out``).
"""

from __future__ import annotations

import argparse
import glob
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from defect_quality import SET_NAMES, build_sets


def class_measures(data_yaml: Path) -> dict[str, dict[str, float]]:
    """Per class: training boxes, thin share, stands-out share and median stroke (native px) of its boxes."""
    from gradkit.data.fingerprint import fingerprint_dataset
    from gradkit.data.standout import STANDS_OUT

    fp = fingerprint_dataset(data_yaml, "train")
    cls = np.asarray(fp.box_cls)
    standout, stroke = np.asarray(fp.box_standout, float), np.asarray(fp.box_stroke, float)
    thin = fp.thin_share_per_class()
    rows = {}
    for c, name in fp.class_names.items():
        mine = cls == c
        s_measured = standout[mine & ~np.isnan(standout)]
        k_measured = stroke[mine & ~np.isnan(stroke)]
        rows[name] = {"boxes": int(mine.sum()), "thin": thin.get(name, float("nan")),
                      "stands_out": float((s_measured >= STANDS_OUT).mean()) if s_measured.size else float("nan"),
                      "stroke_px": float(np.median(k_measured)) if k_measured.size else float("nan")}
    return rows


def held_out_ap50(patterns: list[str], recipes: list[str]) -> dict[tuple[str, str], list[float]]:
    """(set, class) -> AP50 of every run of any of ``recipes`` found in the given ``results.json`` files."""
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            sets = json.loads(Path(path).read_text(encoding="utf-8")).get("sets", {})
            for set_name, by_recipe in sets.items():
                runs = by_recipe.get("runs", {})
                for run in (r for name in recipes for r in runs.get(name, [])):
                    for cls, ap in (run.get("AP50") or {}).items():
                        found[(set_name, cls)].append(float(ap))
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(SET_NAMES))
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--out", type=Path, default=Path("runs/class_outlook"))
    p.add_argument("--results", action="append", default=[], help="results.json glob (repeatable)")
    p.add_argument("--recipe", default="plan@time", help="recipe name(s), comma-separated: any of them counts")
    args = p.parse_args()

    sets = build_sets(args.out, args.sets.split(","), args.images, args.imgsz)
    ap = held_out_ap50(args.results, args.recipe.split(","))
    print(f"| set | class | training boxes | thin | stand out | median stroke (px) | AP50, {args.recipe} (runs) |")
    print("|---|---|---|---|---|---|---|")
    for name, data in sets.items():
        for cls, m in class_measures(data).items():
            runs = ap.get((name, cls), [])
            score = f"{np.mean(runs):.3f} ({len(runs)})" if runs else "not run"
            print(f"| {name} | {cls} | {m['boxes']} | {m['thin']:.2f} | {m['stands_out']:.2f} | "
                  f"{m['stroke_px']:.1f} | {score} |")


if __name__ == "__main__":
    main()
