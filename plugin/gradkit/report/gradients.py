"""The report's gradient view of a training run, from the monitor's CSV files.

A robust colour scale (the 1st to 99th percentile of log10 norms; norms beyond are drawn in the end
colours the colour bar's arrows show), so one 10^4x spike does not wash out the rest; non-finite
or zero norms and skipped steps marked; alerts marked where they fired; epoch boundaries drawn.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from gradkit.monitor.records import norm_grid

__all__ = ["PERCENTILES", "colour_limits", "gradient_view"]

PERCENTILES = (1.0, 99.0)
NONFINITE_COLOUR = "#d55e00"  # Okabe-Ito vermillion; viridis holds no orange
ALERT_MARKERS = {"nonfinite": "X", "exploding": "^", "vanishing": "v", "dead": "s"}


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def colour_limits(grid: np.ndarray) -> tuple[float, float]:
    """The colour scale's ends: PERCENTILES of the finite values (a scale of some width when they are equal)."""
    finite = grid[np.isfinite(grid)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, PERCENTILES))
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def gradient_view(run_dir: Path, alerts: list[dict]) -> bytes | None:
    """PNG of the heatmap and the total norm below; None when the run has no gradient records."""
    import matplotlib as mpl
    from matplotlib.figure import Figure

    if not (run_dir / "gradients.csv").is_file() or not (run_dir / "gradient_steps.csv").is_file():
        return None
    rows, step_rows = _read(run_dir / "gradients.csv"), _read(run_dir / "gradient_steps.csv")
    if not rows or not step_rows:
        return None
    grid, steps, layers = norm_grid(rows)
    lo, hi = colour_limits(grid)
    cmap = mpl.colormaps["viridis"].with_extremes(under="#000000", over="#ffffff", bad=NONFINITE_COLOUR)
    fig = Figure(figsize=(11, 7), dpi=100, layout="constrained")
    ax0, ax1 = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    extent = (steps[0] - 0.5, steps[-1] + 0.5, len(layers) - 0.5, -0.5)
    im = ax0.imshow(np.ma.masked_invalid(grid), aspect="auto", interpolation="nearest", cmap=cmap, extent=extent,
                    vmin=lo, vmax=hi)
    fig.colorbar(im, ax=ax0, extend="both", label=f"log10 ||grad|| (p{PERCENTILES[0]:g}–p{PERCENTILES[1]:g}; "
                                                  "beyond: black / white)")
    ax0.set_yticks(range(len(layers)), layers, fontsize=7 if len(layers) < 40 else 5)
    ax0.set_ylabel("layer (input at top)")
    ax0.set_title("log10 pre-clip gradient norm per layer; orange: non-finite or zero", fontsize=10)
    lay = {name.split()[0]: i for i, name in enumerate(layers)}
    for kind, marker in ALERT_MARKERS.items():
        pts = [(a["step"], lay.get(str(a.get("layer")).split()[0] if a.get("layer") is not None else "", -0.3))
               for a in alerts if a["kind"] == kind]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax0.scatter(xs, ys, marker=marker, s=40, facecolors="none", edgecolors="#cc79a7", linewidths=1.5,
                        label=f"{kind} alert ({len(pts)})")
    s_steps = np.array([int(r["step"]) for r in step_rows])
    epochs = np.array([int(r["epoch"]) for r in step_rows])
    skipped = s_steps[np.array([r.get("skipped") in ("1", "True") for r in step_rows])]
    total = np.array([float(r["total_norm"]) for r in step_rows])
    total_c = np.array([float(r["total_norm_clipped"]) for r in step_rows])
    ax1.semilogy(s_steps, np.where(np.isfinite(total) & (total > 0), total, np.nan), color="#0072b2",
                 label="total norm (pre-clip)")
    ax1.semilogy(s_steps, np.where(np.isfinite(total_c) & (total_c > 0), total_c, np.nan),
                 color="#009e73", label="total norm (post-clip)")
    if skipped.size:
        for ax in (ax0, ax1):
            ax.vlines(skipped, 0, 1, transform=ax.get_xaxis_transform(), colors=NONFINITE_COLOUR, lw=0.8,
                      label=f"skipped step ({skipped.size})" if ax is ax1 else None)
    for b in s_steps[1:][np.diff(epochs) != 0]:  # first step of each new epoch
        for ax in (ax0, ax1):
            ax.axvline(b - 0.5, color="#999999", ls="--", lw=0.8)
    ax1.set_xlabel("optimizer step (dashed: epoch boundaries)")
    ax1.set_ylabel("norm")
    ax1.legend(loc="upper right", fontsize=7)
    if ax0.get_legend_handles_labels()[1]:  # alert markers; the skipped-step lines there carry no label
        ax0.legend(loc="upper right", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
