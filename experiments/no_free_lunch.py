"""Fig. 2 (left) of the MiSS paper: the "No Free Lunch" synthetic adaptation benchmark (§3.1, Appendix C
Table 12; protocol in SPEC §3.1). How close does each adapter, at the paper's rank, get to full fine-tuning?

    python experiments/no_free_lunch.py --profile cpu                 # seed 43 + 19 more, three protocols
    python experiments/no_free_lunch.py --seeds 9 --runs 'corrected-*'
    python experiments/no_free_lunch.py --set adapt_steps=300 --set methods=full,lora,miss

Protocol (the paper's, at the paper's own scale in every profile): seed 43; ``x ~ U[-1, 1]^{n x 64}``;
base task ``sin(2 pi x)``, adaptation task ``sin(2 pi x) + 0.3 cos(3 pi x)`` (elementwise); 50 training
points with Gaussian noise (std 0.05) and 100 noise-free validation points, drawn separately for each
task. Model ``fc1: Linear(64, 64) -> ReLU -> fc2: Linear(64, 64)``, base-trained for 250 full-batch Adam
steps (lr 1e-3, MSE); then adapted for 100 full-batch Adam steps (lr 1e-3) with an adapter on ``fc1``.
The validation loss is recorded after every step (step 0 = before adaptation; the paper plots every
10th). The minimum over steps 1-100 is the paper's adaptability indicator: the authors' script logs the
loss after each adaptation step, never before the first, so step 0 is not part of it.

Hyperparameters (SPEC §3.1): the authors' released script runs every low-rank baseline at scale 1 -- its
LoRA class with scale 1.0, DoRA with lora_alpha 1.0 at rank 1, PiSSA, ProLoRA, AdaLoRA and MoS with no
scaling factor -- so here LoRA, PiSSA and ProLoRA get alpha = r, DoRA alpha = 1, AdaLoRA alpha = r (PEFT's
scale alpha / r) and MoS alpha = its rank R = 4r. VeRA, MoRA, MiSS and MiSS-expand have no scaling factor.

Three protocols, all recorded:
  ``corrected``         the authors' hyperparameters; only the adapter's parameters train (the main result;
                        Full FT trains ``fc1``).
  ``as_released``       the authors' hyperparameters, and ``fc2`` (4,160 parameters) trains too, as in the
                        authors' script, which never froze it (Full FT then trains the whole model).
  ``library_defaults``  a sensitivity check, not the paper's protocol: as ``corrected``, but every adapter that
                        has a scaling factor at our classes' default (LoRA/ProLoRA/MoS alpha 16, i.e. scale 8
                        at r 2 and 2 for MoS; DoRA alpha 16; PiSSA alpha 8, scale 4; AdaLoRA alpha 8). The
                        methods without one would repeat their ``corrected`` runs and are not run again.

Methods and ranks (Table 12): Full FT; LoRA 2; VeRA 64; MiSS 4; PiSSA 2; DoRA 1; ProLoRA 2; AdaLoRA 2;
MoS 2; MoRA with r' = 16 (the paper gives no rank: 16 x 16 = 256 parameters, the budget of LoRA r2 and
MiSS r4); MiSS-expand (§4.1) with 4 output shards (4 x 64 = 256 parameters, MiSS r4's budget), a form no
released code ran. The resolved hyperparameters are saved in each record. AdaLoRA adds PEFT's orthogonal
regulariser (weight 0.5) to its training loss and trains at a fixed rank (no rank allocator); VeRA draws
its frozen projections from ``projection_prng_key = seed``.

Expected (paper §3.1): PiSSA (SVD-based) reaches a low loss, efficiency-oriented MoS a higher one, MiSS a
"relatively advanced" one; Full FT is the reference. ``python -m analysis`` turns the records into the
table of minimum validation losses (mean ± std over seeds), the curves of Fig. 2 and the claims verdicts.

Seeds: 43 (the paper's) and 19 more in every profile: the differences between adapters are far below
the seed-to-seed spread, so the tables compare methods on paired seeds (same base model and data).

Runtime (2-core CPU; the paper's full scale in every profile; 20 seeds x (2 protocols x 11 methods + 6
scaled methods) = 560 runs, ~50 s of CPU time): see the README (measured by ``run_all.sh``).
"""

from __future__ import annotations

