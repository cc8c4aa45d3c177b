"""Buffered CSV/JSONL outputs of the monitor and the gradient heatmap.

Rows are kept in memory and appended to the files every ``flush_every`` steps, so the training
loop never waits for disk at each step.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from gradkit.monitor.alerts import Alert

__all__ = ["LAYER_COLUMNS", "STEP_COLUMNS", "GradientLog", "norm_grid", "plot_heatmap", "truncate_records"]

LAYER_COLUMNS = ("epoch", "step", "layer", "module", "grad_norm", "grad_norm_clipped", "weight_norm",
                 "update_ratio", "nonfinite")
STEP_COLUMNS = ("epoch", "step", "total_norm", "total_norm_clipped", "clip_coef", "clipped", "skipped")


class GradientLog:
    """Writes ``gradients.csv``, ``gradient_steps.csv`` and ``gradient_alerts.jsonl`` in ``save_dir``.

    Args:
        save_dir: Run directory.
        append: Keep existing files (resume) instead of starting them afresh.
        flush_every: Steps between writes.
    """

    def __init__(self, save_dir: str | Path, append: bool = False, flush_every: int = 50):
        self.dir = Path(save_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.layers_csv = self.dir / "gradients.csv"
        self.steps_csv = self.dir / "gradient_steps.csv"
        self.alerts_jsonl = self.dir / "gradient_alerts.jsonl"
        self.flush_every = flush_every
        self._layer_rows: list[tuple[Any, ...]] = []
        self._step_rows: list[tuple[Any, ...]] = []
        self._pending_updates: list[tuple[int, Any]] = []  # (row offset, device tensor of update ratios)
        for path, header in ((self.layers_csv, LAYER_COLUMNS), (self.steps_csv, STEP_COLUMNS)):
            if not (append and path.exists()):
                with open(path, "w", encoding="utf-8", newline="") as f:
                    csv.writer(f).writerow(header)
        if not (append and self.alerts_jsonl.exists()):
            self.alerts_jsonl.write_text("", encoding="utf-8")

    def add_step(self, epoch: int, step: int, total: float, total_clipped: float, coef: float,
                 skipped: bool) -> None:
        self._step_rows.append((epoch, step, total, total_clipped, coef, int(coef < 1 - 1e-6), int(skipped)))

    def add_layers(self, epoch: int, step: int, labels: list[str], grad: np.ndarray, grad_clipped: np.ndarray,
                   weight: np.ndarray, nonfinite: np.ndarray, update_ratio: Any = None) -> None:
        """Queue one row per layer; ``update_ratio`` may be a device tensor, resolved at flush."""
        start = len(self._layer_rows)
        for i, label in enumerate(labels):
            key, _, module = label.partition(" ")
            self._layer_rows.append([epoch, step, key, module, grad[i], grad_clipped[i], weight[i], "",
                                     int(nonfinite[i])])
        if update_ratio is not None:
            self._pending_updates.append((start, update_ratio))

    def add_alerts(self, alerts: list[Alert]) -> None:
        if alerts:
            with open(self.alerts_jsonl, "a", encoding="utf-8") as f:
                for a in alerts:
                    f.write(json.dumps(a.to_dict()) + "\n")

    def maybe_flush(self) -> None:
        if len(self._step_rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self._pending_updates:
            import torch

            ratios = torch.stack([t for _, t in self._pending_updates]).cpu().numpy()  # one transfer
            for (start, _), row in zip(self._pending_updates, ratios, strict=True):
                for i, value in enumerate(row):
                    self._layer_rows[start + i][7] = float(value)
            self._pending_updates.clear()
        with open(self.layers_csv, "a", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows(_fmt(r) for r in self._layer_rows)
        with open(self.steps_csv, "a", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows(_fmt(r) for r in self._step_rows)
        self._layer_rows.clear()
        self._step_rows.clear()


def truncate_records(save_dir: str | Path, last_step: int) -> dict[str, int]:
    """Drop the records of optimizer steps after ``last_step`` (and any line a crash cut short).

    Rows are flushed every ``flush_every`` steps but the checkpoint is written once per epoch, so
    after a crash (or Ultralytics' NaN recovery) the files hold steps the resumed run will do
    again. Each file is rewritten through a temporary file, so a second crash cannot lose it.

    Returns:
        Rows (lines) dropped per file name.
    """
    save_dir = Path(save_dir)
    dropped = {}
    for name, header in (("gradients.csv", LAYER_COLUMNS), ("gradient_steps.csv", STEP_COLUMNS)):
        path = save_dir / name
        if path.exists():
            dropped[name] = _rewrite_csv(path, header, last_step)
    path = save_dir / "gradient_alerts.jsonl"
    if path.exists():
        dropped[path.name] = _rewrite_jsonl(path, last_step)
    return dropped


def _step_within(value: Any, last_step: int) -> bool:
    try:
        return int(value) <= last_step
    except (TypeError, ValueError):
        return False  # a line cut short by the crash


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text.encode())
    tmp.replace(path)


def _rewrite_csv(path: Path, header: tuple[str, ...], last_step: int) -> int:
    import io

    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    body = rows[1:] if rows and tuple(rows[0]) == header else rows
    step_col = header.index("step")
    kept = [r for r in body if len(r) == len(header) and _step_within(r[step_col], last_step)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(kept)
    _replace(path, out.getvalue())
    return len(body) - len(kept)


def _rewrite_jsonl(path: Path, last_step: int) -> int:
    kept, total = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        total += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # cut short by the crash
        if isinstance(record, dict) and _step_within(record.get("step"), last_step):
            kept.append(line + "\n")
    _replace(path, "".join(kept))
    return total - len(kept)


def _fmt(row) -> list[Any]:
    return [f"{v:.6g}" if isinstance(v, float | np.floating) else v for v in row]


def norm_grid(rows: list[dict[str, str]]) -> tuple[np.ndarray, list[int], list[str]]:
    """log10 pre-clip norm per (layer, step) from ``gradients.csv`` rows; NaN where the norm was
    non-finite or zero. Returns the grid, the steps (columns) and the layer labels (rows)."""
    steps = sorted({int(r["step"]) for r in rows})
    layers = list(dict.fromkeys(f'{r["layer"]} {r["module"]}' for r in rows))
    col = {s: j for j, s in enumerate(steps)}
    lay = {name: i for i, name in enumerate(layers)}
    grid = np.full((len(layers), len(steps)), np.nan)
    for r in rows:
        v = float(r["grad_norm"])
        value = np.log10(v) if v > 0 and np.isfinite(v) else np.nan
        grid[lay[f'{r["layer"]} {r["module"]}'], col[int(r["step"])]] = value
    return grid, steps, layers


def plot_heatmap(save_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Draw ``gradients.png``: log10 pre-clip norm per layer and step, total norm and clip rate below."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend switch

    save_dir = Path(save_dir)
    with open(save_dir / "gradients.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(save_dir / "gradient_steps.csv", encoding="utf-8", newline="") as f:
        steps_rows = list(csv.DictReader(f))
    if not rows or not steps_rows:
        return None
    grid, steps, layers = norm_grid(rows)
    s_steps = np.array([int(r["step"]) for r in steps_rows])
    total = np.array([float(r["total_norm"]) for r in steps_rows])
    total_c = np.array([float(r["total_norm_clipped"]) for r in steps_rows])
    clipped = np.array([int(r["clipped"]) for r in steps_rows], dtype=float)
    window = max(1, len(clipped) // 50)
    padded = np.pad(clipped, (window // 2, window - 1 - window // 2), mode="edge")  # no dip at the ends
    clip_rate = np.convolve(padded, np.ones(window) / window, mode="valid")

    fig = Figure(figsize=(12, 8), layout="constrained")
    ax0, ax1 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    extent = (steps[0] - 0.5, steps[-1] + 0.5, len(layers) - 0.5, -0.5)
    im = ax0.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis", extent=extent)
    ax0.set_yticks(range(len(layers)), layers, fontsize=7)
    ax0.set_ylabel("layer (input at top)")
    ax0.set_title("log10 gradient norm per layer (pre-clip, unscaled)")
    fig.colorbar(im, ax=ax0, label="log10 ||grad||")
    ax1.semilogy(s_steps, total, label="total norm (pre-clip)")
    ax1.semilogy(s_steps, total_c, label="total norm (post-clip)")
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("norm")
    ax2 = ax1.twinx()
    ax2.plot(s_steps, clip_rate, color="tab:red", alpha=0.6, label="clip rate")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("clip rate")
    ax1.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    out = Path(out) if out else save_dir / "gradients.png"
    fig.savefig(out, dpi=110)
    return out
