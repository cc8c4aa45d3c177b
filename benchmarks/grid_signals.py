"""Divergence signals in the runs of a stability grid: warning lead and loss rise, per run.

Reads the run folders ``benchmarks/stability.py`` leaves (its temp dir's ``runs/``): each run's
per-step losses (``step_losses.json``), alerts and final mAP50-95. Prints per run

* the step the loss diverged (``benchmarks/divergence.py``'s definition: non-finite, or above 10x
  the running median of the earlier steps), the first ``diverging`` warning and the lead between;
* the largest rise of the 8-step median loss above its lowest earlier value — the slow signal a
  collapsing fine-tune might give — and the first step it exceeds ``--rise``.

    python benchmarks/grid_signals.py /tmp/gradkit-stability-XXXX/runs [--rise 1.2]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import numpy as np
from divergence import divergence_step, first_warning

WINDOW = 8  # optimizer steps of the median loss level, as the diverging rule's norm window


def loss_levels(losses: list[float]) -> list[float]:
    """The median of the last WINDOW losses at every step that has WINDOW of them."""
    return [float(np.median(losses[i - WINDOW + 1:i + 1])) for i in range(WINDOW - 1, len(losses))]


def rise(losses: list[float], threshold: float) -> tuple[float, int | None]:
    """(largest level / lowest earlier level, first step where it exceeds ``threshold``)."""
    lowest, largest, first = np.inf, 0.0, None
    for i, level in enumerate(loss_levels(losses), start=WINDOW):
        lowest = min(lowest, level)
        largest = max(largest, level / lowest)
        if first is None and level > threshold * lowest:
            first = i
    return largest, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path)
    ap.add_argument("--rise", type=float, default=1.2)
    args = ap.parse_args()
    leads = []
    print(f"{'run':30}{'mAP50-95':>9}{'diverged':>9}{'warned':>7}{'lead':>5}{'loss rise':>10}{'first >':>8}")
    for run in sorted(p for p in args.runs.iterdir() if (p / "step_losses.json").exists()):
        losses = json.loads((run / "step_losses.json").read_text(encoding="utf-8"))
        with open(run / "results.csv", encoding="utf-8", newline="") as f:
            final = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)][-1]
        alerts = [json.loads(line) for line in (run / "gradient_alerts.jsonl").read_text(encoding="utf-8").splitlines()]
        div = divergence_step({i + 1: v for i, v in enumerate(losses)})
        warn = first_warning(alerts)
        lead = div - warn if div is not None and warn is not None else None
        if lead is not None:
            leads.append(lead)
        largest, first = rise(losses, args.rise)
        print(f"{run.name:30}{float(final['metrics/mAP50-95(B)']):>9.3f}{div or '-':>9}{warn or '-':>7}"
              f"{lead if lead is not None else '-':>5}{largest:>10.2f}{first or '-':>8}")
    if leads:
        print(f"\nmedian lead {statistics.median(leads)} optimizer steps over {len(leads)} diverged and warned runs")


if __name__ == "__main__":
    main()