import copy
import inspect
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from adapters import ADAPTER_PREFIX, adapter_layers, get_method, inject, trainable_parameters
from experiments.common.config import from_dict, override
from experiments.common.records import RunRecord
from experiments.common.runner import Context, Run, experiment_main
from experiments.common.seeding import seed_everything

EXPERIMENT = "no_free_lunch"
PROTOCOLS = ("corrected", "as_released", "library_defaults")
AUTHORS_PROTOCOLS = ("corrected", "as_released")      # the authors' hyperparameters (scale 1)
TRAINS_FC2 = ("as_released",)


@dataclass(frozen=True)
class MethodSpec:
    """One line of the method table: a label, the registry method, and what ``inject`` gets."""

    name: str                                   # label of the run and in the figure
    method: str                                 # adapters registry name
    hyper: dict[str, Any] = field(default_factory=dict)
    authors: dict[str, Any] = field(default_factory=dict)   # what the authors' script sets on top (scale 1)
    seeded: tuple[str, ...] = ()                # hyperparameters set to the run's seed
    regularizer: tuple[str, float] | None = None  # (layer method returning a penalty, weight)
    note: str = ""


# The paper's ranks (Table 12). MoRA and MiSS-expand are sized to 256 parameters, MiSS r4's budget.
# ``authors``: the scale-1 settings of the authors' released script (alpha = r; DoRA alpha 1; MoS alpha = R).
METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("full", "full", note="all of fc1 (weight and bias) trains"),
    MethodSpec("lora", "lora", {"r": 2}, authors={"alpha": 2.0}),
    MethodSpec("vera", "vera", {"r": 64}, seeded=("projection_prng_key",)),
    MethodSpec("miss", "miss", {"r": 4}),
    MethodSpec("pissa", "pissa", {"r": 2}, authors={"alpha": 2.0}),
    MethodSpec("dora", "dora", {"r": 1}, authors={"alpha": 1.0}),
    MethodSpec("prolora", "prolora", {"r": 2}, authors={"alpha": 2.0}),
    MethodSpec("adalora", "adalora", {"r": 2}, authors={"alpha": 2.0}, regularizer=("orthogonal_regularization", 0.5),
               note="fixed rank, PEFT's orthogonal regulariser (0.5)"),
    MethodSpec("mos", "mos", {"r": 2}, authors={"alpha": 8.0}, note="alpha = R = 4 r: scale 1"),
    MethodSpec("mora", "mora", {"r": 16}, note="r' = 16: 16 x 16 = 256 parameters (rank not given by the paper)"),
    MethodSpec("miss_expand", "miss_expand", {"shards": 4}, note="4 output shards x 64 = 256 parameters (§4.1)"),
)
METHOD_BY_NAME = {m.name: m for m in METHODS}


@dataclass(frozen=True)
class NFLConfig:
    seed: int = 43
    extra_seeds: int = 19            # seeds seed+1 .. seed+extra_seeds run besides the paper's
    features: int = 64
    hidden: int = 64
    n_train: int = 50
    n_valid: int = 100
    noise_std: float = 0.05
    base_steps: int = 250
    adapt_steps: int = 100
    base_lr: float = 1e-3
    adapt_lr: float = 1e-3
    eval_interval: int = 10          # the paper's plotting interval; every step is recorded anyway
    protocols: tuple[str, ...] = PROTOCOLS
    methods: tuple[str, ...] = tuple(m.name for m in METHODS)
    device: str = "cpu"              # tiny model: the CPU is faster and bit-for-bit repeatable
    threads: int = 1                 # intra-op threads only add synchronisation at this size

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            object.__setattr__(self, "methods", (self.methods,))
        if isinstance(self.protocols, str):
            object.__setattr__(self, "protocols", (self.protocols,))
        unknown = sorted(set(self.methods) - set(METHOD_BY_NAME))
        if unknown:
            raise ValueError(f"no_free_lunch: unknown method(s) {unknown}; known: {sorted(METHOD_BY_NAME)}")
        bad = sorted(set(self.protocols) - set(PROTOCOLS))
        if bad:
            raise ValueError(f"no_free_lunch: unknown protocol(s) {bad}; known: {list(PROTOCOLS)}")
        for name, least in (("extra_seeds", 0), ("base_steps", 0), ("n_train", 1), ("n_valid", 1),
                            ("adapt_steps", 1), ("features", 1), ("hidden", 1), ("threads", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ValueError(f"no_free_lunch: {name} must be an integer >= {least}, got {value!r}")
        if self.noise_std < 0 or self.base_lr <= 0 or self.adapt_lr <= 0:
            raise ValueError("no_free_lunch: noise_std must be >= 0 and the learning rates > 0")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.extra_seeds + 1))


