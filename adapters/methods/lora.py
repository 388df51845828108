"""LoRA (Hu et al., 2021): ``y = W0 x + (alpha / r) B A x``, ``A ∈ R^{r x k}``, ``B ∈ R^{d x r}``.

Init as PEFT's default: ``A ~ kaiming_uniform(a=sqrt(5))``, ``B = 0`` so ``ΔW = 0`` at the start.
``rslora`` scales by ``alpha / sqrt(r)`` instead. Trainable parameters: ``(d + k) r``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..base import AdapterLayer, require
from ..registry import register


class FactoredLayer(AdapterLayer):
    """Methods whose update is ``scaling * B A`` for factors built by ``factors()``.

    LoRA's factors are plain parameters; ProLoRA and MoS assemble theirs from shared pieces. Subclasses
    set ``self.scaling`` and ``self.dropout``.
    """

    scaling: float
    dropout: nn.Module

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)`` with ``A ∈ R^{r x k}``, ``B ∈ R^{d x r}``."""
        return self.adapter_A, self.adapter_B

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.factors()
        return (self.dropout(x.to(a.dtype)) @ a.t() @ b.t()) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        a, b = self.factors()
        return (b @ a) * self.scaling


class LowRankLayer(FactoredLayer):
    """Shared body of the methods whose factors are the parameters ``A``, ``B`` (LoRA, LoRA-FA, PiSSA, DoRA)."""

    def __init__(self, base_layer: nn.Linear, module_name: str, r: int, alpha: float, dropout: float, rslora: bool):
        super().__init__(base_layer, module_name)
        self.validate(module_name, self.out_features, self.in_features, r=r)
        self.r = r
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight
        self.adapter_A = nn.Parameter(torch.empty(r, self.in_features, device=w.device, dtype=w.dtype))
        self.adapter_B = nn.Parameter(torch.zeros(self.out_features, r, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.adapter_A, a=math.sqrt(5))

    @classmethod
    def validate(cls, module_name, d_out, k_in, r=8, **_):
        shape = (d_out, k_in)
        require(isinstance(r, int) and r > 0, module_name, shape, f"{cls.method} rank r must be a positive integer, got {r!r}")
        require(r <= min(d_out, k_in), module_name, shape, f"{cls.method} rank r={r} must not exceed min(in, out)={min(d_out, k_in)}")

    @classmethod
    def trainable_count(cls, d_out, k_in, r=8, **_):
        return (d_out + k_in) * r


@register("lora")
class LoRALinear(LowRankLayer):
    """LoRA: ``y = W0 x + (alpha/r) B A x``; ``A`` Kaiming-uniform, ``B = 0``; ``(d + k) r`` parameters."""

    method = "lora"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", r: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0, rslora: bool = False) -> None:
        super().__init__(base_layer, module_name, r, alpha, dropout, rslora)
