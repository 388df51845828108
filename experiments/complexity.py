"""Tables 2 and 3 of the MiSS paper (§4.3): trainable parameters, space and FLOPs of each adapter, the
paper's closed forms checked against measurement (SPEC §3.2).

    python experiments/complexity.py --profile cpu
    python experiments/complexity.py --set ranks=8,64 --set methods=lora,miss

For every method of the registry (the paper's Table 2 rows FT, LoRA, LoRA-FA, AdaLoRA, LoHa, VeRA, MiSSe,
and the others with no formula in the paper), on bias-free layers ``d_out x k_in`` of 64 x 64 (§3.1),
4096 x 4096 and 4096 x 11008 (a down projection: d = 4096, k = 11008), at each rank of the profile:

- trainable parameters: counted on the adapted layer, vs the paper's TPs column;
- stored adapter elements (trainable and frozen adapter tensors, e.g. VeRA's projections): vs the paper's
  "Space Complexity" column, which is what those expressions count;
- adapter forward FLOPs per token: ``torch.utils.flop_counter.FlopCounterMode`` over the adapted layer
  minus the frozen base layer (Full FT: the whole layer), in multiply-accumulates (its matmul count / 2)
  plus one operation per element of arithmetic elementwise ops and reductions (added to the counter as a
  custom mapping: FlopCounterMode alone counts only matmuls, so MiSS's block sum would be free), vs the
  paper's FLOPs column. The layer runs at two token counts; the slope is the per-token cost, the
  intercept the per-forward cost of methods that build a dense ``d x k`` update each forward (LoHa, DoRA);
- adapter activation memory: elements the adapter makes autograd save for backward (hooks on saved
  tensors; parameters and buffers excluded, the input counted when the adapter saves it), per token
  and per forward, and FLOPs of a training step (forward + backward).

Equal parameters: at the same rank MiSS has d·r trainable parameters and LoRA (d+k)·r, so Table 3's
comparison at equal rank favours MiSS by construction. LoRA (``equal_params_baseline``) is therefore also
measured at the ranks whose count equals MiSS's at each rank of the profile (r/2 on a square layer), or, where
no integer rank does (4096 x 11008), at the two ranks that bracket it; its counts are affine in its rank, so
the analysis interpolates between them exactly.

A row is flagged when a count column differs from the paper's expression evaluated at that shape
(parameters and space: any difference; FLOPs per token: a ratio outside [0.5, 2], i.e. more than a
constant-factor slack on an O(.) expression). The paper's expressions live in ``analysis/paper_values.py``.

Expected: the paper's TPs and space columns match the layers except AdaLoRA (``r^2`` where the layer
holds ``r`` singular values) and LoHa's FLOPs (the Hadamard product of two low-rank matrices has no
factored form: a forward costs ``d k`` per token plus ``2 d k r`` to build ``ΔW``); MiSSe has the lowest
FLOPs per token among the factored methods, its input transform being a block sum.

Runtime: every profile runs the same sizes (LoRA at 8 more ranks for the equal-parameter comparison): ~1.5 min
on 2 CPU cores (FLOP counting runs the real kernels;
LoHa and DoRA, which build a dense 4096 x 11008 update per forward, take most of it).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry, shape_wrapper

from adapters import ADAPTER_PREFIX, AdapterError, METHODS as REGISTRY, get_method, inject, trainable_parameters
from adapters.registry import equal_count_ranks
from analysis.paper_values import TABLE2
from experiments.common.config import from_dict, override
from experiments.common.records import RunRecord
from experiments.common.runner import Context, Run, experiment_main

EXPERIMENT = "complexity"
ALL_METHODS = ("full", "lora", "lora_fa", "adalora", "loha", "vera", "miss", "pissa", "dora", "prolora", "mos",
               "mora", "miss_expand")
SIZE_KEY: dict[str, str | None] = {"full": None, "miss_expand": "shards"}
FORMULAS = {row.method: row for row in TABLE2}
ATEN = torch.ops.aten


@dataclass(frozen=True)
class ComplexityConfig:
    shapes: tuple[str, ...] = ("64x64", "4096x4096", "4096x11008")   # d_out x k_in
    ranks: tuple[int, ...] = (8, 64)
    methods: tuple[str, ...] = ALL_METHODS
    tokens: tuple[int, int] = (16, 32)       # two token counts: per-token slope and per-forward intercept
    seed: int = 0
    # also measure this method (its count linear in its rank) at MiSS's trainable-parameter counts; None: don't.
    # It decides which runs exist, not what any run measures, so it stays out of each run's config.
    equal_params_baseline: str | None = "lora"

    def __post_init__(self) -> None:
        for name in ("shapes", "ranks", "methods"):
            value = getattr(self, name)
            if isinstance(value, (str, int)):
                object.__setattr__(self, name, (value,))
        for s in self.shapes:
            parse_shape(s)
        if len(self.tokens) != 2 or self.tokens[0] >= self.tokens[1] or self.tokens[0] < 1:
            raise ValueError(f"complexity: tokens must be two increasing positive counts, got {self.tokens!r}")


def parse_shape(shape: str) -> tuple[int, int]:
    try:
        d, k = (int(v) for v in shape.lower().split("x"))
    except ValueError:
        raise ValueError(f"complexity: shape {shape!r} is not 'DOUTxKIN'") from None
    return d, k


SCALE: dict[str, ComplexityConfig] = {name: ComplexityConfig() for name in ("cpu", "small", "paper")}


# ---------------------------------------------------------------------------------------------- counting
def _numel(shape) -> int:
    return math.prod(shape) if shape is not None else 0


def _elementwise(*args, out_shape=None, **kwargs) -> int:
    """One operation per output element, counted as two 'FLOPs' so that FLOPs / 2 stays 'MACs + ops'."""
    return 2 * _numel(out_shape)


def _reduction(*args, out_shape=None, **kwargs) -> int:
    """A sum of n elements into m costs n - m additions (two 'FLOPs' each, as above)."""
    return 2 * max(_numel(args[0]) - _numel(out_shape), 0)


def _norm(*args, out_shape=None, **kwargs) -> int:
    """Squares and sums (n + n - m), the root per output (m)."""
    return 2 * (2 * _numel(args[0]))


def _index_add(*args, out_shape=None, **kwargs) -> int:
    return 2 * _numel(args[3]) if len(args) > 3 else 0


# Arithmetic that FlopCounterMode leaves out; data movement (view, repeat, cat, index) stays free.
ELEMENTWISE_OPS = {
    **{op: _elementwise for op in (ATEN.add, ATEN.sub, ATEN.mul, ATEN.div, ATEN.neg, ATEN.pow, ATEN.sqrt,
                                    ATEN.rsqrt, ATEN.exp, ATEN.reciprocal, ATEN.relu, ATEN.clamp_min)},
    ATEN.sum: _reduction, ATEN.mean: _reduction, ATEN.linalg_vector_norm: _norm, ATEN.index_add: _index_add,
}


def count_ops(fn) -> tuple[float, dict[str, float]]:
    """Multiply-accumulates + elementwise operations of ``fn()`` (FlopCounterMode FLOPs / 2), total and per op."""
    with FlopCounterMode(display=False, custom_mapping=ELEMENTWISE_OPS) as counter:
        fn()
    per_op = {str(op): v / 2 for op, v in counter.get_flop_counts().get("Global", {}).items() if v}
    return counter.get_total_flops() / 2, per_op


MATMULS = {ATEN.mm, ATEN.addmm, ATEN.bmm, ATEN.baddbmm}


class OpLog(TorchDispatchMode):
    """The counted ops of one call in order, with FlopCounterMode's formulas plus ``ELEMENTWISE_OPS``."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, float, bool]] = []   # (op, MACs + ops, is a matmul)
        self.registry = {**flop_registry, **{op: shape_wrapper(f) for op, f in ELEMENTWISE_OPS.items()}}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None:
            count = formula(*args, **kwargs, out_val=out) / 2
            self.ops.append((str(func._overloadpacket), count, func._overloadpacket in MATMULS))
        return out


