"""PiSSA (Meng et al., 2024, arXiv 2404.02948): LoRA initialised from the principal singular triplets of ``W0``.

With ``W0 = U S V^T`` and ``s = alpha / r`` (``alpha / sqrt(r)`` with ``rslora``)::

    A = diag(sqrt(S[:r] / s)) V^T[:r]          # (r, k_in)
    B = U[:, :r] diag(sqrt(S[:r] / s))         # (d_out, r)
    W_res = W0 - s B A                         # replaces the frozen weight at init
    y = W_res x + s B A x

so the layer computes exactly ``W0 x`` at init, and training moves only the principal part. This is
PEFT's ``LoraConfig(init_lora_weights="pissa")``; ``niter=k`` selects PEFT's fast form
``"pissa_niter_k"`` (``torch.svd_lowrank`` with ``k`` subspace iterations instead of a full SVD).
Merging adds ``s B A`` to ``W_res``, which is ``W0 + ΔW`` with ``ΔW = s (B A - B_0 A_0)``.
Trainable parameters: ``(d + k) r``.

Saving and reloading: the adapter state dict holds ``A`` and ``B`` only, never ``W_res``. It reloads
correctly into a freshly injected model built on the same ``W0`` because the full SVD is deterministic:
``W_res`` depends only on the top-``r`` singular subspace (the product ``U_r S_r V_r^T`` is free of the
sign ambiguity of singular vectors), so re-injecting rebuilds the same ``W_res`` to float rounding and
the loaded ``A``, ``B`` sit on top of it. With ``niter`` the SVD is randomised (it draws from torch's
global generator), so reloading needs the same seed before ``inject``.
"""

from __future__ import annotations

import torch
from torch import nn, svd_lowrank

from ..base import require
from ..registry import register
from .lora import LowRankLayer


@register("pissa")
class PiSSALinear(LowRankLayer):
    """PiSSA: ``y = W_res x + s B A x`` with ``A, B`` from the top-``r`` SVD of ``W0``; ``(d + k) r`` parameters."""

    method = "pissa"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", r: int = 8, alpha: float = 8.0,
                 dropout: float = 0.0, rslora: bool = False, niter: int | None = None) -> None:
        super().__init__(base_layer, module_name, r, alpha, dropout, rslora)
        self.validate(module_name, self.out_features, self.in_features, r=r, niter=niter)
        self.niter = niter
        self._init_from_svd()

    @classmethod
    def validate(cls, module_name, d_out, k_in, r=8, niter=None, **_):
        super().validate(module_name, d_out, k_in, r=r)
        require(niter is None or (isinstance(niter, int) and niter >= 0), module_name, (d_out, k_in),
                f"pissa niter must be None (full SVD) or a non-negative integer, got {niter!r}")

    @torch.no_grad()
    def _init_from_svd(self) -> None:
        w = self.base_layer.weight
        require(w.dtype in (torch.float32, torch.float16, torch.bfloat16), self.module_name,
                (self.out_features, self.in_features), f"pissa needs a float32/float16/bfloat16 weight, got {w.dtype}")
        w32 = w.to(torch.float32)
        r = self.r
        if self.niter is None:
            u, s, vh = torch.linalg.svd(w32, full_matrices=False)
            u_r, s_r, vh_r = u[:, :r], s[:r], vh[:r]
        else:
            u_r, s_r, v_r = svd_lowrank(w32, r, niter=self.niter)
            vh_r = v_r.t()
        root = torch.sqrt(s_r / self.scaling)
        a = torch.diag(root) @ vh_r
        b = u_r @ torch.diag(root)
        self.adapter_A.copy_(a.to(w.dtype))
        self.adapter_B.copy_(b.to(w.dtype))
        w.copy_((w32 - self.scaling * b @ a).to(w.dtype))