# The experiment runs at the paper's scale, with the same 20 seeds, in every profile (it takes a minute).
SCALE: dict[str, NFLConfig] = {"cpu": NFLConfig(), "small": NFLConfig(), "paper": NFLConfig()}


class MLP(nn.Module):
    """``fc1 -> ReLU -> fc2``: the paper's "single-layer MLP" as its released code builds it."""

    def __init__(self, features: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def base_target(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * x)


def adapt_target(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * x) + 0.3 * torch.cos(3 * math.pi * x)


@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor


def make_split(cfg: NFLConfig, target, gen: torch.Generator, device: str) -> Split:
    """Training points (noisy) and validation points (noise-free) for one task, from ``gen``."""
    x_tr = torch.rand(cfg.n_train, cfg.features, generator=gen) * 2 - 1
    noise = torch.randn(cfg.n_train, cfg.features, generator=gen) * cfg.noise_std
    x_va = torch.rand(cfg.n_valid, cfg.features, generator=gen) * 2 - 1
    return Split(x_tr.to(device), (target(x_tr) + noise).to(device), x_va.to(device), target(x_va).to(device))


def train(model: nn.Module, params: list[nn.Parameter], data: Split, steps: int, lr: float,
          penalty=None) -> tuple[list[float], list[float]]:
    """Full-batch Adam on MSE. Returns (train loss before each step, validation loss after 0..steps steps)."""
    opt = torch.optim.Adam(params, lr=lr)

    def valid() -> float:
        with torch.no_grad():
            return F.mse_loss(model(data.x_valid), data.y_valid).item()

    train_curve, valid_curve = [], [valid()]
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(data.x_train), data.y_train)
        total = loss + penalty() if penalty is not None else loss
        total.backward()
        opt.step()
        train_curve.append(loss.item())
        valid_curve.append(valid())
    return train_curve, valid_curve


_BASE_CACHE: dict[tuple, tuple[MLP, Split, float]] = {}


def base_model(cfg: NFLConfig, seed: int) -> tuple[MLP, Split, float]:
    """The base-trained model, the adaptation data and the base task's final validation loss for ``seed``.

    Everything comes from ``seed`` alone (data from its own generator, weights from torch's), so every
    method of a seed starts from the very same model; the result is cached within the process.
    """
    key = (seed, cfg.features, cfg.hidden, cfg.n_train, cfg.n_valid, cfg.noise_std, cfg.base_steps,
           cfg.base_lr, cfg.device)
    if key not in _BASE_CACHE:
        gen = seed_everything(seed)
        base_data = make_split(cfg, base_target, gen, cfg.device)
        adapt_data = make_split(cfg, adapt_target, gen, cfg.device)
        model = MLP(cfg.features, cfg.hidden).to(cfg.device)
        _, base_valid = train(model, list(model.parameters()), base_data, cfg.base_steps, cfg.base_lr)
        _BASE_CACHE[key] = (model, adapt_data, base_valid[-1])
    model, adapt_data, base_loss = _BASE_CACHE[key]
    return copy.deepcopy(model), adapt_data, base_loss


def method_hyper(spec: MethodSpec, protocol: str, seed: int) -> dict[str, Any]:
    """What ``inject`` gets: the rank, the authors' scale-1 settings under their protocols, seeded keys."""
    authors = spec.authors if protocol in AUTHORS_PROTOCOLS else {}
    return {**spec.hyper, **authors, **{k: seed for k in spec.seeded}}


def resolved_hyper(spec: MethodSpec, protocol: str, seed: int) -> dict[str, Any]:
    """The hyperparameters ``inject`` gets, with the class defaults filled in (saved with the record)."""
    hyper = method_hyper(spec, protocol, seed)
    sig = inspect.signature(get_method(spec.method).__init__)
    defaults = {n: p.default for n, p in sig.parameters.items()
                if n not in ("self", "base_layer", "module_name", "shared") and p.default is not inspect.Parameter.empty}
    return {**defaults, **hyper}