def stages(fn) -> dict[str, float]:
    """Table 3's split of an update ``ΔW x``: the input transform (every op before the last matmul),
    the output projection (the last matmul) and what follows it (scaling)."""
    with torch.no_grad(), OpLog() as log:
        fn()
    last = max((i for i, (_, _, mm) in enumerate(log.ops) if mm), default=None)
    if last is None:
        return {"input_transform": sum(c for _, c, _ in log.ops), "output_projection": 0.0, "after": 0.0}
    return {"input_transform": sum(c for _, c, _ in log.ops[:last]), "output_projection": log.ops[last][1],
            "after": sum(c for _, c, _ in log.ops[last + 1:])}


def saved_elements(fn, exclude: set[int]) -> int:
    """Elements of the tensors autograd saves for backward while ``fn()`` runs, storages counted once,
    those in ``exclude`` (data pointers of parameters and buffers) left out."""
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in exclude and ptr not in seen and storage.nbytes() > 0:
            seen.add(ptr)
            total_bytes = storage.nbytes()
            nonlocal total
            total += total_bytes // t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def line(y0: float, y1: float, t0: int, t1: int) -> tuple[float, float]:
    """(per-token slope, per-forward intercept) of the line through (t0, y0) and (t1, y1)."""
    slope = (y1 - y0) / (t1 - t0)
    return slope, y0 - slope * t0


