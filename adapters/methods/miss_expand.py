"""MiSS "expand" form (arXiv 2409.15371, §4.1, Eq. 2-3): shards of the *output* dimension share one row.

The output dimension ``d`` is cut into ``N`` contiguous shards of sizes ``s_1..s_N`` (as equal as
possible: the first ``d % N`` shards get one row more). ``D ∈ R^{N x k}`` starts at zero and::

    expand(D) = [1_{s_1} D_1; 1_{s_2} D_2; ...; 1_{s_N} D_N]       # (d, k): row D_i repeated s_i times
    y = W0 x + expand(D) x

Every output row of shard ``i`` receives the same update ``D_i``, so ``rank(ΔW) <= N``. The forward
never forms ``expand(D)``: ``z = x D^T`` (``(..., N)``) and then each ``z_i`` is repeated ``s_i`` times
along the output. Trainable parameters: ``N * k``. No released code implements this form; the
paper's tables use the efficient form (``miss``), which shards the input dimension instead.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import AdapterLayer, require
from ..registry import register


def shard_sizes(d_out: int, shards: int) -> list[int]:
    """Sizes of ``shards`` contiguous output shards covering ``d_out`` rows, as equal as possible."""
    base, extra = divmod(d_out, shards)
    return [base + 1 if i < extra else base for i in range(shards)]


@register("miss_expand")
class MiSSExpandLinear(AdapterLayer):
    """MiSS §4.1: ``y = W0 x + expand(D) x``, ``D ∈ R^{N x k}`` zeros, row ``D_i`` shared by output shard ``i``.

    Trainable parameters: ``shards * k_in``.
    """

    method = "miss_expand"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", shards: int = 64, dropout: float = 0.0) -> None:
        super().__init__(base_layer, module_name)
        self.validate(module_name, self.out_features, self.in_features, shards=shards)
        self.shards = shards
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight
        self.register_buffer(
            "_sizes", torch.tensor(shard_sizes(self.out_features, shards), device=w.device), persistent=False
        )
        self.adapter_D = nn.Parameter(torch.zeros(shards, self.in_features, device=w.device, dtype=w.dtype))

    @classmethod
    def validate(cls, module_name, d_out, k_in, shards=64, **_):
        shape = (d_out, k_in)
        require(isinstance(shards, int) and shards > 0, module_name, shape,
                f"MiSS expand needs a positive integer number of shards, got {shards!r}")
        require(shards <= d_out, module_name, shape,
                f"MiSS expand shards={shards} must not exceed out_features={d_out} (each shard needs a row)")

    @classmethod
    def trainable_count(cls, d_out, k_in, shards=64, **_):
        return shards * k_in

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.adapter_D
        z = self.dropout(x.to(d.dtype)) @ d.t()
        return torch.repeat_interleave(z, self._sizes, dim=-1, output_size=self.out_features)

    def delta_weight(self) -> torch.Tensor:
        return torch.repeat_interleave(self.adapter_D, self._sizes, dim=0, output_size=self.out_features)
