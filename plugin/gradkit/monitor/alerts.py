"""Diagnoses of gradient failure modes from per-layer statistics (host side, numpy).

* exploding: a norm far above the median of its own recent history, on log10 norms, by at least
  ``exploding_factor`` and 6 robust deviations (1.4826 * MAD) - absolute gradient scale in YOLO
  depends on batch size and accumulation, so fixed thresholds do not transfer between runs.
* vanishing: a norm far below its own history, or ||grad|| / ||weight|| below an absolute floor,
  for ``vanishing_patience`` consecutive steps.
* dead: exactly zero gradient on a trainable layer for ``dead_patience`` consecutive steps.
* nonfinite: NaN/Inf gradients; names the layers and the origin (the non-finite layer nearest the
  output, every later layer being finite) or says the loss itself was non-finite.

An alert is emitted once per (kind, layer) episode: again only after the condition has cleared.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

__all__ = ["Alert", "AlertDetector", "AlertThresholds"]

_MAD_SCALE = 1.4826
_ROBUST_SIGMAS = 6.0


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlertDetector:
    """Streams per-layer norms and yields alerts.

    Args:
        layers: Layer labels, e.g. ``["0 Conv", "1 Conv", ...]``; the first word is the layer key and
            the rest the module type. Order must follow the forward pass (output last).
        cfg: Thresholds.
    """

    def __init__(self, layers: list[str], cfg: AlertThresholds):
        self.cfg = cfg
        self.layers = layers
        n = len(layers) + 1  # the last column is the total norm
        self._hist = np.full((self.cfg.history, n), np.nan)
        self._count = 0
        self._low = np.zeros(n, dtype=np.int64)
        self._zero = np.zeros(n, dtype=np.int64)
        self._active: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"hist": self._hist.copy(), "count": self._count, "low": self._low.copy(),
                "zero": self._zero.copy(), "active": sorted(self._active)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if np.shape(state["hist"]) != self._hist.shape:
            raise ValueError(f"alert state has shape {np.shape(state['hist'])}, expected {self._hist.shape}")
        self._hist = np.array(state["hist"], dtype=np.float64)
        self._count = int(state["count"])
        self._low = np.array(state["low"], dtype=np.int64)
        self._zero = np.array(state["zero"], dtype=np.int64)
        self._active = {(str(k), int(i)) for k, i in state["active"]}

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
    ) -> list[Alert]:
        """Feed one step's pre-clip statistics and return the alerts that start at this step."""
        if not self.cfg.enabled:
            return []
        cfg = self.cfg
        alerts: list[Alert] = []
        norms = np.append(np.asarray(grad_norm, dtype=np.float64), total_norm)
        finite = np.isfinite(norms)

        # non-finite: one alert per episode, naming every affected layer and the origin
        bad = np.flatnonzero(~finite[:-1])
        if self._episode("nonfinite", -1, bad.size > 0 or not loss_finite):
            names = [self.layers[i] for i in bad]
            if not loss_finite:
                origin, msg = "loss", "the loss itself is non-finite (check the data and the learning rate)"
                layer, module = "loss", "loss"
            else:
                o = int(bad.max())
                layer, module = self._name(o)
                origin = self.layers[o]
                msg = f"origin: layer {origin} (nearest the output with a non-finite gradient)"
            counts = nonfinite[bad].sum() if nonfinite is not None and bad.size else float("nan")
            alerts.append(Alert("nonfinite", epoch, step, layer, module, float(counts), 0.0,
                                f"non-finite gradients at step {step} in {len(names)} layer(s) "
                                f"[{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}]; {msg}"))

        with np.errstate(divide="ignore", invalid="ignore"):
            logn = np.where(finite & (norms > 0), np.log10(norms), np.nan)
            w = np.append(np.asarray(weight_norm, dtype=np.float64), np.nan)
            ratio = norms / w
        have = np.sum(np.isfinite(self._hist), axis=0)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # layers without history yet give NaN: fine
            med = np.nanmedian(self._hist, axis=0)
            mad = np.nanmedian(np.abs(self._hist - med), axis=0) * _MAD_SCALE
        warm = have >= cfg.warmup_steps

        for i in range(norms.size):
            key, module = self._name(i)
            label = self.layers[i] if i < len(self.layers) else "total"
            if not finite[i]:
                continue
            # exploding
            limit = med[i] + max(np.log10(cfg.exploding_factor), _ROBUST_SIGMAS * mad[i])
            is_exploding = bool(warm[i] and np.isfinite(logn[i]) and logn[i] > limit)
            if self._episode("exploding", i, is_exploding):
                alerts.append(Alert("exploding", epoch, step, key, module, float(norms[i]), float(10**limit),
                                    f"exploding gradient at step {step} in {label}: norm {norms[i]:.3g} is "
                                    f"{10 ** (logn[i] - med[i]):.3g}x its recent median {10 ** med[i]:.3g}"))
            # dead (exactly zero on a trainable layer); the total has no "dead" of its own
            self._zero[i] = self._zero[i] + 1 if norms[i] == 0 else 0
            if i < len(self.layers) and self._episode("dead", i, self._zero[i] >= cfg.dead_patience):
                alerts.append(Alert("dead", epoch, step, key, module, 0.0, 0.0,
                                    f"dead layer {label}: exactly zero gradient for {self._zero[i]} "
                                    f"consecutive steps up to step {step}"))
            # vanishing
            low_hist = warm[i] and np.isfinite(logn[i]) and logn[i] < med[i] + np.log10(cfg.vanishing_factor)
            low_ratio = norms[i] > 0 and np.isfinite(ratio[i]) and ratio[i] < cfg.vanishing_ratio
            self._low[i] = self._low[i] + 1 if (low_hist or low_ratio) else 0
            if self._episode("vanishing", i, self._low[i] >= cfg.vanishing_patience):
                thr = 10 ** (med[i] + np.log10(cfg.vanishing_factor)) if low_hist else cfg.vanishing_ratio
                alerts.append(Alert("vanishing", epoch, step, key, module, float(norms[i]), float(thr),
                                    f"vanishing gradient in {label} for {self._low[i]} steps up to step "
                                    f"{step}: norm {norms[i]:.3g} (grad/weight ratio {ratio[i]:.3g})"))

        # history takes every finite, positive norm, exploding ones included: the median and MAD
        # ignore a few outliers, so a spike is still reported; a lasting change of scale becomes the
        # new normal once it fills half the window. Non-finite and zero norms carry no scale: left out.
        self._hist[self._count % cfg.history] = np.where(np.isfinite(logn), logn, np.nan)
        self._count += 1
        return alerts
