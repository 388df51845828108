"""DoRA (Liu et al., 2024, arXiv 2402.09353): weight-decomposed low-rank adaptation.

The adapted weight is split into a trainable magnitude and a LoRA-updated direction::

    V = W0 + s B A                              # s = alpha / r (alpha / sqrt(r) with rslora)
    n = ||V||_row  (one L2 norm per output unit, i.e. over the input dim of the (d_out, k_in) weight)
    W' = (m / n) ⊙ V                            # m: (d_out,), row-wise scale
    y = W' x + bias

As in PEFT (``LoraConfig(use_dora=True)``): ``m`` is initialised to ``||W0||_row`` (so ``W' = W0`` at init,
``B = 0``, ``A`` Kaiming-uniform), and ``n`` is detached from the graph in the forward pass (DoRA §4.3),
so gradients flow to ``m``, ``A`` and ``B`` but not through the norm. PEFT's "column norm" is this norm:
its DoRA paper writes the weight transposed, so its columns are ``nn.Linear``'s rows.

Dropout follows PEFT: without dropout (or in eval mode) the layer reuses the base output,
``y = W0 x + b + (m/n - 1) ⊙ (W0 x) + (m/n) ⊙ s B A x``; with dropout active in training, the
two extra terms see the dropped-out input ``x'`` while the base term keeps ``x``:
``y = W0 x + b + (m/n - 1) ⊙ (W0 x') + (m/n) ⊙ s B A x'``.

Merge writes ``W'`` into the frozen weight and keeps ``n`` (a non-persistent buffer) so that unmerge
can invert it: ``W0 = W' ⊙ (n/m) - s B A``. Trainable parameters: ``(d + k) r + d`` (the magnitude has
one entry per output unit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register
from .lora import LowRankLayer


@register("dora")
class DoRALinear(LowRankLayer):
    """DoRA: ``y = (m / ||W0 + s B A||_row) ⊙ (W0 + s B A) x``; ``(d + k) r + d`` parameters."""

    method = "dora"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", r: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0, rslora: bool = False) -> None:
        super().__init__(base_layer, module_name, r, alpha, dropout, rslora)
        with torch.no_grad():
            magnitude = self._norm(self.base_layer.weight, self._lora_weight())
        self.adapter_magnitude = nn.Parameter(magnitude)
        self.register_buffer("_merged_norm", None, persistent=False)

    @classmethod
    def trainable_count(cls, d_out, k_in, r=8, **_):
        return (d_out + k_in) * r + d_out

    def _lora_weight(self) -> torch.Tensor:
        """``s B A``, the LoRA part of the direction."""
        return self.scaling * (self.adapter_B @ self.adapter_A)

    @staticmethod
    def _norm(weight: torch.Tensor, lora_weight: torch.Tensor) -> torch.Tensor:
        return torch.linalg.norm(weight + lora_weight, dim=1).to(weight.dtype)

    def _update(self, x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """``(m/n - 1) ⊙ base + (m/n) ⊙ s B A x`` with ``n`` detached; ``base`` is ``W0 x`` without bias."""
        norm = self._norm(self.base_layer.weight.to(x.dtype), self._lora_weight().detach()).detach()
        scale = self.adapter_magnitude / norm
        lora = x @ self.adapter_A.t() @ self.adapter_B.t()
        return (scale - 1) * base + scale * lora * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        if isinstance(self.dropout, nn.Identity) or not self.training:
            # Reuse the base output, as PEFT does, instead of a second product with W0.
            base = result if self.bias is None else result - self.bias
            return (result + self._update(x.to(self.adapter_A.dtype), base)).to(result.dtype)
        return result + self.adapter_forward(x).to(result.dtype)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x.to(self.adapter_A.dtype))
        return self._update(x, F.linear(x, self.base_layer.weight.to(x.dtype)))

    def _merged_weight(self, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m / n) ⊙ (W0 + s B A)`` and the norm ``n`` it used."""
        lora_weight = self._lora_weight()
        norm = self._norm(w0, lora_weight)
        return (self.adapter_magnitude / norm).unsqueeze(1) * (w0 + lora_weight), norm

    def _unmerged_weight(self) -> torch.Tensor:
        factor = (self.adapter_magnitude / self._merged_norm).unsqueeze(1)
        return self.base_layer.weight / factor - self._lora_weight()

    def delta_weight(self) -> torch.Tensor:
        w0 = self._unmerged_weight() if self.merged else self.base_layer.weight
        return self._merged_weight(w0)[0] - w0

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        w = self.base_layer.weight
        merged, norm = self._merged_weight(w)
        self._merged_norm = norm.clone()
        w.copy_(merged.to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        w = self.base_layer.weight
        w.copy_(self._unmerged_weight().to(w.dtype))
        self._merged_norm = None
        self.merged = False
