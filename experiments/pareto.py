"""Table 8 and Fig. 4 of the MiSS paper: the PEFT Pareto benchmark (SPEC §3.9).

    python experiments/pareto.py --profile cpu
    python experiments/pareto.py --profile cpu --method miss,lora --set max_steps=20
    python experiments/pareto.py --profile paper --runs 'miss*'

What it reproduces: Hugging Face PEFT's ``method_comparison/MetaMathQA`` benchmark, which the paper ran for
Table 8 (every PEFT method on Llama-3.2-3B, 5000 steps on MetaMathQA, GSM8K test accuracy against time and
memory) and plotted as Pareto fronts in Fig. 4. One run per method, each through PEFT: a method is one file
``experiments/configs/pareto/<method>.json`` holding only what differs from the §3.9 defaults (the PEFT
config of the benchmark's experiment it mirrors, and its learning rate if not 1e-4), plus the profile
overrides a smaller model needs. The protocol and what is measured: ``experiments/common/pareto_bench.py``.

Each method trains in its own child process (forked on CPU, spawned on CUDA), so its peak memory is its own
and a crash or an out-of-memory kill of one method becomes that method's ``failed`` record while the next
goes on. A finished method is skipped on the next call (``--force`` redoes it). One more run,
``side_by_side``, trains MiSS and LoRA in one process on the same batches, alternating steps, for the
fairest time ratio a shared machine allows.

Profiles (``--set KEY=VALUE`` overrides a field of ``BenchSettings``):

=======  =====================================================  ==========================================
profile  model and data                                         budget
=======  =====================================================  ==========================================
cpu      the tiny random Llama of the cpu profile (2 layers,    100 steps, batch 4, first 8 GSM8K test
         hidden 128); GSM8K train sample as MetaMathQA          questions, 24 new tokens, 1 torch thread
small    meta-llama/Llama-3.2-1B, MetaMathQA, GSM8K (hub)       1000 steps, 300 test questions
paper    meta-llama/Llama-3.2-3B, bf16, MetaMathQA, GSM8K       5000 steps, all 1319 test questions
=======  =====================================================  ==========================================

The cpu profile's accuracy column is a pipeline check (a random 2-layer model answers nothing); its time
and memory columns are real ratios between methods on this machine (memory = process RSS, not accelerator
memory). Generation uses transformers ``generate`` on the PEFT model: vLLM serves LoRA adapters only, not
prompt tuning, IA3, OFT, BOFT, VeRA, FourierFT and the rest of this list.

Expected (paper, Table 8): MiSS 0.508 test accuracy in 1867 s total / 1664 s train with 20.25 GB max
reserved, LoRA 0.482 in 1993 s / 1796 s with 22.27 GB; MiSS lies on both Pareto fronts.
Runtime: cpu 167 s on 2 idle cores in `bash run_all.sh` on a fresh clone (27 methods + the side-by-side run),
10 min with the cores shared by other jobs; paper (estimated, not run: no GPU here) ~30-45 min per method on one A100/H100 (BOFT ~3 h), going by Table 8's times.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.config import override
from experiments.common.pareto_bench import BenchSettings, load_methods, settings_dict
from experiments.common.records import REPO_ROOT, RunRecord, write_json_atomic
from experiments.common.runner import Context, Run, experiment_main

EXPERIMENT = "pareto"
CONFIG_DIR = REPO_ROOT / "experiments" / "configs" / "pareto"
SIDE_BY_SIDE = "side_by_side"

PROFILES: dict[str, BenchSettings] = {
    # eval_steps only sets the train-loss window here (no validation set): the last 20 steps, as the
    # benchmark's last 250 of 5000
    "cpu": BenchSettings(model="tiny", data="local", dtype="float32", max_steps=100, batch_size=4,
                         batch_size_eval=8, max_length=768, eval_steps=20, valid_size=0, test_size=8,
                         max_new_tokens=24, threads=1, side_by_side_steps=60),
    "small": BenchSettings(model="meta-llama/Llama-3.2-1B", data="hub", dtype="bfloat16", max_steps=1000,
                           eval_steps=250, valid_size=50, test_size=300, side_by_side_steps=100),
    "paper": BenchSettings(model="meta-llama/Llama-3.2-3B", data="hub", dtype="bfloat16", max_steps=5000,
                           eval_steps=250, valid_size=50, test_size=None, side_by_side_steps=200),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default=None,
                   help="comma-separated method names, side_by_side included (default: every config file and it)")
    p.add_argument("--configs-dir", type=Path, default=CONFIG_DIR,
                   help="directory of method configs <name>.json (default: experiments/configs/pareto)")


def settings_for(ctx: Context) -> BenchSettings:
    base = PROFILES[ctx.profile.name]
    return override(base, where=f"--set for profile {ctx.profile.name}", **ctx.overrides) if ctx.overrides else base


def plan(ctx: Context) -> list[Run]:
    settings = settings_for(ctx)
    specs = load_methods(ctx.args.configs_dir)
    # the side-by-side timing run comes with the full list, or when --method names it
    chosen = tuple(ctx.args.method.split(",")) if ctx.args.method else None
    wanted = tuple(m for m in chosen if m != SIDE_BY_SIDE) if chosen else settings.methods or tuple(specs)
    unknown = [m for m in wanted if m not in specs]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; configs in {ctx.args.configs_dir}: {sorted(specs)}")
    common = {"settings": settings_dict(settings), "configs_dir": str(ctx.args.configs_dir)}
    runs = [Run(m, {"method": m, "spec": specs[m].resolved(ctx.profile.name).__dict__, **common}, settings.seed)
            for m in wanted]
    side = chosen is None or SIDE_BY_SIDE in chosen
    if side and settings.side_by_side_steps > 0 and all(m in specs for m in settings.side_by_side):
        runs.append(Run(SIDE_BY_SIDE, {"method": SIDE_BY_SIDE, "methods": list(settings.side_by_side),
                                       "specs": [specs[m].resolved(ctx.profile.name).__dict__
                                                 for m in settings.side_by_side], **common}, settings.seed))
    return runs


def _child(job_path: str) -> None:
    """Entry of the child process: run the job, write ``result.json`` or ``error.json`` beside it."""
    job = json.loads(Path(job_path).read_text())
    out = Path(job["out_dir"])
    log = open(out / "run.log", "a")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        from experiments.common.pareto_bench import MethodSpec, run_method, run_side_by_side

        settings = BenchSettings(**job["settings"])
        data_dir = Path(job["data_dir"]) if job["data_dir"] else None
        if job["kind"] == SIDE_BY_SIDE:
            result = run_side_by_side([MethodSpec(**s) for s in job["specs"]], settings, job["model"], data_dir)
        else:
            result = run_method(MethodSpec(**job["spec"]), settings, job["model"], data_dir, out)
        write_json_atomic(out / "result.json", result)
    except BaseException as e:  # the parent turns this into the run's failed record
        write_json_atomic(out / "error.json", {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        log.flush()
        os._exit(1)
    log.flush()
    os._exit(0)


def resolve_model(settings: dict[str, Any], ctx: Context) -> str:
    if settings["model"] != "tiny":
        return settings["model"]
    from experiments.common.tiny_model import ensure_tiny_model

    return str(ensure_tiny_model(Path(ctx.args.runs_dir) / "_cache", ctx.data_dir))


def check_inputs(ctx: Context, runs: list[Run]) -> None:
    """The local GSM8K files and the tiny model's corpus the planned runs read, before the first run."""
    from eval import gsm8k
    from eval.data_files import require
    from experiments.common.sft_data import GSM8K_TRAIN
    from experiments.common.tiny_model import CORPUS_FILES

    files: list[str] = []
    for run in runs:
        settings = run.config["settings"]
        if settings["model"] == "tiny":
            files += CORPUS_FILES
        if settings["data"] == "local":
            files += [GSM8K_TRAIN, *gsm8k.SPEC.local_files]
    require(files, ctx.data_dir)


