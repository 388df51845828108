"""VeRA (Kopiczko et al., 2024, arXiv 2310.11454): vector-based random matrix adaptation.

One pair of frozen random projections is shared by every adapted layer of an ``inject`` call:
``A ∈ R^{r x k_max}``, ``B ∈ R^{d_max x r}`` (``k_max``/``d_max``: the largest in/out features among the
targets). Each layer uses the leading slices ``A_k = A[:, :k_in]``, ``B_d = B[:d_out]`` and trains two
scaling vectors only::

    y = W0 x + Λ_b B_d Λ_d A_k x,   Λ_b = diag(lambda_b) (d_out), Λ_d = diag(lambda_d) (r)

As in PEFT's ``VeraConfig``: ``lambda_d = d_initial`` (0.1), ``lambda_b = 0`` (so ``ΔW = 0`` at init);
``A`` and then ``B`` are drawn from a CPU ``torch.Generator`` seeded with ``projection_prng_key`` by
Kaiming-uniform with gain sqrt(2) (bound ``sqrt(6 / fan_in)``, ``fan_in`` = the second dim: ``k_max`` for
``A``, ``r`` for ``B``), so the projections are a function of the seed and the target shapes. They are
saved with the adapter (PEFT's ``save_projection=True``). Dropout acts on ``x`` before ``A``.
Trainable parameters per layer: ``d + r``.

The rank is not bounded by ``min(d, k)``: the projections are random and fixed, and the paper uses
ranks far above the LoRA ones (e.g. 256 or more), so only ``r > 0`` is required (PEFT's rule).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AdapterLayer, require
from ..registry import register


def _kaiming_uniform(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Kaiming-uniform with gain sqrt(2) and fan = ``shape[1]``, drawn from ``generator``."""
    bound = math.sqrt(3.0) * math.sqrt(2.0) / math.sqrt(shape[1])
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


class VeRAProjections(nn.Module):
    """The frozen ``A`` (``r x k_max``) and ``B`` (``d_max x r``) shared by all layers of one inject call."""

    def __init__(self, r: int, d_max: int, k_max: int, projection_prng_key: int,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        generator = torch.Generator(device="cpu").manual_seed(projection_prng_key)
        a = _kaiming_uniform((r, k_max), generator)
        b = _kaiming_uniform((d_max, r), generator)
        self.register_buffer("adapter_vera_A", a.to(device=device, dtype=dtype))
        self.register_buffer("adapter_vera_B", b.to(device=device, dtype=dtype))


@register("vera")
class VeRALinear(AdapterLayer):
    """VeRA: ``y = W0 x + diag(lambda_b) B diag(lambda_d) A x`` with shared frozen ``A, B``; ``d + r`` parameters."""

    method = "vera"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", r: int = 256, d_initial: float = 0.1,
                 projection_prng_key: int = 0, dropout: float = 0.0,
                 shared: VeRAProjections | None = None) -> None:
        super().__init__(base_layer, module_name)
        self.validate(module_name, self.out_features, self.in_features, r=r)
        owned = shared is None
        if owned:
            shared = self.shared_state([(module_name, base_layer)], r=r, projection_prng_key=projection_prng_key)
        a, b = shared.adapter_vera_A, shared.adapter_vera_B
        require(a.shape[0] == r and a.shape[1] >= self.in_features and b.shape[0] >= self.out_features,
                module_name, (self.out_features, self.in_features),
                f"VeRA shared projections A {tuple(a.shape)}, B {tuple(b.shape)} do not cover this layer at r={r}")
        self.r = r
        self.bind_shared(shared, owned)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight
        self.adapter_lambda_d = nn.Parameter(torch.full((r,), float(d_initial), device=w.device, dtype=w.dtype))
        self.adapter_lambda_b = nn.Parameter(torch.zeros(self.out_features, device=w.device, dtype=w.dtype))

    @classmethod
    def validate(cls, module_name, d_out, k_in, r=256, **_):
        require(isinstance(r, int) and r > 0, module_name, (d_out, k_in), f"VeRA rank r must be a positive integer, got {r!r}")

    @classmethod
    def shared_state(cls, targets, r=256, projection_prng_key=0, **_):
        d_max = max(layer.out_features for _, layer in targets)
        k_max = max(layer.in_features for _, layer in targets)
        w = targets[0][1].weight
        return VeRAProjections(r, d_max, k_max, projection_prng_key, device=w.device, dtype=w.dtype)

    @classmethod
    def trainable_count(cls, d_out, k_in, r=256, **_):
        return d_out + r

    def _projections(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.adapter_shared.adapter_vera_A[:, : self.in_features],
                self.adapter_shared.adapter_vera_B[: self.out_features])

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._projections()
        lambda_d = self.adapter_lambda_d
        x = self.dropout(x.to(lambda_d.dtype))
        return self.adapter_lambda_b * F.linear(lambda_d * F.linear(x, a.to(x.dtype)), b.to(x.dtype))

    def delta_weight(self) -> torch.Tensor:
        a, b = self._projections()
        return (self.adapter_lambda_b.unsqueeze(1) * b) @ (self.adapter_lambda_d.unsqueeze(1) * a)
