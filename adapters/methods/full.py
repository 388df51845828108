"""Full fine-tuning as a pseudo-method: the wrapped layer's own weight (and bias) train, ``y = W x + b``.

No copy is made: the base layer's ``weight`` and ``bias`` Parameters are registered a second time on
the wrapper as ``adapter_weight`` / ``adapter_bias``, so the prefix rule that freezing, counting and
saving key off covers them (``trainable_parameters`` counts each tensor once). Because the update lives
in ``W`` itself there is no separate ``ΔW``: ``merge``/``unmerge`` are no-ops and ``delta_weight``
raises; keep a copy of the pretrained weight if you need ``W - W0``.

Trainable parameters: ``d * k`` plus ``d`` for the bias when ``train_bias`` (the default) and the layer
has one. ``trainable_count`` cannot see the layer, so it assumes a bias exists when ``train_bias`` is
true (``nn.Linear``'s default); pass ``train_bias=False`` for bias-free layers to count ``d * k``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AdapterError, AdapterLayer
from ..registry import register


@register("full")
class FullLinear(AdapterLayer):
    """Full fine-tuning of the wrapped layer: ``W`` (and ``b``) train in place; ``d k (+ d)`` parameters."""

    method = "full"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", train_bias: bool = True) -> None:
        super().__init__(base_layer, module_name)
        self.adapter_weight = base_layer.weight
        self.adapter_weight.requires_grad_(True)
        if train_bias and base_layer.bias is not None:
            self.adapter_bias = base_layer.bias
            self.adapter_bias.requires_grad_(True)

    @classmethod
    def trainable_count(cls, d_out, k_in, train_bias=True, **_):
        return d_out * k_in + (d_out if train_bias else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.base_layer.weight, self.base_layer.bias)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AdapterError(
            f"module '{self.module_name}': full fine-tuning has no separate update; forward computes W x + b directly")

    def delta_weight(self) -> torch.Tensor:
        raise AdapterError(
            f"module '{self.module_name}': full fine-tuning trains W itself and has no separate ΔW; "
            "compare against a saved copy of the pretrained weight")

    def merge(self) -> None:
        """Nothing to fold in: the update already lives in the weight."""

    def unmerge(self) -> None:
        """Nothing to take out: see ``merge``."""