def execute(run: Run, record: RunRecord, ctx: Context) -> None:
    import torch

    out = Path(ctx.args.runs_dir) / EXPERIMENT / run.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model = resolve_model(run.config["settings"], ctx)
    record.runtime["model"] = model
    job = {"kind": run.config["method"] if run.name == SIDE_BY_SIDE else "method", "out_dir": str(out),
           "model": model, "data_dir": str(ctx.data_dir) if ctx.data_dir else None, **run.config}
    job_path = out / "job.json"
    job_path.write_text(json.dumps(job, indent=1))

    # fork keeps the imports (seconds per method on a small CPU); CUDA cannot be forked into
    method = "spawn" if torch.cuda.is_available() else "fork"
    if method == "fork":
        import peft  # noqa: F401
        import transformers.models.llama.modeling_llama  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    sys.stdout.flush()
    sys.stderr.flush()
    proc = multiprocessing.get_context(method).Process(target=_child, args=(str(job_path),))
    proc.start()
    proc.join()
    if (out / "error.json").exists():
        err = json.loads((out / "error.json").read_text())
        record.metrics["child_traceback"] = err["traceback"]
        raise RuntimeError(err["error"])
    if proc.exitcode != 0 or not (out / "result.json").exists():
        killed = f"killed by signal {-proc.exitcode}" if proc.exitcode and proc.exitcode < 0 else f"exit code {proc.exitcode}"
        hint = " (out of memory?)" if proc.exitcode == -9 else ""
        raise RuntimeError(f"the run's process ended with {killed}{hint} and no result; log: {out / 'run.log'}")
    result = json.loads((out / "result.json").read_text())
    if run.name == SIDE_BY_SIDE:
        record.curves = {**{f"step_time_s/{m}": t for m, t in result.pop("step_times_s").items()},
                         **{f"step_cpu_time_s/{m}": t for m, t in result.pop("step_cpu_times_s").items()}}
        record.metrics.update(result)
        return
    record.curves = {"loss": result.pop("losses"), "valid": result.pop("valid_curve")}
    record.metrics.update(result)
    record.trainable_params = result["trainable_params"]
    spec = run.config["spec"]
    record.metrics["paper_row"] = spec.get("paper_row")
    record.metrics["accuracy_is_pipeline_check"] = ctx.profile.name == "cpu"


def main(argv: list[str] | None = None) -> int:
    return experiment_main(EXPERIMENT, __doc__, plan, execute, argv=argv, add_arguments=add_arguments,
                           check_inputs=check_inputs)


if __name__ == "__main__":
    sys.exit(main())
