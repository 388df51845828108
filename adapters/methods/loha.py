"""LoHa (Hyeon-Woo et al., 2022, FedPara, arXiv 2108.06098; LyCORIS): low-rank Hadamard product.

    ΔW = (alpha / r) (W1a W1b) ⊙ (W2a W2b),   W1a, W2a ∈ R^{d x r},  W1b, W2b ∈ R^{r x k}
    y = W0 x + ΔW x

The Hadamard product of two rank-``r`` matrices can reach rank ``r^2`` with ``2 (d + k) r`` parameters.
Init as PEFT's ``LoHaConfig(init_weights=True)``: ``W1a, W1b, W2a`` Kaiming-uniform (``a = sqrt(5)``, fan =
second dim) and ``W2b = 0``, so ``ΔW = 0`` at init; the scale is ``alpha / r``. The update is formed
densely (there is no cheaper way to apply a Hadamard product) and applied as ``F.linear(x, ΔW)``.

Regularisation follows PEFT (both only in training mode): ``rank_dropout`` zeroes whole output rows of
``ΔW`` with that probability and rescales the kept rows by the inverse of the kept fraction;
``module_dropout`` skips the adapter for the whole forward pass with that probability. LoHa has no
input dropout. Trainable parameters: ``2 (d + k) r``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AdapterLayer, require
from ..registry import register


@register("loha")
class LoHaLinear(AdapterLayer):
    """LoHa: ``y = W0 x + (alpha/r) ((W1a W1b) ⊙ (W2a W2b)) x``, ``W2b = 0``; ``2 (d + k) r`` parameters."""

    method = "loha"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", r: int = 8, alpha: float = 8.0,
                 rank_dropout: float = 0.0, module_dropout: float = 0.0) -> None:
        super().__init__(base_layer, module_name)
        self.validate(module_name, self.out_features, self.in_features, r=r,
                      rank_dropout=rank_dropout, module_dropout=module_dropout)
        self.r = r
        self.scaling = alpha / r
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout
        w = base_layer.weight
        d, k = self.out_features, self.in_features
        factory = {"device": w.device, "dtype": w.dtype}
        self.adapter_w1_a = nn.Parameter(torch.empty(d, r, **factory))
        self.adapter_w1_b = nn.Parameter(torch.empty(r, k, **factory))
        self.adapter_w2_a = nn.Parameter(torch.empty(d, r, **factory))
        self.adapter_w2_b = nn.Parameter(torch.zeros(r, k, **factory))
        for p in (self.adapter_w1_a, self.adapter_w1_b, self.adapter_w2_a):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))

    @classmethod
    def validate(cls, module_name, d_out, k_in, r=8, rank_dropout=0.0, module_dropout=0.0, **_):
        shape = (d_out, k_in)
        require(isinstance(r, int) and r > 0, module_name, shape, f"LoHa rank r must be a positive integer, got {r!r}")
        require(r <= min(d_out, k_in), module_name, shape, f"LoHa rank r={r} must not exceed min(in, out)={min(d_out, k_in)}")
        for name, p in (("rank_dropout", rank_dropout), ("module_dropout", module_dropout)):
            require(0.0 <= p < 1.0, module_name, shape, f"LoHa {name} must be in [0, 1), got {p!r}")

    @classmethod
    def trainable_count(cls, d_out, k_in, r=8, **_):
        return 2 * (d_out + k_in) * r

    def delta_weight(self) -> torch.Tensor:
        w1 = self.adapter_w1_a @ self.adapter_w1_b
        w2 = self.adapter_w2_a @ self.adapter_w2_b
        return (w1 * w2) * self.scaling

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = self.delta_weight()
        if self.training and self.rank_dropout > 0:
            keep = (torch.rand(delta.shape[0], device=delta.device) > self.rank_dropout).to(delta.dtype)
            # all rows dropped: keep is all zeros, and the clamp avoids 0/0 (PEFT would give NaN)
            delta = delta * (keep / keep.mean().clamp_min(1.0 / keep.numel())).unsqueeze(1)
        return F.linear(x.to(delta.dtype), delta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.module_dropout > 0 and not self.merged:
            if torch.rand(1).item() <= self.module_dropout:
                return self.base_layer(x)
        return super().forward(x)
