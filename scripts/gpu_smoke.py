"""GPU smoke check: does this repository's code work on this machine's GPU, end to end, in minutes?

    bash scripts/gpu_smoke.sh                 # on one GPU, <= 8 minutes; exit 1 if a part failed
    python scripts/gpu_smoke.py --device cpu --quick   # the same parts on CPU in float32 (how CI tests this file)

It runs with whatever Python is active: a machine with a CUDA PyTorch but without our pinned stack (no
DeepSpeed, no vLLM, other transformers/peft versions) is the case it is written for. It never installs
anything; a part whose packages are missing is skipped with a line that names them. The parts:

1. environment: torch, CUDA, the GPU, and which of the optional packages import;
2. the ``gpu``-marked tests (``pytest -m gpu`` on the files that have them);
3. MiSS and LoRA through PEFT in the SFT trainer (HF ``Trainer``, bf16, a tiny random Llama on the local
   GSM8K sample): loss falls, adapter and MiSS's LoRA export saved;
4. MiSS and LoRA through our layers: bf16 training steps, saved in PEFT's format and reloaded by
   ``PeftModel.from_pretrained`` with the same logits, merged into the weights with the same logits;
5. generation with transformers from the merged model;
6. DeepSpeed (when importable): the same SFT run under ZeRO-2 on one GPU;
7. vLLM (when importable): MiSS's exact LoRA export served as a LoRA, greedy tokens equal to transformers';
8. ``python -m adapters.bench`` in bf16 at the paper's layer sizes (MiSS ours vs PEFT vs LoRA).

A JSON summary (one entry per part: status, seconds, what it measured) is written to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OPTIONAL = ("transformers", "peft", "accelerate", "tokenizers", "safetensors", "datasets", "deepspeed", "vllm",
            "pytest")


class Skip(Exception):
    """A part that cannot run here; the message says why."""


@dataclass
class Outcome:
    part: str
    status: str = "passed"          # passed | failed | skipped
    seconds: float = 0.0
    details: dict = field(default_factory=dict)
    message: str = ""


def missing(*names: str) -> None:
    absent = [n for n in names if importlib.util.find_spec(n) is None]
    if absent:
        raise Skip(f"not installed here: {', '.join(absent)} (this script never installs anything)")


@dataclass
class Smoke:
    device: str
    dtype_name: str
    out: Path
    quick: bool

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)

    # ---------------------------------------------------------------------------------------- the parts
    def environment(self) -> dict:
        import torch

        info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                "device": self.device, "dtype": self.dtype_name,
                "packages": {n: _version(n) for n in OPTIONAL}}
        if self.device == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda, but torch.cuda.is_available() is False "
                                   f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        return info

    def gpu_tests(self) -> dict:
        missing("pytest")
        if self.device != "cuda":
            raise Skip("the gpu-marked tests need CUDA")
        # every file with gpu-marked tests but this script's own test (its gpu test runs this script)
        files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                       if "mark.gpu" in p.read_text() and p.name != "test_gpu_smoke.py")
        if not files:
            raise Skip("no test file carries the gpu marker")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        tail = proc.stdout.strip().splitlines()[-1:] or [""]
        if proc.returncode != 0:
            raise RuntimeError(f"pytest -m gpu exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        return {"files": files, "summary": tail[0]}

    def tiny_model(self) -> Path:
        path = self.out / "tiny-llama"
        if not (path / "config.json").exists():
            from eval.generate_tiny import build_tiny_llama

            build_tiny_llama(path)
        return path

    def sft_config(self, method: str, name: str, deepspeed: str | None = None):
        from experiments.common.sft_trainer import SFTConfig

        return SFTConfig(model=str(self.tiny_model()), method=method, r=16 if method == "miss" else 8,
                         output_dir=str(self.out / name), data_source="local:gsm8k-metamath", max_samples=64,
                         lr=1e-3, max_steps=6 if self.quick else 20, global_batch=8, per_device_batch=4,
                         max_length=256, dtype=self.dtype_name, deepspeed=deepspeed, save_steps=0, seed=0)

    def sft_through_peft(self) -> dict:
        missing("transformers", "peft", "accelerate", "tokenizers", "safetensors")
        from experiments.common.sft_trainer import run_sft

        out = {}
        for method in ("miss", "lora"):
            result = run_sft(self.sft_config(method, f"sft-peft-{method}"))
            loss = result["curves"]["loss"]
            if not loss[-1] < loss[0]:
                raise RuntimeError(f"{method}: the loss did not fall ({loss[0]:.4f} -> {loss[-1]:.4f})")
            out[method] = {"loss_first": loss[0], "loss_last": loss[-1], "artifacts": sorted(result["artifacts"]),
                           "tokens_per_s": result["metrics"].get("train_tokens_per_s"),
                           "peak_memory_mb": result["metrics"].get("peak_memory_mb")}
        if "lora" not in out["miss"]["artifacts"]:
            raise RuntimeError("MiSS saved no exact LoRA export (lora/)")
        return out

    def our_layers(self) -> dict:
        missing("transformers", "peft", "safetensors")
        import peft
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import adapters

        path = self.tiny_model()
        tok = AutoTokenizer.from_pretrained(path)
        batch = tok(["Question: Janet has 3 apples and buys 5 more. How many apples does she have? "
                     "Answer: 3 + 5 = 8. The answer is: 8"] * 4, return_tensors="pt").to(self.device)
        out = {}
        for method, hyper in (("miss", {"r": 16}), ("lora", {"r": 8, "alpha": 16.0})):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype).to(self.device)
            adapters.inject(model, method, ["q_proj", "v_proj", "up_proj"], **hyper)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
            losses = []
            for _ in range(5):
                opt.zero_grad(set_to_none=True)
                loss = model(**batch, labels=batch["input_ids"]).loss
                loss.backward()
                opt.step()
                losses.append(loss.item())
            model.eval()
            with torch.no_grad():
                trained = model(**batch).logits.float()
            save_dir = self.out / f"ours-{method}"
            adapters.save_pretrained(model, save_dir, base_model_name_or_path=str(path))
            base = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype).to(self.device)
            with torch.no_grad():
                reloaded = peft.PeftModel.from_pretrained(base, save_dir).eval()(**batch).logits.float()
            adapters.merge(model)
            with torch.no_grad():
                merged = model(**batch).logits.float()
            tol = 1e-5 if self.dtype_name == "float32" else 5e-2    # bf16 rounds at ~3 significant digits
            diffs = {"peft_reload": (reloaded - trained).abs().max().item(),
                     "merged": (merged - trained).abs().max().item()}
            if not losses[-1] < losses[0] or max(diffs.values()) > tol * max(1.0, trained.abs().max().item()):
                raise RuntimeError(f"{method}: losses {losses[0]:.4f} -> {losses[-1]:.4f}, max |logit diff| {diffs}")
            out[method] = {"loss_first": losses[0], "loss_last": losses[-1], "max_abs_logit_diff": diffs,
                           "trainable": adapters.trainable_parameters(model)}
        return out

    def generate_hf(self) -> dict:
        missing("transformers")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.tiny_model()
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
        prompt = tok(["Below is an instruction that describes a task."], return_tensors="pt").to(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            ids = model.generate(**prompt, max_new_tokens=32, do_sample=False, pad_token_id=tok.eos_token_id)
        seconds = time.perf_counter() - t0
        new = ids.shape[1] - prompt["input_ids"].shape[1]
        if new <= 0:
            raise RuntimeError("generate returned no new tokens")
        return {"new_tokens": int(new), "seconds": round(seconds, 3), "text": tok.decode(ids[0][-new:])[:80]}

    def deepspeed_run(self) -> dict:
        missing("deepspeed", "transformers", "peft", "accelerate")
        if self.device != "cuda":
            raise Skip("the CPU DeepSpeed path is the test suite's (tests/test_sft_distributed.py)")
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        cfg = self.sft_config("miss", "sft-deepspeed-miss", deepspeed="zero2")
        cfg_path = Path(cfg.output_dir) / "sft_config.json"
        cfg_path.parent.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(json.dumps(cfg.to_dict()))
        exe = Path(sys.executable).with_name("deepspeed")
        argv = [str(exe) if exe.exists() else "deepspeed", "--num_gpus", "1", "--module",
                "experiments.common.sft_trainer", "--config", str(cfg_path)]
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        result_file = Path(cfg.output_dir) / "train_result.json"
        if proc.returncode != 0 or not result_file.exists():
            raise RuntimeError(f"deepspeed exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
        result = json.loads(result_file.read_text())
        return {"zero_stage": result["metrics"].get("zero_stage"), "loss": result["curves"]["loss"][-1]}

    def vllm_serving(self) -> dict:
        missing("vllm", "transformers", "peft")
        if self.device != "cuda":
            raise Skip("vLLM's CPU build is the test suite's (tests/test_lora_export.py)")
        lora_dir = self.out / "sft-peft-miss" / "lora"
        if not lora_dir.exists():
            raise Skip("part 3 (SFT through PEFT) did not leave MiSS's LoRA export")
        from eval.common import read_jsonl
        from eval.generate import generate

        outputs = {}
        for backend in ("vllm", "hf"):
            engine = {"device": self.device} if backend == "hf" else {"dtype": self.dtype_name}
            generate(str(self.tiny_model()), ["gsm8k"], self.out / backend, adapters=[f"miss={lora_dir}"],
                     backend=backend, limit=8, max_new_tokens=16, overwrite=True, progress=False, **engine)
            outputs[backend] = [row["output"] for row in read_jsonl(self.out / backend / "miss.jsonl")]
        same = sum(a == b for a, b in zip(outputs["vllm"], outputs["hf"]))
        # bf16 kernels differ between the engines; the tiny model's scaled head keeps most greedy picks apart
        return {"prompts": len(outputs["vllm"]), "identical_greedy_outputs": same}

    def layer_bench(self) -> dict:
        sizes = "256x256" if self.quick else "4096x4096,4096x11008"
        argv = [sys.executable, "-m", "adapters.bench", "--device", self.device, "--dtype", self.dtype_name,
                "--sizes", sizes, "--results-dir", str(self.out / "results"), "--run", "gpu_smoke"]
        if self.quick:
            argv += ["--tokens", "64", "--repeats", "3", "--init-repeats", "1", "--min-sample-ms", "5"]
        else:
            argv += ["--repeats", "10", "--init-repeats", "2"]
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"adapters.bench exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        print(proc.stdout, flush=True)
        from experiments.common.records import load_records

        (record,) = load_records(self.out / "results", "adapter_bench")
        return {f"{s['in']}x{s['out']}": s["ratios"] for s in record["metrics"]["per_size"]}


def _version(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    from importlib import metadata

    try:
        return metadata.version({"vllm": "vllm"}.get(name, name))
    except metadata.PackageNotFoundError:
        return "importable"


def run_part(name: str, fn: Callable[[], dict]) -> Outcome:
    print(f"\n=== {name} ===", flush=True)
    t0 = time.perf_counter()
    outcome = Outcome(name)
    try:
        outcome.details = fn() or {}
    except Skip as e:
        outcome.status, outcome.message = "skipped", str(e)
    except Exception as e:  # one broken part must not hide the others
        outcome.status, outcome.message = "failed", f"{type(e).__name__}: {e}"
        traceback.print_exc()
    outcome.seconds = round(time.perf_counter() - t0, 1)
    line = outcome.message or json.dumps(outcome.details, default=str)[:300]
    print(f"--- {name}: {outcome.status} ({outcome.seconds} s) {line}", flush=True)
    return outcome


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/gpu_smoke.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cuda (default) or cpu (the same parts in float32, to check this script without a GPU)")
    p.add_argument("--dtype", default=None, choices=("bfloat16", "float32"),
                   help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_smoke", help="scratch folder and summary.json")
    p.add_argument("--quick", action="store_true", help="fewer steps and a small benchmark layer (CI's check)")
    p.add_argument("--parts", default=None, help="comma-separated part numbers to run, e.g. 1,3,8 (default: all)")
    args = p.parse_args(argv)
    smoke = Smoke(args.device, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"), args.out, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = [("1 environment", smoke.environment), ("2 gpu-marked tests", smoke.gpu_tests),
             ("3 SFT through PEFT (HF Trainer): MiSS, LoRA", smoke.sft_through_peft),
             ("4 our layers: MiSS, LoRA; PEFT-format save/load; merge", smoke.our_layers),
             ("5 generation with transformers", smoke.generate_hf), ("6 DeepSpeed ZeRO-2", smoke.deepspeed_run),
             ("7 vLLM serving MiSS's LoRA export", smoke.vllm_serving), ("8 layer benchmark", smoke.layer_bench)]
    if args.parts:
        wanted = {s.strip() for s in args.parts.split(",")}
        parts = [(n, f) for n, f in parts if n.split()[0] in wanted]
    t0 = time.perf_counter()
    outcomes = [run_part(name, fn) for name, fn in parts]
    summary = {"device": args.device, "dtype": smoke.dtype_name, "quick": args.quick,
               "total_seconds": round(time.perf_counter() - t0, 1), "parts": [o.__dict__ for o in outcomes]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\n## GPU smoke summary ({args.device}, {smoke.dtype_name}, {summary['total_seconds']} s)\n")
    print("| part | status | seconds | note |\n|---|---|---:|---|")
    for o in outcomes:
        print(f"| {o.part} | {o.status} | {o.seconds} | {o.message[:120]} |")
    print(f"\nsummary: {args.out / 'summary.json'}")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