# Hyperparameters besides the size: the layers here are bias-free, as in the paper's d·k; PiSSA takes
# its fast randomised SVD, since no count depends on how A and B start (a full SVD of 4096 x 11008 costs
# minutes on a CPU).
EXTRA_HYPER: dict[str, dict[str, Any]] = {"full": {"train_bias": False}, "pissa": {"niter": 2}}


def hyper_for(method: str, rank: int | None) -> dict[str, Any]:
    key = SIZE_KEY.get(method, "r")
    return {**EXTRA_HYPER.get(method, {}), **({} if key is None else {key: rank})}


def measure(method: str, d: int, k: int, rank: int | None, cfg: ComplexityConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    base = nn.Sequential(nn.Linear(k, d, bias=False))
    for p in base.parameters():
        p.requires_grad_(False)
    hyper = hyper_for(method, rank)
    model = inject(nn.Sequential(nn.Linear(k, d, bias=False)), method, ["0"], **hyper)
    layer = model[0]
    whole_layer = SIZE_KEY.get(method, "r") is None  # Full FT: the cost is the layer itself
    exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}

    fwd, train, saved, ops, split = [], [], [], [], []
    update = layer if whole_layer else layer.adapter_forward
    for t in cfg.tokens:
        x = torch.randn(t, k)
        split.append(stages(lambda: update(x)))
        adapted, adapted_ops = count_ops(lambda: model(x))
        reference, reference_ops = (0.0, {}) if whole_layer else count_ops(lambda: base(x))
        fwd.append(adapted - reference)
        ops.append({op: v - reference_ops.get(op, 0.0) for op, v in adapted_ops.items()})

        def train_step():
            model(x).sum().backward()

        train.append(count_ops(train_step)[0] - reference)
        model.zero_grad(set_to_none=True)
        saved.append(saved_elements(lambda: model(x), exclude))

    t0, t1 = cfg.tokens
    flops_token, flops_forward = line(*fwd, t0, t1)
    train_token, train_forward = line(*train, t0, t1)
    act_token, act_forward = line(*saved, t0, t1)
    per_op = {op: line(ops[0].get(op, 0.0), ops[1].get(op, 0.0), t0, t1) for op in ops[1]}
    adapter_elements = sum(v.numel() for n, v in layer.state_dict().items()
                           if n.rsplit(".", 1)[-1].startswith(ADAPTER_PREFIX))
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    out: dict[str, Any] = {
        "d": d, "k": k, "rank": rank, "hyper": hyper,
        "trainable_params": trainable_parameters(model),
        "formula_params": get_method(method).trainable_count(d, k, **hyper),
        "stored_adapter_elements": adapter_elements,
        "flops_per_token": flops_token,            # MACs + elementwise ops per token
        "flops_per_forward": flops_forward,        # per-forward part (dense updates built each forward)
        "train_flops_per_token": train_token,
        "train_flops_per_forward": train_forward,
        "activation_elements_per_token": act_token,
        "activation_elements_per_forward": act_forward,
        "ops_per_token": {op: v[0] for op, v in per_op.items() if v[0]},
        "ops_per_forward": {op: v[1] for op, v in per_op.items() if v[1]},
        "stages_per_token": {name: line(split[0][name], split[1][name], t0, t1)[0] for name in split[0]},
        "stages_per_forward": {name: line(split[0][name], split[1][name], t0, t1)[1] for name in split[0]},
        "adapter_tensors": {n: {"shape": list(v.shape), "trainable": n in trainable}
                            for n, v in layer.state_dict().items() if n.rsplit(".", 1)[-1].startswith(ADAPTER_PREFIX)},
        "measured_at_tokens": {"tokens": list(cfg.tokens), "forward": fwd, "train": train, "saved": saved},
    }
    row = FORMULAS.get(method)
    if row is not None:
        r = rank or 0
        out["paper"] = {"label": row.label, "space": row.space(d, k, r), "flops": row.flops(d, k, r),
                        "params": row.params(d, k, r), "space_printed": row.space.printed,
                        "flops_printed": row.flops.printed, "params_printed": row.params.printed}
        out["flags"] = disagreements(out)
    return out


