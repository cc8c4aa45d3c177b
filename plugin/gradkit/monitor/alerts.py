"""Diagnoses of gradient failure modes from per-layer statistics (host side, numpy).

* exploding: a layer's norm, *relative to the other layers at the same step*, above its usual relative
  level by ``exploding_factor`` - active from the second optimizer step, because a layer's position
  among the layers is stable from step to step while the absolute scale is not (it moves by
  decades with the loss, the batch content, accumulation and the learning rate). Two same-step
  references are used and both must agree: the median log-norm of all layers, and the median of the
  ``NEIGHBOURS`` layers nearest in the forward order (layers that share a detection scale rise and
  fall together, which the global median alone mistakes for a fault). Or: a norm far above the
  median of its own absolute history, once ``warmup_steps`` of history exist, by ``exploding_factor``
  and 6 robust deviations (1.4826 * MAD); the total norm has only this rule. Either way a layer's
  episode starts only while its norm is above the same-step median of all layers: one idling decades
  below the others that wakes up by hundreds (a detection scale that rarely has an object) is not exploding.
* vanishing: the same relative test below by ``vanishing_factor``, or a norm far below its own
  absolute history, or ||grad|| / ||weight|| below an absolute floor, for ``vanishing_patience``
  consecutive steps.
* dead: exactly zero gradient on a trainable layer for ``dead_patience`` consecutive steps.
* diverging: the total norm's typical level (median of the last ``diverging_window`` steps) has
  risen ``diverging_rise`` above the lowest it has been, or one step's norm is ``diverging_spike``
  above that level; or (SGD and MuSGD runs) a layer's weight norm has grown ``diverging_growth`` within
  ``diverging_growth_steps`` - a warning before the loss blows up (``gradkit.monitor.divergence``).
  The weight-growth arm only warns: ``gradkit.monitor.rollback`` does not roll back on it.
* nonfinite: NaN/Inf gradients; names the layers and the origin (the non-finite layer nearest the
  output, every later layer being finite) or says the loss itself was non-finite.

An alert is emitted once per (kind, layer) episode: again only after the condition has cleared.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from gradkit.monitor.divergence import DivergenceWarning, WeightGrowth

__all__ = ["WEIGHT_GROWTH", "Alert", "AlertDetector", "AlertThresholds"]

#: The ``arm`` of a ``diverging`` alert raised by the weight growth (the others: "trend", "spike").
WEIGHT_GROWTH = "weight growth"
_MAD_SCALE = 1.4826
_ROBUST_SIGMAS = 6.0
#: Layers on each side (forward order) whose median is a layer's local same-step reference.
NEIGHBOURS = 2
#: Optimizer steps each rule needs before it can fire (the step that fires included), by config.
RULE_NEEDS = {
    "exploding (relative to the other layers)": lambda c: 2,
    "vanishing (relative to the other layers)": lambda c: 1 + c.vanishing_patience,
    "exploding/vanishing (against own history)": lambda c: c.warmup_steps + 1,
    "dead": lambda c: c.dead_patience,
    "diverging (total-norm trend/spike)": lambda c: c.diverging_window + 1,
    "diverging (weight growth)": lambda c: 2,
}


def inactive_rules(steps: int, cfg: AlertThresholds) -> dict[str, int]:
    """Rules that cannot fire within ``steps`` optimizer steps -> the steps each needs."""
    return {rule: need(cfg) for rule, need in RULE_NEEDS.items() if steps < need(cfg)}


def nanmedian(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=0)`` by one sort (NaNs sort last): numpy's version goes through masked
    arrays for small inputs and cost ~1 ms a call, most of the diagnoses' time per step. Plain
    indexing rather than ``take_along_axis``, whose index building cost more than the sort here."""
    a = np.asarray(a, dtype=np.float64)
    flat = a.reshape(a.shape[0], -1)
    ordered = np.sort(flat, axis=0)
    count = flat.shape[0] - np.isnan(flat).sum(axis=0)
    cols = np.arange(flat.shape[1])
    lo = ordered[np.maximum((count - 1) // 2, 0), cols]
    hi = ordered[np.maximum(count // 2, 0), cols]
    return np.where(count > 0, 0.5 * (lo + hi), np.nan).reshape(a.shape[1:])


def relative_positions(logn: np.ndarray) -> np.ndarray:
    """Same-step position of each layer's log10 norm: ``[:, 0]`` against the median of all layers,
    ``[:, 1]`` against the median of its nearest ``NEIGHBOURS`` layers on each side (NaN-aware)."""
    n = logn.size
    out = np.full((n, 2), np.nan)
    if np.isfinite(logn).sum() < 3:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window of dead layers: NaN, no alert
        out[:, 0] = logn - nanmedian(logn)
        out[:, 1] = logn - nanmedian(logn[_neighbour_index(n)].T)
    return out


@functools.lru_cache(maxsize=16)
def _neighbour_index(n: int) -> np.ndarray:
    """Row i: the ``2 * NEIGHBOURS`` layers nearest to i in forward order, shifted inwards at the ends
    (fewer when the model has fewer layers)."""
    width = min(2 * NEIGHBOURS + 1, n)
    rows = []
    for i in range(n):
        lo = min(max(i - NEIGHBOURS, 0), n - width)
        rows.append([j for j in range(lo, lo + width) if j != i][: width - 1])
    return np.array(rows, dtype=np.int64)


@dataclass(frozen=True)
class AlertThresholds:
    """The detector's thresholds as plain values (their defaults and meaning: ``monitor.alerts`` in the
    configuration reference, defined once in ``gradkit.config.AlertsConfig``)."""

    enabled: bool
    warmup_steps: int
    history: int
    exploding_factor: float
    vanishing_factor: float
    vanishing_ratio: float
    vanishing_patience: int
    dead_patience: int
    diverging_window: int
    diverging_rise: float
    diverging_spike: float
    diverging_growth: float
    diverging_growth_steps: int

    @classmethod
    def of(cls, source: Any) -> AlertThresholds:
        """Copy the fields from any object that has them (e.g. the configuration section)."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})


@dataclass
class Alert:
    """One diagnosis, as written to ``gradient_alerts.jsonl``."""

    kind: str
    epoch: int
    step: int
    layer: str
    module: str
    value: float
    threshold: float
    message: str
    # which rule of the kind fired, where it has several (diverging: trend, spike, weight growth)
    arm: str = field(default="", kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _StepStats:
    """One step's per-layer quantities the rules read (arrays over layers + the total norm, except ``rel_now`` and
    ``rel_dev``, over layers): the norms, which are finite, their log10, grad/weight ratios, the own-history median
    and exploding limit (log10), the same-step positions and their deviation from usual, and each arm's verdict."""

    norms: np.ndarray
    finite: np.ndarray
    logn: np.ndarray
    ratio: np.ndarray
    med: np.ndarray
    limit: np.ndarray
    rel_now: np.ndarray
    rel_dev: np.ndarray
    rel_high: np.ndarray
    rel_low: np.ndarray
    abs_high: np.ndarray
    low_hist: np.ndarray


class AlertDetector:
    """Streams per-layer norms and yields alerts.

    Args:
        layers: Layer labels, e.g. ``["0 Conv", "1 Conv", ...]``; the first word is the layer key and
            the rest the module type. Order must follow the forward pass (output last).
        cfg: Thresholds.
        weight_growth: Whether the weight-growth arm of ``diverging`` watches this run. Its evidence is
            from SGD and MuSGD runs: healthy ones grow their weights at most 1.01x in 10 steps, and a
            too-high lr shows as runaway growth. An adaptive optimizer's step is set by its lr (Adam's
            about lr per weight), so healthy AdamW runs grow their weights 1.6-2.0x within 10 steps at lr0
            0.01 without warm-up, and no AdamW run measured here diverged: callers turn it off for those
            (README, "Early warning of divergence").
    """

    def __init__(self, layers: list[str], cfg: AlertThresholds, weight_growth: bool = True):
        self.cfg = cfg
        self.layers = layers
        self.weight_growth = weight_growth
        n = len(layers) + 1  # the last column is the total norm
        self._hist = np.full((self.cfg.history, n), np.nan)
        self._rel_hist = np.full((self.cfg.history, len(layers), 2), np.nan)
        self.relative_deviation = np.full((len(layers), 2), np.nan)
        self._count = 0
        self._low = np.zeros(n, dtype=np.int64)
        self._zero = np.zeros(n, dtype=np.int64)
        self._active: set[tuple[str, int]] = set()
        self._diverging = DivergenceWarning(cfg.diverging_window, cfg.diverging_rise, cfg.diverging_spike)
        self._growth = WeightGrowth(cfg.diverging_growth_steps)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"hist": self._hist.copy(), "rel_hist": self._rel_hist.copy(), "count": self._count,
                "low": self._low.copy(),
                "zero": self._zero.copy(), "active": sorted(self._active),
                "diverging": self._diverging.state_dict(), "growth": self._growth.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ValueError, naming what is wrong, for a state no :meth:`state_dict` of this detector wrote
        (state files are untrusted input); the detector is unchanged then."""
        try:
            loaded = self._parse_state(state)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"alert state unreadable: {exc}".splitlines()[0]) from None
        (self._hist, self._rel_hist, self._count, self._low, self._zero, self._active, self._diverging,
         self._growth) = loaded

    def _parse_state(self, state: dict[str, Any]) -> tuple:
        hist = np.array(state["hist"], dtype=np.float64)
        # states saved before the relative rules, the diverging warning or the weight growth start those afresh
        rel_hist = np.array(state["rel_hist"], dtype=np.float64) if "rel_hist" in state else self._rel_hist.copy()
        low, zero = np.array(state["low"], dtype=np.int64), np.array(state["zero"], dtype=np.int64)
        for name, got, want in (("hist", hist, self._hist), ("rel_hist", rel_hist, self._rel_hist),
                                ("low", low, self._low), ("zero", zero, self._zero)):
            if got.shape != want.shape:
                raise ValueError(f"{name} has shape {got.shape}, expected {want.shape}")
        active = {(str(k), int(i)) for k, i in state["active"]}
        diverging = DivergenceWarning(self.cfg.diverging_window, self.cfg.diverging_rise, self.cfg.diverging_spike)
        if "diverging" in state:
            diverging.load_state_dict(state["diverging"])
        growth = WeightGrowth(self.cfg.diverging_growth_steps)
        if "growth" in state:
            growth.load_state_dict(state["growth"])
        return hist, rel_hist, int(state["count"]), low, zero, active, diverging, growth

    # ------------------------------------------------------------------ helpers
    def _name(self, i: int) -> tuple[str, str]:
        if i == len(self.layers):
            return "total", "model"
        key, _, module = self.layers[i].partition(" ")
        return key, module or key

    def _episode(self, kind: str, i: int, on: bool) -> bool:
        """True exactly when an episode of (kind, i) starts."""
        key = (kind, i)
        if not on:
            self._active.discard(key)
            return False
        if key in self._active:
            return False
        self._active.add(key)
        return True

    def _episodes(self, kind: str, on: np.ndarray, finite: np.ndarray) -> list[int]:
        """:meth:`_episode` for every index where ``finite``: the indices whose episode starts now."""
        for k, i in [key for key in self._active if key[0] == kind]:
            if finite[i] and not on[i]:
                self._active.discard((k, i))
        return [int(i) for i in np.flatnonzero(on & finite) if self._episode(kind, int(i), True)]

    # ------------------------------------------------------------------ main
    def update(
        self,
        epoch: int,
        step: int,
        grad_norm: np.ndarray,
        weight_norm: np.ndarray,
        total_norm: float,
        nonfinite: np.ndarray | None = None,
        loss_finite: bool = True,
        weights_fresh: bool = True,
    ) -> list[Alert]:
        """Feed one step's pre-clip statistics and return the alerts that start at this step.
        ``weights_fresh``: whether ``weight_norm`` was measured at this step (else it is an earlier
        measurement, good enough for the grad/weight ratio but not for the weight growth)."""
        if not self.cfg.enabled:
            return []
        norms = np.append(np.asarray(grad_norm, dtype=np.float64), total_norm)
        alerts = self._nonfinite_alerts(epoch, step, norms, nonfinite, loss_finite)
        if self._diverging.update(float(total_norm)):
            alerts.append(self._diverging_alert(epoch, step, float(total_norm)))
        if weights_fresh and self.weight_growth:
            alerts.extend(self._growth_alerts(epoch, step, weight_norm))
        stats = self._step_stats(norms, weight_norm)
        alerts.extend(self._layer_alert(i, kind, epoch, step, stats) for i, kind in self._layer_starts(stats))
        self._remember(stats)
        return alerts

    def _nonfinite_alerts(self, epoch: int, step: int, norms: np.ndarray, nonfinite: np.ndarray | None,
                          loss_finite: bool) -> list[Alert]:
        """One alert per non-finite episode, naming every affected layer and the origin."""
        bad = np.flatnonzero(~np.isfinite(norms[:-1]))
        if not self._episode("nonfinite", -1, bad.size > 0 or not loss_finite):
            return []
        names = [self.layers[i] for i in bad]
        if not loss_finite:
            msg = "the loss itself is non-finite (check the data and the learning rate)"
            layer, module = "loss", "loss"
        else:
            o = int(bad.max())
            layer, module = self._name(o)
            msg = f"origin: layer {self.layers[o]} (nearest the output with a non-finite gradient)"
        counts = nonfinite[bad].sum() if nonfinite is not None and bad.size else float("nan")
        return [Alert("nonfinite", epoch, step, layer, module, float(counts), 0.0,
                      f"non-finite gradients at step {step} in {len(names)} layer(s) "
                      f"[{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}]; {msg}")]

    def _step_stats(self, norms: np.ndarray, weight_norm: np.ndarray) -> _StepStats:
        """This step's statistics and every per-layer rule's arms (layers + the total norm; vectorised: a loop of
        numpy scalars cost most of the diagnoses' time per step). Updates the zero and low counters (a non-finite
        norm leaves its layer's as they were) and ``relative_deviation``."""
        cfg = self.cfg
        finite = np.isfinite(norms)
        with np.errstate(divide="ignore", invalid="ignore"):
            logn = np.where(finite & (norms > 0), np.log10(norms), np.nan)
            ratio = norms / np.append(np.asarray(weight_norm, dtype=np.float64), np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # layers without history yet give NaN: fine
            med = nanmedian(self._hist)
            mad = nanmedian(np.abs(self._hist - med)) * _MAD_SCALE
        warm = np.sum(np.isfinite(self._hist), axis=0) >= cfg.warmup_steps
        rel_now = relative_positions(logn[:-1])
        rel_dev = self.relative_deviation = self._relative_deviation(rel_now)  # kept for benchmarks
        rel_high = np.append(rel_dev[:, 0] > np.log10(cfg.exploding_factor), False)
        rel_low = np.append(rel_dev[:, 1] < np.log10(cfg.vanishing_factor), False)
        with np.errstate(invalid="ignore"):
            limit = med + np.maximum(np.log10(cfg.exploding_factor), _ROBUST_SIGMAS * mad)
            abs_high = warm & (logn > limit)
            low_hist = warm & (logn < med + np.log10(cfg.vanishing_factor))
            low_ratio = (norms > 0) & np.isfinite(ratio) & (ratio < cfg.vanishing_ratio)
        self._zero = np.where(finite, np.where(norms == 0, self._zero + 1, 0), self._zero)
        self._low = np.where(finite, np.where(low_hist | low_ratio | rel_low, self._low + 1, 0), self._low)
        return _StepStats(norms, finite, logn, ratio, med, limit, rel_now, rel_dev, rel_high, rel_low, abs_high,
                          low_hist)

    def _layer_starts(self, stats: _StepStats) -> list[tuple[int, str]]:
        """(layer index, kind) of every exploding, dead or vanishing episode that starts now, in layer order
        (exploding before dead before vanishing within a layer); ends the episodes whose condition cleared (a
        non-finite norm leaves its layer's episodes as they were)."""
        is_layer = np.arange(stats.norms.size) < len(self.layers)
        conditions = (("exploding", self._exploding_on(stats.abs_high | stats.rel_high, stats.rel_now)),
                      ("dead", is_layer & (self._zero >= self.cfg.dead_patience)),
                      ("vanishing", self._low >= self.cfg.vanishing_patience))
        starts = sorted((i, rank, kind) for rank, (kind, on) in enumerate(conditions)
                        for i in self._episodes(kind, on, stats.finite))
        return [(i, kind) for i, _, kind in starts]

    def _layer_alert(self, i: int, kind: str, epoch: int, step: int, stats: _StepStats) -> Alert:
        """The alert of an episode of ``kind`` starting now at layer ``i`` (the total norm: the last index)."""
        cfg = self.cfg
        key, module = self._name(i)
        label = self.layers[i] if i < len(self.layers) else "total"
        norm = stats.norms[i]
        if kind == "exploding":
            if stats.rel_high[i]:
                thr, why = cfg.exploding_factor, (f"{10 ** stats.rel_dev[i, 0]:.3g}x its usual level relative to the "
                                                  "other layers at the same step")
            else:
                thr = 10 ** stats.limit[i]
                why = f"{10 ** (stats.logn[i] - stats.med[i]):.3g}x its recent median {10 ** stats.med[i]:.3g}"
            return Alert("exploding", epoch, step, key, module, float(norm), float(thr),
                         f"exploding gradient at step {step} in {label}: norm {norm:.3g} is {why}")
        if kind == "dead":
            return Alert("dead", epoch, step, key, module, 0.0, 0.0,
                         f"dead layer {label}: exactly zero gradient for {self._zero[i]} "
                         f"consecutive steps up to step {step}")
        thr = (10 ** (stats.med[i] + np.log10(cfg.vanishing_factor)) if stats.low_hist[i]
               else cfg.vanishing_factor if stats.rel_low[i] else cfg.vanishing_ratio)
        return Alert("vanishing", epoch, step, key, module, float(norm), float(thr),
                     f"vanishing gradient in {label} for {self._low[i]} steps up to step "
                     f"{step}: norm {norm:.3g} (grad/weight ratio {stats.ratio[i]:.3g})")

    def _remember(self, stats: _StepStats) -> None:
        """Add this step to the histories. The absolute one takes every finite, positive norm, exploding ones
        included: the median and MAD ignore a few outliers, so a spike is still reported; a lasting change of
        scale becomes the new normal once it fills half the window. Non-finite and zero norms carry no scale:
        left out."""
        row = self._count % self.cfg.history
        self._hist[row] = np.where(np.isfinite(stats.logn), stats.logn, np.nan)
        # a flagged layer's relative position stays out of its history, so that a lasting fault
        # (vanishing needs several steps to be reported) is not learnt as the new normal
        flagged = (stats.rel_high | stats.rel_low)[:-1] | (self._low[:-1] > 0)
        self._rel_hist[row] = np.where(flagged[:, None], np.nan, stats.rel_now)
        self._count += 1

    def _exploding_on(self, high: np.ndarray, rel_now: np.ndarray) -> np.ndarray:
        """``high`` (either exploding arm, layers + total) where an episode may start or go on: a layer's starts only
        while its norm is above the same-step median layer's. A layer that idles decades below the others (a
        detection scale with no object of its size in most batches) and rises hundreds of times, still below
        them, is a path coming into use, not an explosion. Once started, an episode lasts while an arm holds, so a
        lasting fault about the median is one alert. Where there is no same-step position (the total norm, fewer
        than 3 finite layers) the arms decide alone."""
        with np.errstate(invalid="ignore"):
            above = np.append(~(rel_now[:, 0] <= 0), True)
        going_on = np.zeros(high.size, dtype=bool)
        going_on[[i for kind, i in self._active if kind == "exploding" and 0 <= i < high.size]] = True
        return high & (above | going_on)

    def _diverging_alert(self, epoch: int, step: int, total_norm: float) -> Alert:
        d = self._diverging
        thr = self.cfg.diverging_spike if d.reason == "spike" else self.cfg.diverging_rise
        return Alert("diverging", epoch, step, "total", "model", float(d.factor), float(thr),
                     f"diverging at step {step} ({d.reason}): {d.message()}; the loss may blow up next "
                     "(lower lr0, clip, or monitor.on_divergence: rollback)", arm=d.reason)

    def _growth_alerts(self, epoch: int, step: int, weight_norm: np.ndarray) -> list[Alert]:
        """A ``diverging`` alert when some layer's weight norm grew ``diverging_growth``: one per episode
        (until no layer has), naming the fastest-growing layer and how many others grew as much."""
        growth = self._growth.update(step, weight_norm)
        over = np.flatnonzero(np.isfinite(growth) & (growth >= self.cfg.diverging_growth))
        if not self._episode("diverging-growth", -1, over.size > 0):
            return []
        i = int(over[np.argmax(growth[over])])
        key, module = self._name(i)
        others = (f" (and {over.size - 1} more layer(s) grew {self.cfg.diverging_growth:g}x or more)"
                  if over.size > 1 else "")
        return [Alert(
            "diverging", epoch, step, key, module, float(growth[i]), self.cfg.diverging_growth,
            f"diverging at step {step} (weight growth): the weight norm of layer {self.layers[i]} grew "
            f"{growth[i]:.3g}x since step {self._growth.reference_step} (to {weight_norm[i]:.3g}){others}: its "
            "updates are a large fraction of its weights, the lr is too high for it (lower lr0 or clip; "
            "unclipped runs can show this in their first steps without diverging)", arm=WEIGHT_GROWTH)]

    def _relative_deviation(self, rel_now: np.ndarray) -> np.ndarray:
        """Per layer: how far (decades) its same-step position is from its usual one under both
        references; column 0 is the smaller rise (exploding needs both), column 1 the smaller drop.
        NaN (no alert) where a layer has no history yet or a reference is missing."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            usual = nanmedian(self._rel_hist)
        dev = rel_now - usual
        return np.stack([dev.min(axis=1), dev.max(axis=1)], axis=1)
