"""Side-by-side comparison of evaluation reports."""

from __future__ import annotations

from typing import Any

__all__ = ["compare_reports"]

HEADLINE = ("mAP50", "mAP50-95", "precision", "recall")


def _best(values: list[float | None], labels: list[str]) -> str:
    scored = [(v, lab) for v, lab in zip(values, labels, strict=True) if v is not None]
    if not scored:
        return "n/a"
    top = max(v for v, _ in scored)
    winners = [lab for v, lab in scored if v == top]
    return winners[0] if len(winners) == 1 else "tie: " + ", ".join(winners)


def compare_reports(reports: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """Per-metric and per-class values, deltas against the first run and the winner of each row."""
    if len(reports) < 2:
        raise ValueError(f"a comparison needs at least two reports, got {len(reports)}")
    headline = {}
    for m in HEADLINE:
        vals = [r["headline"].get(m) for r in reports]
        first = vals[0]
        headline[m] = {"values": vals, "best": _best(vals, labels),
                       "delta_vs_first": [None if v is None or first is None else round(v - first, 6) for v in vals]}
    coco = {}
    for m in ("AP", "AP50", "AP75", "AR100"):
        vals = [r["coco"]["metrics"].get(m) for r in reports]
        coco[m] = {"values": vals, "best": _best(vals, labels)}
    names = list(dict.fromkeys(c["name"] for r in reports for c in r["per_class"]))
    per_class = {}
    for n in names:
        vals = [next((c["AP50-95"] for c in r["per_class"] if c["name"] == n), None) for r in reports]
        per_class[n] = {"values": vals, "best": _best(vals, labels)}
    return {"schema_version": reports[0].get("schema_version", 1), "kind": "comparison",
            "runs": [{"label": lab, "model": r["model"], "data": r["data"], "split": r["split"]}
                     for lab, r in zip(labels, reports, strict=True)],
            "headline": headline, "coco": coco, "per_class": per_class}
