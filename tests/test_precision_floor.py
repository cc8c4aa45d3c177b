"""``benchmarks/precision_floor.py``: the rows it prints for a hand-made evaluation whose classes the two rules
treat apart (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import precision_floor as pf  # a benchmark script, found through the path above

from gradkit.report import EvalData
from gradkit.report.coco import Box
from gradkit.report.inspection import PRECISION_CONFIDENCE, inspection_kpis


def _evaluation() -> EvalData:
    # scratch: 2 right boxes (0.04, 0.045) under 31 false ones, 2 of 33 at its best F1, over the estimate's floor
    # and under the bound's; crack: 10 of 12 right; 14 defect-free images 60-73 take the false boxes; pit: its
    # 40 objects on images 80-119, its top box right (0.95), then 31 false ones, then 2 right: 3 of 34 at its best
    # F1 (bound 0.036), 1 of 1 at its best trusted threshold
    gts = [Box(i, 0, 0.1, 0.1, 0.3, 0.3) for i in range(40)] + [Box(40 + i, 1, 0.1, 0.1, 0.3, 0.3) for i in range(12)]
    preds = [Box(0, 0, 0.1, 0.1, 0.3, 0.3, 0.045), Box(1, 0, 0.1, 0.1, 0.3, 0.3, 0.04)]
    preds += [Box(60 + i % 14, 0, 0.6, 0.6, 0.8, 0.8, 0.05 + 0.01 * i) for i in range(31)]
    preds += [Box(40 + i, 1, 0.1, 0.1, 0.3, 0.3, 0.9) for i in range(10)] + [Box(72, 1, 0.6, 0.6, 0.8, 0.8, 0.95),
                                                                             Box(73, 1, 0.6, 0.6, 0.8, 0.8, 0.95)]
    gts += [Box(80 + i, 2, 0.1, 0.1, 0.3, 0.3) for i in range(40)]
    preds += [Box(80 + i, 2, 0.1, 0.1, 0.3, 0.3, s) for i, s in enumerate((0.95, 0.02, 0.01))]
    preds += [Box(60 + i % 14, 2, 0.6, 0.6, 0.8, 0.8, 0.3 + 0.01 * i) for i in range(31)]
    names = {0: "scratch", 1: "crack", 2: "pit", 3: "stain"}
    return EvalData(names=names, split="test", data="d.yaml", model="m.pt", images=list(range(120)), files={},
                    sizes={}, gts=gts, preds=preds, headline={},
                    per_class={0: {"AP50": 0.004}, 1: {"AP50": 0.8}, 2: {}}, instances={}, image_counts={})


def test_each_class_row_says_what_each_rule_does_with_it():
    ev = _evaluation()
    kpis = {c: inspection_kpis(ev.gts, ev.preds, ev.images, ev.names, precision_confidence=c)
            for c in (pf.ESTIMATE, PRECISION_CONFIDENCE)}
    assert pf.class_rows(ev, kpis) == [
        "| scratch | 0.004 | 0.040 | 2 of 33 | 0.061 | 0.020 | kept | set aside |",
        "| crack | 0.800 | 0.900 | 10 of 12 | 0.833 | 0.601 | kept | kept |",
        "| pit | – | 0.010 | 3 of 34 | 0.088 | 0.036 | kept | moved to 0.950 (1 of 1) |"]  # stain: no row
    est, bound = kpis.values()  # bounds above: scipy's Wilson interval
    assert (est["false_rejected_images"], bound["false_rejected_images"]) == (14, 2)  # 72, 73: the crack's
    # 40 scratched parts (2 caught by the estimate's rule), the 2 cracked parts without a crack box (50, 51) and
    # the 40 pitted parts (3 caught by the estimate's rule, 1 by the trusted threshold)
    assert (est["escaped_images"], bound["escaped_images"]) == (38 + 2 + 37, 40 + 2 + 39)
