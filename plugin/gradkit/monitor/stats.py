"""Per-layer gradient statistics, pure PyTorch.

:class:`LayerStats` turns the per-tensor norms that a clipping call already measured into per-layer
norms with one ``index_add_`` on device, so monitoring costs a few fused kernels per optimizer step
and no per-tensor host synchronisation. It knows nothing about trainers: give it named parameters
and a function that maps a parameter name to its layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gradkit.clip import ClipResult, layer_of

__all__ = ["LayerStats", "StepStats"]


@dataclass
class StepStats:
    """Host-side statistics of one optimizer step (arrays are indexed by layer)."""

    grad_norm: np.ndarray
    grad_norm_clipped: np.ndarray
    weight_norm: np.ndarray
    nonfinite: np.ndarray
    total_norm: float
    total_norm_clipped: float
    clip_coef: float

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.total_norm))


class LayerStats:
    """Groups parameters into layers and measures them.

    Args:
        named_parameters: ``(name, parameter)`` pairs; parameters that do not require grad are
            left out (frozen layers are not monitored).
        group_fn: Maps a parameter name to its layer key (default: Ultralytics layer index).
        labels: Optional display label per layer key (e.g. ``{"6": "6 C3k2"}``).
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
        group_fn: Callable[[str], str] = layer_of,
        labels: dict[str, str] | None = None,
    ):
        self.named = [(n, p) for n, p in named_parameters if p.requires_grad]
        if not self.named:
            raise ValueError("LayerStats needs at least one parameter that requires grad")
        keys = [group_fn(n) for n, _ in self.named]
        self.layer_keys: list[str] = list(dict.fromkeys(keys))
        order = {k: i for i, k in enumerate(self.layer_keys)}
        self.labels = [(labels or {}).get(k, k) for k in self.layer_keys]
        self._index_of_name = {n: order[k] for (n, _), k in zip(self.named, keys, strict=True)}
        self.params = [p for _, p in self.named]
        device = self.params[0].device
        self._param_index = torch.tensor([order[k] for k in keys], device=device)
        self._snapshot: list[torch.Tensor] | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layer_keys)

    def _layer_norm(self, tensor_norms: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        sq = torch.zeros(self.num_layers, device=tensor_norms.device, dtype=torch.float32)
        return sq.index_add_(0, index, tensor_norms.float() ** 2).sqrt()

    def _index(self, names: Sequence[str]) -> torch.Tensor:
        if len(names) == len(self.named):
            return self._param_index
        return torch.tensor([self._index_of_name[n] for n in names], device=self._param_index.device)

    def weight_norms(self) -> torch.Tensor:
        """Per-layer L2 norm of the weights (device tensor)."""
        per = torch.stack(torch._foreach_norm([p.detach() for p in self.params])).float()
        return self._layer_norm(per, self._param_index)

    def grad_norms(self) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """Per-layer L2 norm of the current gradients, the names that had one, and per-tensor norms."""
        names = [n for n, p in self.named if p.grad is not None]
        grads = [p.grad for _, p in self.named if p.grad is not None]
        if not grads:
            return torch.zeros(self.num_layers), names, torch.zeros(0)
        per = torch.stack(torch._foreach_norm(grads)).float()
        return self._layer_norm(per, self._index(names)), names, per

    def nonfinite_counts(self) -> torch.Tensor:
        """Per-layer count of NaN/Inf gradient elements (only worth it when the total is non-finite)."""
        counts = torch.zeros(self.num_layers, dtype=torch.float32, device=self._param_index.device)
        for (name, p) in self.named:
            if p.grad is not None:
                counts[self._index_of_name[name]] += (~torch.isfinite(p.grad)).sum().float()
        return counts

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of the weights, to measure the update of the coming optimizer step.

        The copies go into buffers kept from one snapshot to the next (a fresh allocation of the
        model's size cost more than the copy itself on a CPU: page faults), so a snapshot is valid
        until the next one and is consumed by :meth:`update_norms`. The price: one copy of the
        trainable weights stays allocated (on their device) from the first snapshot on; it is not
        pickled (the integration pickles only its configuration)."""
        weights = [p.detach() for p in self.params]
        kept = self._snapshot
        if kept is None or any(b.shape != w.shape or b.dtype != w.dtype or b.device != w.device
                               for b, w in zip(kept, weights, strict=True)):
            kept = self._snapshot = [w.clone() for w in weights]
        else:
            torch._foreach_copy_(kept, weights)
        return kept

    def update_norms(self, before: list[torch.Tensor]) -> torch.Tensor:
        """Per-layer ||w_after - w_before|| against a :meth:`snapshot`, which it overwrites with the
        negated difference (in place: no second model-sized allocation). Device tensor."""
        torch._foreach_sub_(before, [p.detach() for p in self.params])
        return self._layer_norm(torch.stack(torch._foreach_norm(before)).float(), self._param_index)

    def measure(self, clip: ClipResult, weight_norm: torch.Tensor, finite: bool | None = None) -> StepStats:
        """Per-layer statistics of a step from the clipping call's result, with one host transfer.

        Pre-clip per-layer norms come from the clip call's per-tensor norms (measured before it
        clipped); post-clip norms are derived for uniform policies and re-measured otherwise.
        """
        index = self._index(clip.names)
        if clip.tensor_norms.numel() == 0:
            pre = torch.zeros(self.num_layers, device=weight_norm.device)
        else:
            pre = self._layer_norm(clip.tensor_norms, index)
        if finite is None:  # callers that already synchronised pass it, saving a host sync per step
            finite = bool(torch.isfinite(clip.total_norm))
        if not finite or clip.uniform:
            post = pre * clip.clip_coef.float()
        else:
            post, _, _ = self.grad_norms()
        nonfinite = self.nonfinite_counts() if not finite else torch.zeros_like(pre)
        totals = torch.stack([clip.total_norm.float(), clip.total_norm_clipped.float(), clip.clip_coef.float()])
        packed = torch.cat([pre, post.to(pre.device), weight_norm.to(pre.device), nonfinite.to(pre.device),
                            totals.to(pre.device)]).cpu().numpy().astype(np.float64)
        g = self.num_layers
        return StepStats(
            grad_norm=packed[:g],
            grad_norm_clipped=packed[g : 2 * g],
            weight_norm=packed[2 * g : 3 * g],
            nonfinite=packed[3 * g : 4 * g],
            total_norm=float(packed[4 * g]),
            total_norm_clipped=float(packed[4 * g + 1]),
            clip_coef=float(packed[4 * g + 2]),
        )
