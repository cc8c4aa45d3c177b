"""Early warning of divergence: the trend and spikes of the total gradient norm, and the growth of each
layer's weights (host side, numpy).

The per-step total norm of a detection model is noisy (a decade from batch to batch: an image
without objects, the last short batch of an epoch), so no single step says anything. The rule
smooths it and looks for a sustained rise, CUSUM-like with no drift allowance:

* level ``m_t``: the median of the log10 total norms of the last ``diverging_window`` finite steps;
* baseline: the lowest level seen so far (``min m_s``, s <= t) - a from-scratch run's falling
  norms only lower it, so the large gradients of the first steps raise no warning;
* ``diverging`` when ``m_t - baseline > log10(diverging_rise)``: the typical norm has grown that
  factor above the lowest it has been (the *trend* arm);
* or when one step's norm is ``diverging_spike`` above the level of the ``diverging_window`` steps
  before it (the *spike* arm): on the provoked runs, the only sign in the total norm that came before
  the loss blew up (README), 1-2 steps ahead.
The episode ends when neither holds any more.

It reads only the total norm the clipper already brought to the host: no extra transfer per step.

:class:`WeightGrowth` is the early arm. Under batch normalisation a convolution's output does not
depend on the scale of its weights, so its gradient is orthogonal to them and every SGD step
lengthens them: ``|w + dw|^2 = |w|^2 + |dw|^2`` (Arora, Li and Lyu 2019, "Theoretical analysis of
auto rate-tuning by batch normalization"). A layer whose weights double within ``diverging_growth_steps``
(10) optimizer steps takes steps of about 0.4 of its weights' length at every one of them
(``(1 + r^2)^10 = 4`` gives ``r = |dw| / |w| = 0.39``; healthy runs take 0.001-0.01): the learning
rate is far past what the layer can follow, and batch normalisation is only postponing the blow-up
by slowing the layer down. It reads the weight norms the monitor measures every
``monitor.update_every`` measured steps and, for this arm, at each of the first ``update_every``.

Which signal carries the warning, and the measured lead and false warnings: README, "Early warning
of divergence" (``benchmarks/divergence.py``).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

__all__ = ["DivergenceWarning", "WeightGrowth"]


def _median(values) -> float:
    """Median by a plain sort: np.median costs ~10x more on a handful of values."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


class DivergenceWarning:
    """Streams total norms; :meth:`update` is True exactly when a ``diverging`` episode starts.

    Args:
        window: finite steps whose median log10 norm is the level (the rule needs this many).
        rise: factor of the level above its lowest value that warns.
        spike: factor of one norm above the level of the steps before it that warns.
    """

    def __init__(self, window: int, rise: float, spike: float):
        self.window = window
        self.limit = math.log10(rise)
        self.spike_limit = math.log10(spike)
        self.reason, self.factor = "", math.nan  # which arm warned last, and by what factor
        self._recent: deque[float] = deque(maxlen=window)
        self.baseline = math.inf
        self.level = math.nan
        self._active = False

    def update(self, total_norm: float) -> bool:
        """Feed one step's pre-clip total norm; non-finite and zero norms carry no scale (skipped)."""
        if not (math.isfinite(total_norm) and total_norm > 0):
            return False
        log_norm = math.log10(total_norm)
        jump = log_norm - self.level if len(self._recent) == self.window else -math.inf
        self._recent.append(log_norm)
        if len(self._recent) < self.window:
            return False
        self.level = _median(self._recent)
        self.baseline = min(self.baseline, self.level)
        trend, spike = self.level - self.baseline > self.limit, jump > self.spike_limit
        on = trend or spike
        starts = on and not self._active
        self._active = on
        if starts:
            self.reason, self.factor = ("spike", 10**jump) if spike else ("trend", self.rise)
        return starts

    @property
    def rise(self) -> float:
        """Current level over the baseline, as a factor (NaN before ``window`` steps)."""
        return 10 ** (self.level - self.baseline) if math.isfinite(self.level) else math.nan

    def message(self) -> str:
        """Why the last episode started, for the alert."""
        if self.reason == "spike":
            return (f"the total gradient norm is {self.factor:.3g}x the median of the {self.window} steps "
                    f"before it ({10 ** self.baseline:.3g} at its lowest)")
        return (f"the median total gradient norm of the last {self.window} steps ({10 ** self.level:.3g}) "
                f"is {self.factor:.3g}x the lowest it has been ({10 ** self.baseline:.3g})")

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self._recent), "baseline": self.baseline, "level": self.level,
                "active": self._active}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._recent = deque((float(v) for v in state["recent"]), maxlen=self.window)
        self.baseline, self.level = float(state["baseline"]), float(state["level"])
        self._active = bool(state["active"])


class WeightGrowth:
    """Per-layer growth of the weight norms over the last ``steps`` optimizer steps.

    :meth:`update` takes each fresh measurement and returns, per layer, its norm over the norm measured
    at the latest step at least ``steps`` earlier (or, early in a run, the first measurement: growth over
    fewer steps counts the same), NaN where there is no earlier measurement or it was not positive.

    Args:
        steps: optimizer steps the growth is measured over (at least; measurements are not every step).
    """

    def __init__(self, steps: int):
        self.steps = steps
        self.reference_step: int | None = None  # the step of the measurement the last growth is against
        self._kept: deque[tuple[int, np.ndarray]] = deque()

    def update(self, step: int, weight_norm: np.ndarray) -> np.ndarray:
        now = np.asarray(weight_norm, dtype=np.float64)
        # drop the measurements that a newer one at least `steps` old makes unnecessary
        while len(self._kept) > 1 and self._kept[1][0] <= step - self.steps:
            self._kept.popleft()
        reference = self._kept[0][1] if self._kept and self._kept[0][1].shape == now.shape else None
        self.reference_step = self._kept[0][0] if reference is not None else None
        self._kept.append((step, now))
        if reference is None:
            return np.full(now.shape, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(reference > 0, now / reference, np.nan)

    def state_dict(self) -> dict[str, Any]:
        return {"kept": [(step, norms.tolist()) for step, norms in self._kept]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ValueError, naming the value, for a state no :meth:`state_dict` wrote (state files are
        untrusted input)."""
        try:
            kept = deque((int(step), np.asarray(norms, dtype=np.float64)) for step, norms in state["kept"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"weight-growth state {state!r:.200} is unreadable ({exc})") from None
        if any(norms.ndim != 1 for _, norms in kept) or [s for s, _ in kept] != sorted(s for s, _ in kept):
            raise ValueError(f"weight-growth state {state!r:.200}: expected (step, norms) pairs in step order")
        self._kept = kept
