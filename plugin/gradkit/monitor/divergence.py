"""Early warning of divergence from the trend of the total gradient norm (host side, numpy).

The per-step total norm of a detection model is noisy (a decade from batch to batch: an image
without objects, the last short batch of an epoch), so no single step says anything. The rule
smooths it and looks for a sustained rise, CUSUM-like with no drift allowance:

* level ``m_t``: the median of the log10 total norms of the last ``diverging_window`` finite steps;
* baseline: the lowest level seen so far (``min m_s``, s <= t) - a from-scratch run's falling
  norms only lower it, so the large gradients of the first steps raise no warning;
* ``diverging`` when ``m_t - baseline > log10(diverging_rise)``: the typical norm has grown that
  factor above the lowest it has been (the *trend* arm);
* or when one step's norm is ``diverging_spike`` above the level of the ``diverging_window`` steps
  before it (the *spike* arm): on the provoked runs, the only sign that came before the loss blew up
  (README), 1-2 steps ahead.
The episode ends when neither holds any more.

It reads only the total norm the clipper already brought to the host: no extra transfer per step.
Which signal carries the warning, and the measured lead and false warnings: README, "Early warning
of divergence" (``benchmarks/divergence.py``).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["DivergenceWarning"]


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
