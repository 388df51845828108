"""MiSS: Matrix Shard Sharing (arXiv 2409.15371, §4.2 "MiSSe"), and PEFT's two variants of it.

Efficient form (the paper's MiSSe, the default, ``init_weights=True`` in PEFT)::

    S = sum_j x[..., j*r:(j+1)*r]            # blockwise input summation, (..., r)
    y = W0 x + S @ D                         # D: (r, d_out), zeros at init

The equivalent dense update tiles ``D^T`` along the input dimension:
``ΔW[:, j*r:(j+1)*r] = D^T`` for every input block ``j``. When ``k_in % r != 0`` the input is
zero-padded to a multiple of ``r`` (PEFT's rule), so the last, partial block meets only the first
``k_in % r`` rows of ``D``; with that rule ``ΔW[:, i] = D[i % r]^T`` for every column ``i``.

``mini`` (PEFT ``init_weights="mini"``): ``D`` is ``(r, mini_r)`` and is tiled ``d_out / mini_r``
times along the output dimension, so ``r * mini_r`` parameters cover the whole layer.

``bat`` (PEFT ``init_weights="bat"``, the 2024 "Bone" operator): the weight is cut into ``r x r``
blocks ``W_ij`` and each becomes ``W_ij (I + D_i) + D_i`` with ``D_i`` shared by the blocks of
output band ``i``. It depends on ``W0`` and so materialises the full weight every forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AdapterLayer, require
from ..registry import register


def pad_to_multiple(x: torch.Tensor, r: int) -> torch.Tensor:
    """Zero-pad the last dim to a multiple of ``r`` (PEFT's rule for ``k_in % r != 0``)."""
    pad = (-x.shape[-1]) % r
    return F.pad(x, (0, pad)) if pad else x


def block_sum(x: torch.Tensor, r: int) -> torch.Tensor:
    """Sum the contiguous ``r``-wide blocks of the last dim (which must be a multiple of ``r``)."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // r, r).sum(dim=-2)


def tile_columns(d_t: torch.Tensor, k_in: int) -> torch.Tensor:
    """Dense ``(d_out, k_in)`` matrix whose column ``i`` is column ``i % r`` of ``d_t`` (``d_out x r``)."""
    r = d_t.shape[1]
    reps = -(-k_in // r)
    return d_t.repeat(1, reps)[:, :k_in]


def selection_matrix(r: int, k_in: int, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
    """MiSS's fixed LoRA ``A`` (``r x k_in``): column ``i`` is the unit vector ``e_{i % r}``, so that
    ``D^T @ A`` tiles ``D^T`` along the input exactly as the padded block sum does."""
    cols = torch.arange(k_in, device=device) % r
    return (cols.unsqueeze(0) == torch.arange(r, device=device).unsqueeze(1)).to(dtype)


@register("miss")
class MiSSLinear(AdapterLayer):
    """MiSS efficient form: ``y = W0 x + blocksum_r(dropout(x)) @ D``, ``D ∈ R^{r x d_out}``, ``D = 0``.

    Trainable parameters: ``r * d_out``. ``variant`` selects PEFT's ``"mini"`` (``D ∈ R^{r x mini_r}``
    tiled over the output) or ``"bat"`` (block-affine ``W_ij (I + D_i) + D_i``).
    """

    method = "miss"
    VARIANTS = ("default", "mini", "bat")

    def __init__(
        self,
        base_layer: nn.Linear,
        module_name: str = "",
        r: int = 64,
        variant: str = "default",
        mini_r: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(base_layer, module_name)
        self.validate(module_name, self.out_features, self.in_features, r=r, variant=variant, mini_r=mini_r)
        self.r, self.variant, self.mini_r = r, variant, mini_r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight
        shape = {
            "default": (r, self.out_features),
            "mini": (r, mini_r),
            "bat": (self.out_features // r, r, r),
        }[variant]
        self.adapter_D = nn.Parameter(torch.zeros(shape, device=w.device, dtype=w.dtype))

    @classmethod
    def validate(cls, module_name, d_out, k_in, r=64, variant="default", mini_r=None, **_):
        shape = (d_out, k_in)
        require(variant in cls.VARIANTS, module_name, shape, f"MiSS variant must be one of {cls.VARIANTS}, got {variant!r}")
        require(isinstance(r, int) and r > 0, module_name, shape, f"MiSS rank r must be a positive integer, got {r!r}")
        require(r <= k_in, module_name, shape, f"MiSS rank r={r} must not exceed in_features={k_in}")
        if variant == "mini":
            require(isinstance(mini_r, int) and mini_r > 0, module_name, shape, f"MiSS mini needs a positive integer mini_r, got {mini_r!r}")
            require(d_out % mini_r == 0, module_name, shape, f"MiSS mini needs out_features={d_out} divisible by mini_r={mini_r}")
        if variant == "bat":
            require(k_in % r == 0 and d_out % r == 0, module_name, shape,
                    f"MiSS bat needs both in_features={k_in} and out_features={d_out} divisible by r={r}")

    @classmethod
    def trainable_count(cls, d_out, k_in, r=64, variant="default", mini_r=None, **_):
        return {"default": r * d_out, "mini": r * (mini_r or 0), "bat": (d_out // r) * r * r}[variant]

    def _output_block(self) -> torch.Tensor:
        """``D`` as an ``(r, d_out)`` matrix (the mini variant tiles it along the output)."""
        if self.variant == "mini":
            return self.adapter_D.repeat(1, self.out_features // self.mini_r)
        return self.adapter_D

    def _bat_weight_delta(self, weight: torch.Tensor) -> torch.Tensor:
        r = self.r
        d_out, k_in = weight.shape
        blocks = weight.reshape(d_out // r, r, k_in // r, r).permute(2, 0, 1, 3)  # (k/r, d/r, r, r)
        d = self.adapter_D.to(weight.dtype)
        delta = blocks @ d + d
        return delta.permute(1, 2, 0, 3).reshape(d_out, k_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "bat" and not self.merged:
            w = self.base_layer.weight
            return F.linear(x, w + self._bat_weight_delta(w), self.base_layer.bias)
        return super().forward(x)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self._output_block()
        # Pad before dropout, as PEFT does, so that the same RNG state gives the same mask.
        return block_sum(self.dropout(pad_to_multiple(x.to(d.dtype), self.r)), self.r) @ d

    def delta_weight(self) -> torch.Tensor:
        if self.variant == "bat":
            return self._bat_weight_delta(self.base_layer.weight)
        return tile_columns(self._output_block().t(), self.in_features)

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.variant != "bat" or not self.merged:
            return super().unmerge()
        # bat's update depends on W0: W' = W0 (I + D) + D per block, so W0 = (W' - D)(I + D)^-1.
        r = self.r
        w = self.base_layer.weight
        d_out, k_in = w.shape
        d = self.adapter_D.float()
        eye = torch.eye(r, dtype=torch.float32, device=w.device)
        blocks = w.float().reshape(d_out // r, r, k_in // r, r).permute(2, 0, 1, 3)
        restored = torch.linalg.solve((eye + d).transpose(-1, -2), (blocks - d).transpose(-1, -2)).transpose(-1, -2)
        w.copy_(restored.permute(1, 2, 0, 3).reshape(d_out, k_in).to(w.dtype))
        self.merged = False

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact rank-``r`` LoRA view ``(A, B)`` with ``B @ A == delta_weight()``.

        ``A[j, i] = 1`` where ``i % r == j`` (a fixed 0/1 selection, frozen) and ``B = D^T``.
        ``bat`` depends on the frozen weight and has no such view.
        """
        if self.variant == "bat":
            raise ValueError(f"module '{self.module_name}': MiSS bat depends on W0 and has no exact LoRA view")
        d = self._output_block()
        return selection_matrix(self.r, self.in_features, d.dtype, d.device), d.t().contiguous()
