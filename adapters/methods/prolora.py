"""PRoLoRA (Wang et al., ACL 2024, arXiv 2402.16902): LoRA whose A and B are mostly built from one
shared chunk, broadcast along the hidden dimension with a partial rotation along the rank dimension.

With rank ``r``, unshared rank ``u`` (``0 <= u <= r``), shared rank ``R = r - u`` and sharing ratio
``m`` (number of chunks along the hidden dimension, the same for A and B)::

    A0 ∈ R^{R x ceil(k/m)},  B0 ∈ R^{ceil(d/m) x R}          # the shared chunks (trainable)
    A_u ∈ R^{u x k},         B_u ∈ R^{d x u}                  # the unshared ranks (trainable)
    s  = max(floor(R / m), 1)                                 # base stride of the rotation
    roll_i(A0)[j, :] = A0[(j + i s) mod R, :]                 # rotate the ranks of chunk i by i*s
    A = [ A_u ; (roll_0(A0) | roll_1(A0) | ... | roll_{m-1}(A0))[:, :k] ]      # (r, k)
    B = [ B_u , (roll_0(B0) ; roll_1(B0) ; ... ; roll_{m-1}(B0))[:d, :] ]      # (d, r), roll on columns
    y = W0 x + (alpha / r) B A x

"broadcast reduction" = the m copies of one chunk, "rotation enhancement" = roll_i, "partially-sharing
refinement" = the unshared ``A_u, B_u``. "Rectified initialization": ``A_u`` and ``A0`` are drawn from
Kaiming-uniform with the fan-in of the *full* matrix (bound ``1/sqrt(k)``, what LoRA's ``A`` gets),
not of the chunk; ``B_u = B0 = 0`` so ``ΔW = 0`` at the start. The rotation direction and the stride
follow the authors' released code.

Trainable parameters: ``u (d + k) + (r - u) (ceil(k/m) + ceil(d/m))``. The defaults ``u = 1, m = 2``
give 192 at ``r = 2`` on a 64x64 layer (LoRA r=2: 256), the size SPEC §3.1 lists for ProLoRA.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..base import require
from ..registry import register
from .lora import FactoredLayer


def broadcast_rotate(chunk: torch.Tensor, copies: int, stride: int, length: int) -> torch.Tensor:
    """``(R, c)`` chunk -> ``(R, length)``: ``copies`` copies side by side, copy ``i`` with its rows
    rolled so that row ``j`` is ``chunk[(j + i*stride) % R]``, cut to ``length`` columns."""
    ranks = chunk.shape[0]
    if ranks == 0:
        return chunk.new_zeros(0, length)
    rows = (torch.arange(ranks, device=chunk.device).unsqueeze(0)
            + stride * torch.arange(copies, device=chunk.device).unsqueeze(1)) % ranks  # (copies, R)
    rotated = chunk[rows]  # (copies, R, c)
    return rotated.permute(1, 0, 2).reshape(ranks, -1)[:, :length]


@register("prolora")
class PRoLoRALinear(FactoredLayer):
    """PRoLoRA: ``y = W0 x + (alpha/r) B A x`` with A, B assembled from ``u`` unshared ranks plus one chunk
    broadcast ``sharing_ratio`` times with partial rotation. Parameters:
    ``u (d + k) + (r - u) (ceil(k/m) + ceil(d/m))``."""

    method = "prolora"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", r: int = 8, alpha: float = 16.0,
                 unshared_rank: int = 1, sharing_ratio: int = 2, dropout: float = 0.0) -> None:
        super().__init__(base_layer, module_name)
        d, k = self.out_features, self.in_features
        self.validate(module_name, d, k, r=r, unshared_rank=unshared_rank, sharing_ratio=sharing_ratio)
        self.r, self.u, self.m = r, unshared_rank, sharing_ratio
        self.scaling = alpha / r
        shared_rank = r - unshared_rank
        self.stride = max(shared_rank // sharing_ratio, 1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight
        opts = dict(device=w.device, dtype=w.dtype)
        bound = 1.0 / math.sqrt(k)  # kaiming_uniform(a=sqrt(5)) with fan_in = k: the rectified init
        self.adapter_A_u = nn.Parameter(torch.empty(unshared_rank, k, **opts).uniform_(-bound, bound))
        self.adapter_A_shared = nn.Parameter(torch.empty(shared_rank, -(-k // sharing_ratio), **opts).uniform_(-bound, bound))
        self.adapter_B_u = nn.Parameter(torch.zeros(d, unshared_rank, **opts))
        self.adapter_B_shared = nn.Parameter(torch.zeros(-(-d // sharing_ratio), shared_rank, **opts))

    @classmethod
    def validate(cls, module_name, d_out, k_in, r=8, unshared_rank=1, sharing_ratio=2, **_):
        shape = (d_out, k_in)
        require(isinstance(r, int) and r > 0, module_name, shape, f"PRoLoRA rank r must be a positive integer, got {r!r}")
        require(r <= min(d_out, k_in), module_name, shape, f"PRoLoRA rank r={r} must not exceed min(in, out)={min(d_out, k_in)}")
        require(isinstance(unshared_rank, int) and 0 <= unshared_rank <= r, module_name, shape,
                f"PRoLoRA unshared_rank must be an integer in [0, r={r}], got {unshared_rank!r}")
        require(isinstance(sharing_ratio, int) and 0 < sharing_ratio <= min(d_out, k_in), module_name, shape,
                f"PRoLoRA sharing_ratio (chunks per hidden dim) must be an integer in [1, min(in, out)={min(d_out, k_in)}], "
                f"got {sharing_ratio!r}")

    @classmethod
    def trainable_count(cls, d_out, k_in, r=8, unshared_rank=1, sharing_ratio=2, **_):
        shared = r - unshared_rank
        return unshared_rank * (d_out + k_in) + shared * (-(-k_in // sharing_ratio) + -(-d_out // sharing_ratio))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The assembled ``A`` (``r x k``) and ``B`` (``d x r``); ``ΔW = (alpha/r) B A``."""
        a_shared = broadcast_rotate(self.adapter_A_shared, self.m, self.stride, self.in_features)
        b_shared = broadcast_rotate(self.adapter_B_shared.t(), self.m, self.stride, self.out_features).t()
        return torch.cat([self.adapter_A_u, a_shared], dim=0), torch.cat([self.adapter_B_u, b_shared], dim=1)
