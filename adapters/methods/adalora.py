"""AdaLoRA (Zhang et al., 2023, arXiv 2303.10512): the SVD-form layer ``P Λ Q``.

    y = W0 x + (alpha / (r + 1e-5)) P diag(λ) Q x,   P ∈ R^{d x r}, λ ∈ R^r, Q ∈ R^{r x k}

Init as PEFT's ``AdaLoraConfig`` (``SVDLinear``): ``λ = 0`` (so ``ΔW = 0`` at init) and ``P, Q ~ N(0, 0.02^2)``.
The scale is PEFT's ``scaling / ranknum``: ``scaling = alpha`` (``r`` when ``alpha <= 0``) and
``ranknum = r + 1e-5``, the initial rank. Dropout acts on ``x``. Trainable parameters: ``(d + k) r + r``.
``orthogonal_regularization()`` returns PEFT's penalty ``(||Q Q^T - I||_F + ||P^T P - I||_F) / 2`` for one
layer; add ``orth_reg_weight`` times its mean over layers to the loss to train as AdaLoRA does.

Not implemented: the rank-budget schedule (AdaLoRA's ``RankAllocator``, which prunes entries of ``λ`` by
an importance score between ``tinit`` and ``total_step - tfinal``). This layer trains at a fixed rank ``r``,
which is what PEFT's AdaLoRA does until its schedule first prunes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import AdapterLayer, require
from ..registry import register


@register("adalora")
class AdaLoRALinear(AdapterLayer):
    """AdaLoRA SVD form: ``y = W0 x + (alpha / r) P diag(λ) Q x``, ``λ = 0``; ``(d + k) r + r`` parameters."""

    method = "adalora"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", r: int = 12, alpha: float = 8.0,
                 dropout: float = 0.0) -> None:
        super().__init__(base_layer, module_name)
        self.validate(module_name, self.out_features, self.in_features, r=r)
        self.r = r
        self.scaling = alpha if alpha > 0 else float(r)
        self.ranknum = float(r) + 1e-5
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight
        self.adapter_P = nn.Parameter(torch.empty(self.out_features, r, device=w.device, dtype=w.dtype))
        self.adapter_E = nn.Parameter(torch.zeros(r, 1, device=w.device, dtype=w.dtype))
        self.adapter_Q = nn.Parameter(torch.empty(r, self.in_features, device=w.device, dtype=w.dtype))
        nn.init.normal_(self.adapter_Q, mean=0.0, std=0.02)
        nn.init.normal_(self.adapter_P, mean=0.0, std=0.02)

    @classmethod
    def validate(cls, module_name, d_out, k_in, r=12, **_):
        shape = (d_out, k_in)
        require(isinstance(r, int) and r > 0, module_name, shape, f"AdaLoRA rank r must be a positive integer, got {r!r}")
        require(r <= min(d_out, k_in), module_name, shape, f"AdaLoRA rank r={r} must not exceed min(in, out)={min(d_out, k_in)}")

    @classmethod
    def trainable_count(cls, d_out, k_in, r=12, **_):
        return (d_out + k_in) * r + r

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.adapter_Q
        x = self.dropout(x.to(q.dtype))
        return (x @ (q * self.adapter_E).t() @ self.adapter_P.t()) * self.scaling / self.ranknum

    def delta_weight(self) -> torch.Tensor:
        return self.adapter_P @ (self.adapter_Q * self.adapter_E) * self.scaling / self.ranknum

    def orthogonal_regularization(self) -> torch.Tensor:
        """``(||Q Q^T - I||_F + ||P^T P - I||_F) / 2``: how far ``P`` and ``Q`` are from orthonormal."""
        q, p = self.adapter_Q, self.adapter_P
        eye = torch.eye(self.r, device=q.device, dtype=q.dtype)
        return (torch.linalg.norm(q @ q.t() - eye) + torch.linalg.norm(p.t() @ p - eye)) / 2
