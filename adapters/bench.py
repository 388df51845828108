"""Speed of one adapted layer at LLM sizes: our MiSS vs PEFT's, MiSS vs LoRA at equal parameters, init cost.

    python -m adapters.bench                                   # 4096x4096, 4096x11008, 11008x4096; 4 x 512 tokens
    python -m adapters.bench --sizes 1024x1024 --tokens 512 --repeats 5   # a quick check

What it measures (SPEC §3.2 at a realistic layer, the sizes of Llama2-7B's attention and MLP projections):

* forward + backward time of one layer on ``tokens x in`` inputs (the input requires grad, as inside a
  network, so the frozen layer's own backward is part of every candidate): the frozen ``nn.Linear`` alone,
  our MiSS, PEFT's ``MissLinear`` (same ``r``), and our LoRA at the rank with MiSS's parameter count
  (``r * d_out == r_L * (d_in + d_out)``, rounded); the *overhead* of an adapter is its median minus the
  frozen layer's;
* init time of the adapter on an existing layer: MiSS (zeros), LoRA (Kaiming), PiSSA (our ``pissa``
  method: a full SVD of ``W0`` plus the residual), at the same ranks.

The machine is shared and noisy, so the candidates are timed round-robin within every repeat (the order
rotates between repeats) rather than one after another, and the report gives median and IQR. Sizes are
``INxOUT`` (``nn.Linear(IN, OUT)``). The record goes to ``results/adapter_bench/<device type>/<run>.json``.
On a GPU: ``python -m adapters.bench --device cuda --dtype bfloat16``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .methods.lora import LoRALinear
from .methods.miss import MiSSLinear
from .methods.pissa import PiSSALinear

DEFAULT_SIZES = "4096x4096,4096x11008,11008x4096"


@dataclass
class Candidate:
    name: str
    step: Callable[[], None]
    params: int


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            k_in, d_out = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--sizes: {item!r} is not INxOUT (e.g. 4096x11008)") from None
        sizes.append((k_in, d_out))
    return sizes


def equal_param_lora_rank(r_miss: int, k_in: int, d_out: int) -> int:
    """LoRA rank whose ``(d + k) r_L`` is closest to MiSS's ``r d``."""
    return max(1, round(r_miss * d_out / (k_in + d_out)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _frozen_linear(k_in: int, d_out: int, device: torch.device, seed: int, dtype: torch.dtype) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(k_in, d_out, bias=False, device=device, dtype=dtype)
    layer.weight.requires_grad_(False)
    return layer


def _peft_miss(base: nn.Linear, r: int) -> nn.Module:
    """PEFT's ``MissLinear`` around ``base``, built the way users build it (``get_peft_model``)."""
    import peft

    holder = nn.Module()
    holder.layer = base
    # PEFT would keep a bf16 layer's adapter in float32 (autocast_adapter_dtype); ours trains in the layer's
    # dtype, so both are timed in it
    wrapped = peft.get_peft_model(holder, peft.MissConfig(r=r, target_modules=["layer"]), autocast_adapter_dtype=False)
    return wrapped.base_model.model.layer


def _train_step(layer: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> Callable[[], None]:
    trainable = [p for p in layer.parameters() if p.requires_grad]

    def step() -> None:
        for p in trainable:
            p.grad = None
        x.grad = None
        layer(x).backward(grad_out)

    return step


def _randomise_trainable(layer: nn.Module) -> None:
    # A zero D or B could let a backend skip work; trained adapters are not zero.
    with torch.no_grad():
        for p in layer.parameters():
            if p.requires_grad:
                p.normal_(std=0.01)


def train_candidates(k_in: int, d_out: int, r: int, tokens: int, device: torch.device,
                     dtype: torch.dtype = torch.float32) -> list[Candidate]:
    base = _frozen_linear(k_in, d_out, device, seed=0, dtype=dtype)
    x = torch.randn(tokens, k_in, device=device, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(tokens, d_out, device=device, dtype=dtype)
    r_lora = equal_param_lora_rank(r, k_in, d_out)
    layers = {
        "frozen": base,
        "miss (ours)": MiSSLinear(copy.deepcopy(base), r=r),
        "miss (peft)": _peft_miss(copy.deepcopy(base), r),
        f"lora r={r_lora} (ours)": LoRALinear(copy.deepcopy(base), r=r_lora, alpha=2 * r_lora),
    }
    out = []
    for name, layer in layers.items():
        _randomise_trainable(layer)
        params = sum(p.numel() for p in layer.parameters() if p.requires_grad)
        out.append(Candidate(name, _train_step(layer, x, grad_out), params))
    return out


def init_candidates(k_in: int, d_out: int, r: int) -> list[tuple[str, Callable[[nn.Linear], nn.Module]]]:
    r_lora = equal_param_lora_rank(r, k_in, d_out)
    return [
        ("miss (ours)", lambda base: MiSSLinear(base, r=r)),
        (f"lora r={r_lora} (ours)", lambda base: LoRALinear(base, r=r_lora, alpha=2 * r_lora)),
        (f"pissa r={r_lora} (ours, full SVD)", lambda base: PiSSALinear(base, r=r_lora, alpha=r_lora)),
    ]


def round_robin(names: list[str], run_one: Callable[[str, int], float], repeats: int, warmup: int,
                min_sample_s: float = 0.0) -> tuple[dict[str, list[float]], int]:
    """``repeats`` per-call timings per name, one sample of each per round; the first name rotates every round.

    A sample runs ``inner`` calls and reports their mean; ``inner`` is chosen after the warm-up so that the
    fastest candidate's sample lasts at least ``min_sample_s`` (timer resolution and scheduler noise
    otherwise dominate small layers). Every candidate gets the same ``inner``.
    """
    fastest = float("inf")
    for _ in range(max(warmup, 1 if min_sample_s else 0)):
        for name in names:
            fastest = min(fastest, run_one(name, 1))
    inner = max(1, math.ceil(min_sample_s / fastest)) if min_sample_s else 1
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            times[name].append(run_one(name, inner))
    return times, inner


def summarise(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else [samples[0]] * 3
    return {"median_ms": qs[1] * 1e3, "q25_ms": qs[0] * 1e3, "q75_ms": qs[2] * 1e3,
            "iqr_ms": (qs[2] - qs[0]) * 1e3, "n": len(samples)}


def bench_size(k_in: int, d_out: int, args, device: torch.device) -> dict:
    dtype = getattr(torch, args.dtype)
    cands = {c.name: c for c in train_candidates(k_in, d_out, args.r, args.tokens, device, dtype)}

    def run_train(name: str, inner: int) -> float:
        step = cands[name].step
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        _sync(device)
        return (time.perf_counter() - t0) / inner

    train_times, inner = round_robin(list(cands), run_train, args.repeats, args.warmup, args.min_sample_ms / 1e3)
    train = {n: {**summarise(t), "trainable_params": cands[n].params} for n, t in train_times.items()}
    del cands

    inits = dict(init_candidates(k_in, d_out, args.r))
    source = _frozen_linear(k_in, d_out, device, seed=1, dtype=dtype)

    def run_init(name: str, _inner: int) -> float:  # one init per sample: no calibration
        base = copy.deepcopy(source)  # PiSSA rewrites W0 in place; every init starts from the same W0
        _sync(device)
        t0 = time.perf_counter()
        inits[name](base)
        _sync(device)
        return time.perf_counter() - t0

    init_times, _ = round_robin(list(inits), run_init, args.init_repeats, warmup=1)
    init = {n: summarise(t) for n, t in init_times.items()}

    med = {n: v["median_ms"] for n, v in train.items()}
    lora_name = next(n for n in train if n.startswith("lora"))
    pissa_name = next(n for n in init if n.startswith("pissa"))
    miss_over = med["miss (ours)"] - med["frozen"]
    lora_over = med[lora_name] - med["frozen"]
    ratios = {
        "ours_over_peft_miss": med["miss (ours)"] / med["miss (peft)"],
        "miss_overhead_over_lora_overhead": miss_over / lora_over if lora_over > 0 else None,
        "miss_overhead_ms": miss_over,
        "lora_overhead_ms": lora_over,
        "pissa_init_over_miss_init": init[pissa_name]["median_ms"] / init["miss (ours)"]["median_ms"],
    }
    return {"in": k_in, "out": d_out, "r_miss": args.r, "r_lora": equal_param_lora_rank(args.r, k_in, d_out),
            "steps_per_sample": inner, "train_step": train, "init": init, "ratios": ratios}


def _fmt(v: dict) -> str:
    return f"{v['median_ms']:.2f} ({v['iqr_ms']:.2f})"


def markdown(results: list[dict], args) -> str:
    lines = [f"Forward+backward, {args.tokens} tokens, {args.dtype}, {args.device}, {torch.get_num_threads()} threads; "
             f"median (IQR) ms per step over {args.repeats} round-robin "
             f"samples (steps per sample: {', '.join(str(r['steps_per_sample']) for r in results)}).", "",
             "| layer (in x out) | candidate | trainable params | fwd+bwd ms | overhead vs frozen ms |",
             "|---|---|---:|---:|---:|"]
    for res in results:
        frozen = res["train_step"]["frozen"]["median_ms"]
        for name, v in res["train_step"].items():
            over = "—" if name == "frozen" else f"{v['median_ms'] - frozen:+.2f}"
            lines.append(f"| {res['in']}x{res['out']} | {name} | {v['trainable_params']:,} | {_fmt(v)} | {over} |")
    lines += ["", f"Adapter init on an existing layer; median (IQR) ms over {args.init_repeats} repeats.", "",
              "| layer (in x out) | candidate | init ms |", "|---|---|---:|"]
    for res in results:
        for name, v in res["init"].items():
            lines.append(f"| {res['in']}x{res['out']} | {name} | {_fmt(v)} |")
    lines += ["", "| layer (in x out) | ours / PEFT MiSS (fwd+bwd) | MiSS overhead / LoRA overhead | PiSSA init / MiSS init |",
              "|---|---:|---:|---:|"]
    for res in results:
        q = res["ratios"]
        over = "—" if q["miss_overhead_over_lora_overhead"] is None else f"{q['miss_overhead_over_lora_overhead']:.2f}"
        lines.append(f"| {res['in']}x{res['out']} | {q['ours_over_peft_miss']:.3f} | {over} | "
                     f"{q['pissa_init_over_miss_init']:,.0f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adapters.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated INxOUT (default: %(default)s)")
    ap.add_argument("--tokens", type=int, default=4 * 512, help="batch x sequence (default: %(default)s = 4 x 512)")
    ap.add_argument("--r", type=int, default=64, help="MiSS rank; LoRA gets the equal-parameter rank (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=20, help="timed fwd+bwd rounds (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: %(default)s)")
    ap.add_argument("--min-sample-ms", type=float, default=200.0,
                    help="repeat a step within one sample until the fastest candidate takes this long (default: %(default)s)")
    ap.add_argument("--init-repeats", type=int, default=5, help="timed init rounds; PiSSA's SVD is slow (default: %(default)s)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                    help="dtype of the layer, its adapter and the inputs (default: %(default)s; bfloat16 on GPUs)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--run", default=None, help="record name (default: a timestamp)")
    ap.add_argument("--results-dir", default=None, help="default: <repo>/results")
    args = ap.parse_args(argv)

    from experiments.common.records import DEFAULT_RESULTS_DIR, RunTracker, record_path

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    run = args.run or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    config = {k: v for k, v in vars(args).items() if k not in ("run", "results_dir")}
    config["sizes"] = [list(s) for s in parse_sizes(args.sizes)]
    config["r_lora_rule"] = "round(r * out / (in + out)), LoRA alpha = 2 r_L"
    config["pissa"] = "adapters.methods.pissa (ours), full torch.linalg.svd"
    results_dir = args.results_dir or DEFAULT_RESULTS_DIR

    tracker = RunTracker(results_dir, "adapter_bench", run, profile=device.type, config=config)
    with tracker as record:
        load_before = os.getloadavg()  # other work on the machine inflates every number; keep the evidence
        results = [bench_size(k_in, d_out, args, device) for k_in, d_out in parse_sizes(args.sizes)]
        record.metrics = {"per_size": results, "torch_threads": torch.get_num_threads(),
                          "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": os.getloadavg()}
        print(markdown(results, args))
        print(f"\nload average (1, 5, 15 min) before {load_before}, after {os.getloadavg()}")
    print(f"\nrecord: {record_path(results_dir, 'adapter_bench', device.type, run)}", file=sys.stderr)
    return 0 if tracker.record.status == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
