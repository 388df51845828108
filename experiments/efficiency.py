"""Fig. 2 (middle, right) of the MiSS paper: initialisation time and training-step time against trainable
parameters for every adapter (§3.2; protocol in SPEC §3.2), plus the peak memory of a training step.

    python experiments/efficiency.py --profile cpu
    python experiments/efficiency.py --runs '64x64-*' --set methods=lora,miss,pissa

Protocol (the authors' released one): on the §3.1 model (``fc1: Linear(64, 64) -> ReLU -> fc2``, adapter on
``fc1``) each method runs at ranks 1, 2, 4, ..., 64 (MiSS-expand: that many output shards; MoRA: that
``r'``). *Init* is the time of ``inject`` on a fresh copy of the model (so PiSSA's SVD is inside), 20 timed
runs after 5 warm-ups. *Train step*: Adam (lr 1e-3) on MSE against random targets, batch of 32 random
inputs; 2 warm-up cycles of 10 steps, then 10 runs of 20 timed steps; one step includes
``zero_grad``, forward, backward and ``optimizer.step``. Medians and quartiles over the runs are recorded,
with the hardware. The same is measured on a realistic layer (one ``Linear`` of 4096 x 4096, and on a
GPU 4096 -> 11008 too), where the differences become visible (PiSSA's SVD dominates init).

Equal parameters: at the same rank MiSS trains fewer parameters than LoRA (d·r vs (d+k)·r), so Fig. 2's axis
(trainable parameters) asks for LoRA at MiSS's count too. LoRA (``equal_params_baseline``) is therefore also
timed at the ranks whose count equals MiSS's at each of the size's ranks (r/2 on a square layer), or, where
no integer rank does, at the two ranks that bracket it (the analysis interpolates between them).

Clocks: on a GPU, wall time with ``torch.cuda.synchronize`` around each interval. On the CPU profile, one
torch thread and the process's CPU time (``time.process_time``): on a shared machine other tenants
stretch wall time by whatever they run, CPU time of a single thread counts only this run's work. Wall
times are recorded beside it (``init_wall_s``, ``step_wall_s``); ``init_s``/``step_s`` use the size's clock.

Peak memory of a training step (after warm-up, so Adam's state exists): on CUDA,
``torch.cuda.max_memory_allocated`` during one step; on CPU, the bytes of every resident tensor
(parameters, buffers, optimizer state, the batch; storages counted once) plus the peak of the bytes
allocated during the step and not yet freed, read from the memory events of ``torch.profiler``
(``profile_memory=True``, the "Total Allocated" of its trace).

Expected (paper §3.2): MiSS initialises and trains fast at every size; PiSSA's SVD makes its init by far
the slowest (seconds at 4096 x 4096 on a CPU); VeRA and AdaLoRA initialise and compute cheaply.

Runtime: cpu (2 cores) ~2 min: the 64 x 64 protocol in full; 4096 x 4096 at ranks 8 and 64 (LoRA also at
4 and 32, MiSS's counts) with no init
warm-up, at most 3 timed inits within a 10 s budget per point (one full SVD takes ~20 s there on one
thread) and 3 runs of 5 timed steps. small (one GPU) ~10 min: 4096 x 4096 and 4096 -> 11008 at all
ranks, 5 inits, 5 x 10 steps. paper: the released repeat counts at every size, ~30 min on one GPU. (The
GPU times are estimates: those profiles have not been run yet.)
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from adapters import ADAPTER_PREFIX, AdapterError, METHODS as REGISTRY, get_method, inject, trainable_parameters
from adapters.registry import equal_count_ranks
from experiments.common.config import from_dict, override
from experiments.common.records import RunRecord
from experiments.common.runner import Context, Run, experiment_main
from experiments.no_free_lunch import MLP

EXPERIMENT = "efficiency"

# Every method of the registry that the paper's figure or its tables compare, in legend order.
ALL_METHODS = ("full", "lora", "lora_fa", "pissa", "dora", "vera", "adalora", "loha", "prolora", "mos", "mora",
               "miss", "miss_expand")
# The hyperparameter each method's size is swept over (``r`` unless listed); ``None``: no size (Full FT).
SIZE_KEY: dict[str, str | None] = {"full": None, "miss_expand": "shards"}
PAPER_RANKS = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_THREADS = torch.get_num_threads()


@dataclass(frozen=True)
class LayerSize:
    """One layer size and how hard to time it (the repeat counts are per profile)."""

    name: str
    d_out: int
    k_in: int
    model: str                      # "mlp": the §3.1 model, adapter on fc1; "linear": one Linear
    ranks: tuple[int, ...]
    init_warmup: int
    init_repeats: int
    train_warmup_cycles: int
    train_warmup_steps: int
    train_runs: int
    train_steps: int
    batch: int = 32
    init_budget_s: float | None = None   # stop timing inits (warm-up or timed, >= 1 timed) past this
    threads: int | None = None      # torch intra-op threads on CPU (None: torch's default, all cores)
    clock: str = "wall"             # what init_s / step_s measure: "wall", or "process" CPU time (CPU only)

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "process"):
            raise ValueError(f"efficiency: size {self.name}: clock must be 'wall' or 'process', got {self.clock!r}")
        if self.model not in ("mlp", "linear"):
            raise ValueError(f"efficiency: size {self.name}: model must be 'mlp' or 'linear', got {self.model!r}")
        if self.model == "mlp" and self.d_out != self.k_in:
            raise ValueError(f"efficiency: size {self.name}: the §3.1 MLP is square, got {self.d_out}x{self.k_in}")
        for name in ("init_repeats", "train_runs", "train_steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"efficiency: size {self.name}: {name} must be >= 1")
        if isinstance(self.ranks, int):
            object.__setattr__(self, "ranks", (self.ranks,))


@dataclass(frozen=True)
class EfficiencyConfig:
    sizes: tuple[LayerSize, ...]
    methods: tuple[str, ...] = ALL_METHODS
    lr: float = 1e-3
    device: str = "cpu"
    seed: int = 0
    memory: bool = True              # measure the peak memory of one training step
    hyper: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra per-method hyperparameters
    # also time this method (its count linear in its rank) at MiSS's trainable-parameter counts; None: don't
    equal_params_baseline: str | None = "lora"

    def __post_init__(self) -> None:
        sizes = tuple(s if isinstance(s, LayerSize) else from_dict(LayerSize, dict(s), "efficiency size")
                      for s in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        if isinstance(self.methods, str):
            object.__setattr__(self, "methods", (self.methods,))
        if len({s.name for s in sizes}) != len(sizes):
            raise ValueError("efficiency: layer size names must be unique")
        if self.device.startswith("cuda") and any(s.clock == "process" for s in sizes):
            raise ValueError("efficiency: process CPU time cannot see GPU work; use clock='wall' on CUDA")


PAPER_64 = dict(name="64x64", d_out=64, k_in=64, model="mlp", ranks=PAPER_RANKS, init_warmup=5, init_repeats=20,
                train_warmup_cycles=2, train_warmup_steps=10, train_runs=10, train_steps=20)
# On the CPU, one thread and the process's CPU time: at 64 x 64 torch's intra-op threads only add
# synchronisation (step times swung 10x between identical runs on 2 cores), and on a shared machine
# other tenants stretch wall time by whatever they run (a plain 4096 x 4096 matmul went from 15 ms to
# 200 ms). CPU time of one thread counts only our own work; wall times are recorded beside it.
CPU_CLOCK = dict(threads=1, clock="process")

SCALE: dict[str, EfficiencyConfig] = {
    "cpu": EfficiencyConfig(device="cpu", sizes=(
        LayerSize(**PAPER_64, **CPU_CLOCK),
        # No init warm-up here: the 64 x 64 runs before it have warmed every code path in this process,
        # and one PiSSA init at this size is a full SVD of ~20 s on one core.
        LayerSize("4096x4096", 4096, 4096, "linear", ranks=(8, 64), init_warmup=0, init_repeats=3,
                  train_warmup_cycles=1, train_warmup_steps=3, train_runs=3, train_steps=5, init_budget_s=10.0,
                  **CPU_CLOCK),
    )),
    "small": EfficiencyConfig(device="cuda", sizes=(
        LayerSize(**PAPER_64),
        LayerSize("4096x4096", 4096, 4096, "linear", ranks=PAPER_RANKS, init_warmup=2, init_repeats=5,
                  train_warmup_cycles=2, train_warmup_steps=10, train_runs=5, train_steps=10),
        LayerSize("4096x11008", 11008, 4096, "linear", ranks=PAPER_RANKS, init_warmup=2, init_repeats=5,
                  train_warmup_cycles=2, train_warmup_steps=10, train_runs=5, train_steps=10),
    )),
    "paper": EfficiencyConfig(device="cuda", sizes=(
        LayerSize(**PAPER_64),
        LayerSize(**{**PAPER_64, "name": "4096x4096", "d_out": 4096, "k_in": 4096, "model": "linear"}),
        LayerSize(**{**PAPER_64, "name": "4096x11008", "d_out": 11008, "k_in": 4096, "model": "linear"}),
    )),
}


# ---------------------------------------------------------------------------------------------- measuring
class OneLayer(nn.Module):
    """A single ``Linear`` (``layer``) for the realistic sizes."""

    def __init__(self, d_out: int, k_in: int) -> None:
        super().__init__()
        self.layer = nn.Linear(k_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def build_model(size: LayerSize, device: str) -> tuple[nn.Module, str]:
    if size.model == "mlp":
        return MLP(size.k_in, size.d_out).to(device), "fc1"
    return OneLayer(size.d_out, size.k_in).to(device), "layer"


def method_hyper(method: str, rank: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    key = SIZE_KEY.get(method, "r")
    hyper = dict(extra or {})
    if key is not None:
        hyper[key] = rank
    return hyper


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def quantiles(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of ``values`` (a single value gives all five equal)."""
    vals = sorted(values)
    if len(vals) == 1:
        q1 = q3 = vals[0]
    else:
        q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    return {"median": statistics.median(vals), "q1": q1, "q3": q3, "min": vals[0], "max": vals[-1], "n": len(vals)}


