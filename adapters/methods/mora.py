"""MoRA (Jiang et al., 2024, arXiv 2405.12130): a square trainable ``M ∈ R^{r' x r'}`` between a
non-parametric compression of the input and a non-parametric decompression to the output.

This is the paper's "sharing" compression/decompression (type 1 in the authors' code), the one the
paper uses for large ``r'``; its rotation variant (type 6, for small ``r'``) is not implemented::

    x' = [x, x[..., :pad]],  pad = (-k) mod r'            # cyclic padding to a multiple of r'
    c  = sum_g x'[..., g r' : (g+1) r']                     # compress: sum of the r'-wide groups, (..., r')
    z  = c M^T                                              # (..., r')
    y  = W0 x + [z, z, ..., z][..., :d]                     # decompress: tile z to the output width

``M = 0`` at init, no scaling. The update is linear and exact as a dense matrix: with
``C[j, i] = #{p < k + pad : p mod r' = j, p mod k = i}`` (a 0/1/2 count of where input ``i`` lands),
``ΔW[o, :] = (M C)[o mod r', :]``; ``merge`` adds exactly that.

``r`` here is the square side ``r'`` itself (the authors' code derives ``r' = round(sqrt((d + k) r_lora))``
from a LoRA rank; pass the result). Trainable parameters: ``r'^2`` (``r' = 16``: 256 on a 64x64 layer,
LoRA r=2's budget).
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import AdapterLayer, require
from ..registry import register


@register("mora")
class MoRALinear(AdapterLayer):
    """MoRA (sharing type): ``y = W0 x + tile_d(groupsum_{r'}(x) M^T)``, ``M ∈ R^{r' x r'}`` zeros; ``r'^2`` parameters."""

    method = "mora"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", r: int = 16, dropout: float = 0.0) -> None:
        super().__init__(base_layer, module_name)
        self.validate(module_name, self.out_features, self.in_features, r=r)
        self.r = r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight
        self.adapter_M = nn.Parameter(torch.zeros(r, r, device=w.device, dtype=w.dtype))

    @classmethod
    def validate(cls, module_name, d_out, k_in, r=16, **_):
        shape = (d_out, k_in)
        require(isinstance(r, int) and r > 0, module_name, shape, f"MoRA square side r must be a positive integer, got {r!r}")
        require(r <= min(d_out, k_in), module_name, shape, f"MoRA square side r={r} must not exceed min(in, out)={min(d_out, k_in)}")

    @classmethod
    def trainable_count(cls, d_out, k_in, r=16, **_):
        return r * r

    def _compress(self, x: torch.Tensor) -> torch.Tensor:
        pad = (-self.in_features) % self.r
        if pad:
            x = torch.cat([x, x[..., :pad]], dim=-1)
        return x.reshape(*x.shape[:-1], -1, self.r).sum(dim=-2)

    def _decompress(self, z: torch.Tensor) -> torch.Tensor:
        reps = -(-self.out_features // self.r)
        return z.repeat(*([1] * (z.dim() - 1)), reps)[..., : self.out_features]

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.adapter_M
        return self._decompress(self._compress(self.dropout(x.to(m.dtype))) @ m.t())

    def delta_weight(self) -> torch.Tensor:
        m = self.adapter_M
        k, r = self.in_features, self.r
        positions = torch.arange(k + (-k) % r, device=m.device)
        counts = torch.zeros(r, k, device=m.device, dtype=m.dtype)
        counts.index_put_((positions % r, positions % k), torch.ones_like(positions, dtype=m.dtype), accumulate=True)
        return self._decompress((m @ counts).t()).t()
