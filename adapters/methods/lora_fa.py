"""LoRA-FA (Zhang et al., 2023, arXiv 2308.03303): LoRA with the down-projection frozen.

    y = W0 x + (alpha / r) B A x,   A ∈ R^{r x k} frozen at its random init, B ∈ R^{d x r} trainable, B = 0

Init is LoRA's (``A`` Kaiming-uniform, ``B = 0``). ``A`` is still an adapter tensor (``adapter_A``,
``requires_grad=False``) so it is saved with the adapter: the update cannot be rebuilt without it.
Trainable parameters: ``d r``.

PEFT ships LoRA-FA as an optimiser (``peft.optimizers.create_lorafa_optimizer``) over an ordinary LoRA
layer: it never updates ``A`` and additionally preconditions ``B``'s gradient by
``(1 / s^2) (A A^T)^{-1}`` before its AdamW step. This module is the layer (same forward as LoRA with
the same ``A`` and ``B``; ``A`` receives no gradient); that gradient preconditioning is an optimiser
choice and is not part of it.
"""

from __future__ import annotations

from torch import nn

from ..registry import register
from .lora import LowRankLayer


@register("lora_fa")
class LoRAFALinear(LowRankLayer):
    """LoRA-FA: ``y = W0 x + (alpha/r) B A x`` with ``A`` frozen; ``d r`` trainable parameters."""

    method = "lora_fa"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", r: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0, rslora: bool = False) -> None:
        super().__init__(base_layer, module_name, r, alpha, dropout, rslora)
        self.adapter_A.requires_grad_(False)

    @classmethod
    def trainable_count(cls, d_out, k_in, r=8, **_):
        return d_out * r