def disagreements(out: dict[str, Any]) -> list[str]:
    """Which of the paper's expressions the measurement contradicts (see the module docstring)."""
    paper, flags = out["paper"], []
    if out["trainable_params"] != paper["params"]:
        flags.append(f"params: measured {out['trainable_params']} vs paper {paper['params']:g}")
    if out["stored_adapter_elements"] != paper["space"]:
        flags.append(f"space: measured {out['stored_adapter_elements']} vs paper {paper['space']:g}")
    ratio = out["flops_per_token"] / paper["flops"] if paper["flops"] else math.inf
    if not 0.5 <= ratio <= 2.0:
        flags.append(f"flops/token: measured {out['flops_per_token']:.4g} vs paper {paper['flops']:g} "
                     f"(x{ratio:.3g})")
    return flags


# ---------------------------------------------------------------------------------------------- runner glue
def resolve_config(ctx: Context) -> ComplexityConfig:
    cfg = SCALE[ctx.profile.name]
    return override(cfg, EXPERIMENT, **ctx.overrides) if ctx.overrides else cfg


def valid(method: str, d: int, k: int, rank: int | None) -> bool:
    """False when the method rejects this shape and rank; unknown methods are planned so their run fails loudly."""
    if method not in REGISTRY:
        return True
    try:
        get_method(method).validate("probe", d, k, **hyper_for(method, rank))
    except AdapterError:
        return False
    return True


def plan(ctx: Context) -> list[Run]:
    cfg = resolve_config(ctx)
    run_config = {key: v for key, v in asdict(cfg).items() if key != "equal_params_baseline"}
    runs = []
    for shape in cfg.shapes:
        d, k = parse_shape(shape)
        for method in cfg.methods:
            ranks: tuple[int | None, ...] = (None,) if SIZE_KEY.get(method, "r") is None else cfg.ranks
            if method == cfg.equal_params_baseline and "miss" in cfg.methods:
                extra = {r for rank in cfg.ranks if valid("miss", d, k, rank)
                         for r in equal_count_ranks(method, "miss", d, k, rank)}
                ranks = tuple(sorted(set(cfg.ranks) | extra))
            for rank in ranks:
                if not valid(method, d, k, rank):
                    continue
                name = f"{shape}-{method}" + ("" if rank is None else f"-r{rank}")
                runs.append(Run(name, {**run_config, "shape": shape, "method": method, "rank": rank}, cfg.seed))
    return runs


def execute(run: Run, record: RunRecord, ctx: Context) -> None:
    c = run.config
    cfg = from_dict(ComplexityConfig, {k: v for k, v in c.items() if k in ComplexityConfig.__dataclass_fields__},
                    EXPERIMENT)
    d, k = parse_shape(c["shape"])
    out = measure(c["method"], d, k, c["rank"], cfg)
    record.trainable_params = out["trainable_params"]
    record.metrics = out


def main(argv: list[str] | None = None) -> int:
    return experiment_main(EXPERIMENT, __doc__, plan, execute, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