def adapt(cfg: NFLConfig, spec: MethodSpec, protocol: str, seed: int) -> dict[str, Any]:
    """One adaptation run. Returns the curves, the parameter accounting and the trained model."""
    torch.set_num_threads(cfg.threads)
    model, data, base_loss = base_model(cfg, seed)
    torch.manual_seed(seed)  # adapter init depends on the seed only, not on which runs came before
    hyper = method_hyper(spec, protocol, seed)
    trainable_modules = ["fc2"] if protocol in TRAINS_FC2 else []
    inject(model, spec.method, ["fc1"], trainable_modules=trainable_modules, **hyper)
    params = [p for p in model.parameters() if p.requires_grad]
    layers = [layer for _, layer in adapter_layers(model)]
    penalty = None
    if spec.regularizer is not None:
        fn_name, weight = spec.regularizer

        def penalty():
            return weight * torch.stack([getattr(layer, fn_name)() for layer in layers]).mean()

    train_curve, valid_curve = train(model, params, data, cfg.adapt_steps, cfg.adapt_lr, penalty)
    fc1 = model.fc1
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    adapter_trainable = sum(p.numel() for p in fc1.parameters() if p.requires_grad)
    fc1_trainable = {n for n, p in fc1.named_parameters() if p.requires_grad}
    frozen_adapter = sum(t.numel() for n, t in fc1.state_dict().items()
                         if n.rsplit(".", 1)[-1].startswith(ADAPTER_PREFIX) and n not in fc1_trainable)
    # the minimum over steps 1..adapt_steps: the loss before the first step (index 0) is not adaptation
    finite = [v if math.isfinite(v) else math.inf for v in valid_curve]
    best = min(range(1, len(finite)), key=finite.__getitem__)
    return {
        "model": model,
        "train_loss": train_curve,
        "valid_loss": valid_curve,
        "min_valid_loss": finite[best],
        "min_valid_step": best,
        "final_valid_loss": valid_curve[-1],
        "initial_valid_loss": valid_curve[0],
        "base_task_valid_loss": base_loss,
        "trainable_params": trainable_parameters(model),
        "adapter_trainable_params": adapter_trainable,
        "adapter_frozen_elements": frozen_adapter,
        "formula_params": get_method(spec.method).trainable_count(fc1.out_features, fc1.in_features, **hyper),
        "trainable_tensors": trainable_names,
    }


# ---------------------------------------------------------------------------------------------- runner glue
def resolve_config(ctx: Context) -> NFLConfig:
    cfg = SCALE[ctx.profile.name]
    if ctx.args is not None and getattr(ctx.args, "seeds", None) is not None:
        cfg = override(cfg, EXPERIMENT, extra_seeds=ctx.args.seeds)
    return override(cfg, EXPERIMENT, **ctx.overrides) if ctx.overrides else cfg


def plan(ctx: Context) -> list[Run]:
    cfg = resolve_config(ctx)
    runs = []
    for seed in cfg.seeds:
        for protocol in cfg.protocols:
            for name in cfg.methods:
                spec = METHOD_BY_NAME[name]
                if protocol not in AUTHORS_PROTOCOLS and not spec.authors:
                    continue                 # no scaling factor: the same run as ``corrected``
                config = {**asdict(cfg), "method": spec.name, "registry_method": spec.method,
                          "protocol": protocol, "hyper": resolved_hyper(spec, protocol, seed),
                          "regularizer": list(spec.regularizer) if spec.regularizer else None, "note": spec.note}
                runs.append(Run(f"{protocol}-{name}-s{seed}", config, seed))
    return runs


def execute(run: Run, record: RunRecord, ctx: Context) -> None:
    cfg = from_dict(NFLConfig, {k: v for k, v in run.config.items() if k in NFLConfig.__dataclass_fields__},
                    EXPERIMENT)
    out = adapt(cfg, METHOD_BY_NAME[run.config["method"]], run.config["protocol"], run.seed)
    record.curves = {"valid_loss": out["valid_loss"], "train_loss": out["train_loss"]}
    record.trainable_params = out["trainable_params"]
    record.metrics = {k: out[k] for k in (
        "min_valid_loss", "min_valid_step", "final_valid_loss", "initial_valid_loss", "base_task_valid_loss",
        "adapter_trainable_params", "adapter_frozen_elements", "formula_params", "trainable_tensors")}


def add_arguments(parser) -> None:
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="run N more seeds after the paper's 43 (default: the profile's)")


def main(argv: list[str] | None = None) -> int:
    return experiment_main(EXPERIMENT, __doc__, plan, execute, argv=argv, add_arguments=add_arguments)


if __name__ == "__main__":
    sys.exit(main())
