"""MoS, Mixture of Shards (Wang et al., ICLR 2025, arXiv 2410.00938): LoRA whose A and B are assembled
from shards retrieved from global pools shared by all adapted layers of one ``inject`` call.

Hyperparameters: budget rank ``r`` (the adapters hold exactly as many trainable parameters as LoRA of
rank ``r`` on the same layers), ``rank_factor`` (each layer's assembled rank is ``R = rank_factor * r``),
``shards_per_vector`` ``l`` and ``private_ratio``. For a ``d x k`` layer::

    every rank vector (a row of A, length k; a column of B, length d) is cut into l shards
    ("vector sharding"): A has R*l slots of length k/l, B has R*l slots of length d/l
    each layer owns a budget of r*l A-shards and r*l B-shards (= r*k + r*d parameters, LoRA rank r);
      p = floor(private_ratio * r * l) of them stay private to the layer ("shard privatization"),
      the other r*l - p go into the global pool of that matrix shape (pools are per (d, k), so
      layers of one shape share one A-pool and one B-pool)
    slots 0..p-1 (rank-major: slot t is rank t // l, position t % l) hold the private shards;
    the other R*l - p slots hold pool shards picked by a fixed random index ("subset selection",
      drawn from successive random permutations of the pool, so a layer repeats a shard only when it
      needs more slots than the pool has); A and B use independent indices ("pair dissociation")
    y = W0 x + (alpha / R) B A x

The paper's routing is this fixed index matrix (no learned router). Init as LoRA: A-shards
Kaiming-uniform with fan-in ``k`` (bound ``1/sqrt(k)``), B-shards zero, so ``ΔW = 0`` at the start.
The index buffers (``adapter_index_A/B``) are saved with the adapter so a reload rebuilds A and B.

Trainable parameters: ``r (d + k)`` per layer (pool share plus private shards), whatever
``rank_factor``, ``l`` and ``private_ratio``; 256 at ``r = 2`` on a 64x64 layer (SPEC §3.1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..base import require
from ..registry import register
from .lora import FactoredLayer


def _budget(r: int, shards_per_vector: int, private_ratio: float) -> tuple[int, int]:
    """(private, public) shards each layer contributes per matrix."""
    total = r * shards_per_vector
    private = math.floor(private_ratio * total)
    return private, total - private


def _shape_key(d_out: int, k_in: int) -> str:
    return f"{d_out}x{k_in}"


class ShardPool(nn.Module):
    """The public shards of one matrix shape: ``adapter_pool_A`` (``n x k/l``) and ``adapter_pool_B`` (``n x d/l``)."""

    def __init__(self, n_shards: int, d_out: int, k_in: int, shards_per_vector: int, device, dtype) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(k_in)
        self.adapter_pool_A = nn.Parameter(
            torch.empty(n_shards, k_in // shards_per_vector, device=device, dtype=dtype).uniform_(-bound, bound))
        self.adapter_pool_B = nn.Parameter(torch.zeros(n_shards, d_out // shards_per_vector, device=device, dtype=dtype))


def _draw_index(slots: int, pool_size: int, device) -> torch.Tensor:
    reps = -(-slots // pool_size)
    return torch.cat([torch.randperm(pool_size, device=device) for _ in range(reps)])[:slots]


@register("mos")
class MoSLinear(FactoredLayer):
    """MoS: ``y = W0 x + (alpha/R) B A x``, A and B gathered from per-layer private shards and a global
    shard pool (``R = rank_factor * r``). Parameters per layer: ``r (d + k)``."""

    method = "mos"

    def __init__(self, base_layer: nn.Linear, module_name: str = "", r: int = 8, alpha: float = 16.0,
                 rank_factor: int = 4, shards_per_vector: int = 2, private_ratio: float = 0.5,
                 dropout: float = 0.0, shared: nn.ModuleDict | None = None) -> None:
        super().__init__(base_layer, module_name)
        d, k = self.out_features, self.in_features
        hyper = dict(r=r, rank_factor=rank_factor, shards_per_vector=shards_per_vector, private_ratio=private_ratio)
        self.validate(module_name, d, k, **hyper)
        owned = shared is None
        if owned:
            shared = self.shared_state([(module_name, base_layer)], **hyper)
        self._pool_key = _shape_key(d, k)
        require(self._pool_key in shared, module_name, (d, k),
                f"MoS shared pools {list(shared)} hold no pool for this layer's shape {self._pool_key}")
        self.bind_shared(shared, owned)
        self.rank = rank_factor * r
        self.l = shards_per_vector
        self.scaling = alpha / self.rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        private, _ = _budget(r, shards_per_vector, private_ratio)
        w = base_layer.weight
        bound = 1.0 / math.sqrt(k)
        self.adapter_private_A = nn.Parameter(
            torch.empty(private, k // self.l, device=w.device, dtype=w.dtype).uniform_(-bound, bound))
        self.adapter_private_B = nn.Parameter(torch.zeros(private, d // self.l, device=w.device, dtype=w.dtype))
        slots, pool_size = self.rank * self.l - private, self._pool().adapter_pool_A.shape[0]
        self.register_buffer("adapter_index_A", _draw_index(slots, pool_size, w.device))
        self.register_buffer("adapter_index_B", _draw_index(slots, pool_size, w.device))

    @classmethod
    def validate(cls, module_name, d_out, k_in, r=8, rank_factor=4, shards_per_vector=2, private_ratio=0.5, **_):
        shape = (d_out, k_in)
        require(isinstance(r, int) and r > 0, module_name, shape, f"MoS budget rank r must be a positive integer, got {r!r}")
        require(r <= min(d_out, k_in), module_name, shape, f"MoS budget rank r={r} must not exceed min(in, out)={min(d_out, k_in)}")
        require(isinstance(rank_factor, int) and rank_factor > 0, module_name, shape,
                f"MoS rank_factor must be a positive integer, got {rank_factor!r}")
        l = shards_per_vector
        require(isinstance(l, int) and l > 0 and d_out % l == 0 and k_in % l == 0, module_name, shape,
                f"MoS shards_per_vector={l!r} must be a positive integer dividing both in_features={k_in} and out_features={d_out}")
        require(0 <= private_ratio < 1, module_name, shape,
                f"MoS private_ratio must be in [0, 1) so the global pool is not empty, got {private_ratio!r}")

    @classmethod
    def shared_state(cls, targets, r=8, shards_per_vector=2, private_ratio=0.5, **_):
        """One ``ShardPool`` per matrix shape, holding the public share of every layer of that shape."""
        _, public = _budget(r, shards_per_vector, private_ratio)
        layers: dict[str, list[nn.Linear]] = {}
        for _, layer in targets:
            layers.setdefault(_shape_key(layer.out_features, layer.in_features), []).append(layer)
        return nn.ModuleDict({
            key: ShardPool(public * len(group), group[0].out_features, group[0].in_features, shards_per_vector,
                           group[0].weight.device, group[0].weight.dtype)
            for key, group in layers.items()
        })

    @classmethod
    def trainable_count(cls, d_out, k_in, r=8, **_):
        return r * (d_out + k_in)

    def _pool(self) -> ShardPool:
        return self.adapter_shared[self._pool_key]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The assembled ``A`` (``R x k``) and ``B`` (``d x R``); ``ΔW = (alpha/R) B A``."""
        pool = self._pool()
        a = torch.cat([self.adapter_private_A, pool.adapter_pool_A[self.adapter_index_A]])
        b = torch.cat([self.adapter_private_B, pool.adapter_pool_B[self.adapter_index_B]])
        a = a.reshape(self.rank, self.in_features)
        b = b.reshape(self.rank, self.out_features).t()
        return a, b