class Stopwatch:
    """Both clocks around one interval: wall time, and this process's CPU time (which a busy neighbour on
    a shared machine does not inflate; meaningful for single-threaded CPU runs only)."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __enter__(self) -> "Stopwatch":
        sync(self.device)
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    def read(self, clock: str) -> float:
        return self.wall if clock == "wall" else self.cpu


def time_init(base: nn.Module, target: str, method: str, hyper: dict[str, Any], size: LayerSize,
              device: str) -> tuple[dict[str, list[float]], nn.Module]:
    """Seconds of ``inject`` on fresh copies of ``base`` (both clocks); returns them and the last model."""
    timed: dict[str, list[float]] = {"wall": [], "process": []}
    spent = 0.0
    model = None
    for i in range(size.init_warmup + size.init_repeats):
        warm = i < size.init_warmup
        if size.init_budget_s is not None and spent > size.init_budget_s and (warm or timed["wall"]):
            if warm:
                continue
            break
        model = copy.deepcopy(base)
        with Stopwatch(device) as sw:
            inject(model, method, [target], **hyper)
        spent += sw.read(size.clock)
        if not warm:
            timed["wall"].append(sw.wall)
            timed["process"].append(sw.cpu)
    return timed, model


def make_step(model: nn.Module, size: LayerSize, lr: float, device: str, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(size.batch, size.k_in, generator=gen).to(device)
    y = torch.randn(size.batch, size.d_out, generator=gen).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        opt.step()

    return step, opt, (x, y)


def time_training(step, size: LayerSize, device: str) -> dict[str, list[float]]:
    """Seconds per step of each timed run (the run's time over its number of steps), both clocks."""
    for _ in range(size.train_warmup_cycles * size.train_warmup_steps):
        step()
    per_step: dict[str, list[float]] = {"wall": [], "process": []}
    for _ in range(size.train_runs):
        with Stopwatch(device) as sw:
            for _ in range(size.train_steps):
                step()
        per_step["wall"].append(sw.wall / size.train_steps)
        per_step["process"].append(sw.cpu / size.train_steps)
    return per_step


def _storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor):
            continue
        s = t.untyped_storage()
        key = (s.data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += s.nbytes()
    return total


@contextlib.contextmanager
def _without_kineto_banner():
    """Kineto (torch.profiler's C++ side) writes ``USDT: ... profiler_start`` / ``profiler_stop`` straight to
    file descriptor 2 on every profiled step, burying the progress lines of a run; no log level turns it
    off. Catch fd 2 for the block and write back every line but those."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not line.startswith("USDT:"):
                    sys.stderr.write(line)


def _profiled_transient_bytes(step) -> int:
    """Peak bytes allocated during ``step`` and not yet freed, from the CPU memory events of torch.profiler.

    The profiler's "Total Allocated" counts what was allocated while profiling (and is still alive) on
    top of a process-wide running count, so the peak is taken relative to the count when ``step`` began.
    """
    from torch.profiler import ProfilerActivity, profile

    with _without_kineto_banner(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("name") == "[memory]"
                      and e.get("args", {}).get("Device Type", 0) == 0]
    if not events:
        return 0
    events.sort(key=lambda e: e["ts"])
    first = events[0]["args"]
    start = first["Total Allocated"] - first["Bytes"]
    return max(0, max(e["args"]["Total Allocated"] for e in events) - start)


def step_memory(model: nn.Module, opt, batch, step, device: str) -> dict[str, Any]:
    """Peak bytes of one training step (see the module docstring for how)."""
    opt.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        sync(device)
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync(device)
        peak = torch.cuda.max_memory_allocated()
        return {"peak_bytes": peak, "resident_bytes": before, "transient_bytes": peak - before,
                "method": "torch.cuda.max_memory_allocated over one step"}
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    resident = _storage_bytes([*model.parameters(), *model.buffers(), *state, *batch])
    transient = _profiled_transient_bytes(step)
    return {"peak_bytes": resident + transient, "resident_bytes": resident, "transient_bytes": transient,
            "method": "resident tensor bytes + peak of torch.profiler CPU 'Total Allocated' over one step"}


def hardware_description(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"device": device, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else None
    except OSError:
        info["cpu"] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def measure(size: LayerSize, method: str, rank: int | None, cfg: EfficiencyConfig) -> dict[str, Any]:
    """Init times, step times, parameter counts and step memory of one (size, method, rank) point."""
    if not cfg.device.startswith("cuda"):
        torch.set_num_threads(size.threads or DEFAULT_THREADS)
    torch.manual_seed(cfg.seed)
    base, target = build_model(size, cfg.device)
    for p in base.parameters():
        p.requires_grad_(False)
    hyper = method_hyper(method, rank, cfg.hyper.get(method))
    init_times, model = time_init(base, target, method, hyper, size, cfg.device)
    del base
    layer = model.get_submodule(target)
    step, opt, batch = make_step(model, size, cfg.lr, cfg.device, cfg.seed)
    step_times = time_training(step, size, cfg.device)
    other = "wall" if size.clock == "process" else "process"
    out: dict[str, Any] = {
        "clock": size.clock,
        "init_s": quantiles(init_times[size.clock]),
        "step_s": quantiles(step_times[size.clock]),
        f"init_{other}_s": quantiles(init_times[other]),
        f"step_{other}_s": quantiles(step_times[other]),
        "init_times_s": init_times,
        "step_times_s": step_times,
        "trainable_params": trainable_parameters(model),
        "formula_params": get_method(method).trainable_count(size.d_out, size.k_in, **hyper),
        "adapter_elements": sum(t.numel() for n, t in layer.state_dict().items()
                                if n.rsplit(".", 1)[-1].startswith(ADAPTER_PREFIX)),
        "hyper": hyper,
        "hardware": hardware_description(cfg.device),
    }
    if cfg.memory:
        out["step_memory"] = step_memory(model, opt, batch, step, cfg.device)
    return out


# ---------------------------------------------------------------------------------------------- runner glue
def resolve_config(ctx: Context) -> EfficiencyConfig:
    cfg = SCALE[ctx.profile.name]
    return override(cfg, EXPERIMENT, **ctx.overrides) if ctx.overrides else cfg


def applicable(method: str, rank: int | None, size: LayerSize, extra: dict[str, Any] | None) -> bool:
    """False when the method rejects this size (e.g. a rank above the layer's width); unknown methods are
    planned anyway so that their run fails loudly."""
    if method not in REGISTRY:
        return True
    try:
        get_method(method).validate("probe", size.d_out, size.k_in, **method_hyper(method, rank, extra))
    except AdapterError:
        return False
    return True


def method_ranks(cfg: EfficiencyConfig, size: LayerSize, method: str) -> tuple[int | None, ...]:
    """The size's ranks; for the equal-parameter baseline also the ranks at MiSS's counts."""
    if SIZE_KEY.get(method, "r") is None:
        return (None,)
    ranks = set(size.ranks)
    if method == cfg.equal_params_baseline and "miss" in cfg.methods:
        for rank in size.ranks:
            if applicable("miss", rank, size, None):
                ranks |= equal_count_ranks(method, "miss", size.d_out, size.k_in, rank)
    return tuple(sorted(ranks))


def plan(ctx: Context) -> list[Run]:
    cfg = resolve_config(ctx)
    runs = []
    for size in cfg.sizes:
        for method in cfg.methods:
            for rank in method_ranks(cfg, size, method):
                if not applicable(method, rank, size, cfg.hyper.get(method)):
                    continue
                name = f"{size.name}-{method}" + ("" if rank is None else f"-r{rank}")
                config = {"size": asdict(size), "method": method, "rank": rank, "lr": cfg.lr, "device": cfg.device,
                          "seed": cfg.seed, "memory": cfg.memory, "hyper": cfg.hyper.get(method, {})}
                runs.append(Run(name, config, cfg.seed))
    return runs


def execute(run: Run, record: RunRecord, ctx: Context) -> None:
    c = run.config
    cfg = EfficiencyConfig(sizes=(), lr=c["lr"], device=c["device"], seed=c["seed"], memory=c["memory"],
                           hyper={c["method"]: c["hyper"]})
    out = measure(from_dict(LayerSize, c["size"], "efficiency size"), c["method"], c["rank"], cfg)
    record.trainable_params = out.pop("trainable_params")
    init, step = out.pop("init_times_s"), out.pop("step_times_s")
    record.curves = {**{f"init_{clock}_s": v for clock, v in init.items()},
                     **{f"step_{clock}_s": v for clock, v in step.items()}}
    record.metrics = out


def main(argv: list[str] | None = None) -> int:
    return experiment_main(EXPERIMENT, __doc__, plan, execute, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
