"""Benchmark (not a test): vLLM vs transformers ``generate``, same model, same prompts, tokens/s side by side.

    python -m eval.bench_generate                       # tiny random Llama (eval.generate_tiny), GSM8K prompts
    python -m eval.bench_generate --model DIR --n-prompts 64 --max-new-tokens 256 --repeats 5

Each backend runs in its own worker process, loaded once (vLLM on the CPU pins its threads and then
refuses ``torch.set_num_threads``, so the two cannot share a process fairly); the parent interleaves the
timed repeats (ABBA order: vllm, hf, hf, vllm, ...), so slow drifts of the machine hit both alike. Every
repeat decodes every prompt greedily for exactly ``--max-new-tokens`` tokens (EOS masked until then on
both sides: vLLM ``min_tokens``, transformers ``min_new_tokens``), so both do the same work; tokens/s is
new tokens over wall time of the whole batch, prefill included. One untimed warm-up run per backend.
The greedy tokens of the two backends are compared too. Prints a table and writes a result record
(``results/bench_generate/<run>.json``, ``experiments.common.records``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PREFIX = "BENCH "


# ---------------------------------------------------------------------------------------------- workers
def _send(obj: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _worker(backend: str, config: dict) -> None:
    """Load one backend, then answer ``run`` commands on stdin with timings and token ids."""
    import torch

    prompts, max_new = config["prompts"], config["max_new_tokens"]
    started = time.perf_counter()
    if backend == "vllm":
        if not torch.cuda.is_available():
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM, SamplingParams

        kwargs = dict(model=config["model"], dtype=config["dtype"], seed=0, enforce_eager=config["enforce_eager"])
        if config.get("max_model_len"):
            kwargs["max_model_len"] = config["max_model_len"]
        if not torch.cuda.is_available() and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kwargs["kv_cache_memory_bytes"] = 2**30  # not a fraction of the machine's memory
        llm = LLM(**kwargs)
        params = SamplingParams(temperature=0.0, max_tokens=max_new, min_tokens=max_new)

        def run() -> tuple[list[list[int]], int]:
            outs = llm.generate(prompts, params, use_tqdm=False)
            return [list(o.outputs[0].token_ids) for o in outs], sum(len(o.prompt_token_ids) for o in outs)
        info = {"vllm_version": __import__("vllm").__version__}
    else:
        import transformers

        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float32 if config["dtype"] in ("float32", "auto") and device == "cpu" else (
            getattr(torch, config["dtype"]) if config["dtype"] != "auto" else "auto")
        model = transformers.AutoModelForCausalLM.from_pretrained(config["model"], dtype=dtype).to(device).eval()
        tok = transformers.AutoTokenizer.from_pretrained(config["model"])
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        gen_cfg = transformers.GenerationConfig(max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False,
                                                num_beams=1, temperature=None, top_p=None, top_k=None,
                                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        batch_size = config["hf_batch_size"] or len(prompts)
        encoded = [tok(p).input_ids for p in prompts]

        def run() -> tuple[list[list[int]], int]:
            tokens: list[list[int]] = []
            with torch.inference_mode():
                for i in range(0, len(prompts), batch_size):
                    batch = tok.pad({"input_ids": encoded[i:i + batch_size]}, return_tensors="pt").to(device)
                    out = model.generate(**batch, generation_config=gen_cfg)
                    tokens += out[:, batch["input_ids"].shape[1]:].tolist()
            if device == "cuda":
                torch.cuda.synchronize()
            return tokens, sum(len(e) for e in encoded)
        info = {"transformers_version": transformers.__version__, "device": device, "hf_batch_size": batch_size}
    info["load_seconds"] = round(time.perf_counter() - started, 2)
    run()  # warm-up (compilation, allocator, caches)
    info["torch_threads"] = torch.get_num_threads()  # after the warm-up: vLLM's CPU backend lowers it when serving
    _send({"ready": True, "info": info})
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        tokens, prompt_tokens = run()
        seconds = time.perf_counter() - t0
        _send({"seconds": seconds, "output_tokens": sum(len(t) for t in tokens), "prompt_tokens": prompt_tokens,
               "tokens": tokens})


class Worker:
    def __init__(self, backend: str, config_path: Path, log_path: Path) -> None:
        self.backend = backend
        env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "eval.bench_generate", "--worker", backend,
                                      "--worker-config", str(config_path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
                                     cwd=Path(__file__).resolve().parents[1])
        self.info = self._read()["info"]

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        raise RuntimeError(f"{self.backend} worker exited (rc {self.proc.wait()}); see {self.log.name}")

    def run(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# ---------------------------------------------------------------------------------------------- parent
def _gsm8k_test(data_dir: str | None) -> Path | None:
    from eval.data_files import locate_first

    return locate_first(("gsm8k/test.jsonl",), data_dir)


def _prompts(data_dir: str | None, n: int) -> tuple[list[str], str]:
    from eval.common import ALPACA_HEADER, render_math_prompt

    if _gsm8k_test(data_dir) is not None:
        from eval import gsm8k

        return [ex["prompt"] for ex in gsm8k.load_examples(data_dir)[:n]], "gsm8k test (PiSSA prompt)"
    base = [f"{ALPACA_HEADER} Question {i}: what is {i} plus {2 * i}?" for i in range(n)]
    return [render_math_prompt(q) for q in base], "synthetic math prompts"


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from eval.generate_backends import vllm_installed

    work = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    prompts, prompt_source = _prompts(args.data_dir, args.n_prompts)
    model = args.model
    if model is None:
        from eval.common import read_jsonl
        from eval.generate_tiny import build_tiny_llama

        gsm8k_test = _gsm8k_test(args.data_dir)
        texts = [r["question"] for r in read_jsonl(gsm8k_test)[:300]] if gsm8k_test else []
        model = str(build_tiny_llama(work / "tiny_llama", texts))
    config = {"model": model, "prompts": prompts, "max_new_tokens": args.max_new_tokens, "dtype": args.dtype,
              "enforce_eager": args.enforce_eager, "hf_batch_size": args.hf_batch_size,
              "max_model_len": args.max_model_len}
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config))
    backends = [b for b in ("vllm", "hf") if b != "vllm" or vllm_installed()]
    load_before = os.getloadavg()[0]
    workers = {}
    try:
        for b in backends:
            print(f"loading {b} ...", file=sys.stderr, flush=True)
            workers[b] = Worker(b, config_path, work / f"{b}.log")
        runs: dict[str, list[dict]] = {b: [] for b in backends}
        for rep in range(args.repeats):
            order = backends if rep % 2 == 0 else backends[::-1]
            for b in order:
                runs[b].append(workers[b].run())
                r = runs[b][-1]
                print(f"  repeat {rep + 1}/{args.repeats} {b:5s} {r['seconds']:.3f} s "
                      f"{r['output_tokens'] / r['seconds']:.1f} tok/s", file=sys.stderr, flush=True)
    finally:
        for w in workers.values():
            w.close()
    shutil.rmtree(work, ignore_errors=True)  # kept (with the worker logs) when a worker failed

    results: dict[str, Any] = {}
    for b in backends:
        tps = [r["output_tokens"] / r["seconds"] for r in runs[b]]
        results[b] = {"output_tokens_per_run": runs[b][0]["output_tokens"],
                      "prompt_tokens_per_run": runs[b][0]["prompt_tokens"],
                      "seconds": [round(r["seconds"], 4) for r in runs[b]],
                      "tokens_per_s": [round(t, 1) for t in tps],
                      "tokens_per_s_median": round(statistics.median(tps), 1),
                      "tokens_per_s_min": round(min(tps), 1), "tokens_per_s_max": round(max(tps), 1),
                      **workers[b].info}
    if len(backends) == 2:
        a, b = runs["vllm"][0]["tokens"], runs["hf"][0]["tokens"]
        results["same_greedy_tokens"] = sum(x == y for x, y in zip(a, b))
        results["speedup_vllm_over_hf"] = round(results["vllm"]["tokens_per_s_median"]
                                                / results["hf"]["tokens_per_s_median"], 2)
    setup = {"model": args.model or "tiny random Llama (eval.generate_tiny: hidden 128, 2 layers, head_dim 32)",
             "n_prompts": len(prompts), "prompt_source": prompt_source, "max_new_tokens": args.max_new_tokens,
             "repeats": args.repeats, "dtype": args.dtype, "enforce_eager": args.enforce_eager,
             "hf_batch_size": args.hf_batch_size or len(prompts), "cpu_count": os.cpu_count(),
             # other processes on the machine skew the numbers; the 1-minute load average says how busy it was
             "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    return {"setup": setup, "results": results}


def format_table(report: dict[str, Any]) -> str:
    s, res = report["setup"], report["results"]
    lines = [f"{s['n_prompts']} prompts ({s['prompt_source']}), {s['max_new_tokens']} new tokens each, greedy, "
             f"{s['repeats']} interleaved repeats, dtype {s['dtype']}, {s['cpu_count']} CPUs "
             f"(1-min load average {s['load_average_1min'][0]} before, {s['load_average_1min'][1]} after)",
             f"{'backend':8s} {'version':>10s} {'threads':>7s} {'load s':>7s} {'tok/run':>8s} "
             f"{'s/run (median)':>14s} {'tok/s median':>12s} {'min':>8s} {'max':>8s}"]
    for b in ("vllm", "hf"):
        if b not in res:
            continue
        r = res[b]
        version = r.get("vllm_version") or r.get("transformers_version")
        lines.append(f"{b:8s} {version:>10s} {r['torch_threads']:>7d} {r['load_seconds']:>7.1f} "
                     f"{r['output_tokens_per_run']:>8d} {statistics.median(r['seconds']):>14.3f} "
                     f"{r['tokens_per_s_median']:>12.1f} {r['tokens_per_s_min']:>8.1f} {r['tokens_per_s_max']:>8.1f}")
    if "speedup_vllm_over_hf" in res:
        lines.append(f"vLLM / transformers: {res['speedup_vllm_over_hf']:.2f}x; identical greedy token sequences: "
                     f"{res['same_greedy_tokens']}/{s['n_prompts']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.bench_generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model directory or hub id (default: a tiny random Llama built on the fly)")
    p.add_argument("--data-dir", help="data directory searched first for the GSM8K test prompts (then "
                                      "$MISS_DATA_DIR, then the repository's data/)")
    p.add_argument("--n-prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--dtype", default="float32", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--enforce-eager", action="store_true", help="vLLM without compilation / CUDA graphs")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--hf-batch-size", type=int, default=0, help="0: all prompts in one batch (default)")
    p.add_argument("--results-dir", help="default: results/ of the repository")
    p.add_argument("--run", help="record name (default: tiny-<device> or the model's name)")
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--worker", choices=("vllm", "hf"), help=argparse.SUPPRESS)
    p.add_argument("--worker-config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(args.worker, json.loads(Path(args.worker_config).read_text()))
        return 0

    from experiments.common.records import DEFAULT_RESULTS_DIR, RunTracker

    from eval.generate_backends import cuda_device_count

    device = "cuda" if cuda_device_count() else "cpu"
    run = args.run or f"{Path(args.model).name if args.model else 'tiny'}-{device}"
    config = {k: v for k, v in vars(args).items() if not k.startswith("worker")}
    if args.no_record:
        report = benchmark(args)
    else:
        results_dir = Path(args.results_dir) if args.results_dir else DEFAULT_RESULTS_DIR
        with RunTracker(results_dir, "bench_generate", run, profile=device, config=config) as record:
            report = benchmark(args)
            record.metrics = report
        if record.status != "success":
            print(record.error, file=sys.stderr)
            return 1
        print(f"record: {results_dir / 'bench_generate' / (run + '.json')}", file=sys.stderr)
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
