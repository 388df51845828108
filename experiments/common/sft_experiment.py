"""What the LLM fine-tuning scripts share: the per-profile scale, the plan of runs, and the launch.

A script (``experiments/nlg_llama2_7b.py`` ...) is a model preset plus ``nlg_main``. Each run of its
plan (task x method x seed) is written to a JSON ``SFTConfig`` and trained by ``sft_trainer`` in a
child process started by the ``deepspeed`` launcher (or ``torchrun``, or plain ``python`` for one
process); the parent process reads the child's ``train_result.json`` into the run's result record.
Outputs of a run (checkpoints, adapter, merged model, log) go to ``<runs-dir>/<experiment>/<run>/``;
running the script again resumes an unfinished run from its last checkpoint (``--force`` starts over).
After the runs, the evaluation stage (``nlg_eval``) generates with and grades every trained run, writing
``results/<experiment>-eval/<run>.json`` (``--no-eval`` skips it).

Profiles (``--set KEY=VALUE`` overrides any field of ``NLGSettings``):

==========  =========================================  ==============================================
profile     model and data                             training
==========  =========================================  ==============================================
cpu         tiny random Llama (tiny_model.py); GSM8K   2 processes, DeepSpeed ZeRO-2 on CPU, global
            train sample as MetaMathQA, MBPP train     batch 8, 30 steps, lr 1e-3 (a random model
            tasks as code instructions                 barely moves at 2e-5 in 30 steps)
small       the preset's ~1B stand-in; first 20k rows  all visible GPUs, ZeRO-2, bf16, global batch 64,
            of MetaMathQA / CodeFeedback-Python105K    lr 2e-5, 1 epoch
paper       the paper's model; all 395k MetaMathQA     as small, full data, 2 seeds, the preset's global
            rows / CodeFeedback-Python105K             batch (Llama2-13B: 128)
==========  =========================================  ==============================================
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import from_dict, override
from .model_presets import ModelPreset, get_preset, trainable_params
from .nlg_eval import EVAL_STAGE, add_eval_arguments
from .records import REPO_ROOT, RunRecord
from .runner import Context, Run, experiment_main
from .sft_trainer import RESULT_FILE, SFTConfig, gradient_accumulation

DEFAULT_RUNS_DIR = REPO_ROOT / "runs"
TASK_DATA = {
    # task -> profile kind -> (source, query field, response field, max samples)
    "math": {"local": ("local:gsm8k-metamath", "query", "response", None),
             "hub": ("meta-math/MetaMathQA", "query", "response", None)},
    "code": {"local": ("local:mbpp-train", "query", "response", None),
             "hub": ("fxmeng/CodeFeedback-Python105K", "query", "response", None)},
}


@dataclass(frozen=True)
class NLGSettings:
    model: str                           # "tiny", "small" (the preset's stand-in), "paper" (its hub id) or a path/id
    data: str                            # "local" (the data/ benchmark files) or "hub"
    seeds: tuple[int, ...]
    lr: float
    max_steps: int                       # > 0 overrides epochs
    epochs: float = 1.0
    max_samples: int | None = None
    global_batch: int | None = None      # None: the preset's (64; Llama2-13B 128)
    per_device_batch: int = 4
    nproc: int | None = None             # processes per node; None: every visible GPU
    launcher: str = "deepspeed"          # deepspeed | torchrun | python (one process, no DeepSpeed)
    deepspeed: str | None = "zero2"
    save_steps: int = 500
    max_length: int = 512
    gradient_checkpointing: bool = False
    r: int | None = None                 # None: the paper's rank for each method (Tables 10/11)
    alpha: float | None = None           # None: the paper's alpha (or the method's convention when r is set)
    tasks: tuple[str, ...] | None = None     # None: the preset's
    methods: tuple[str, ...] | None = None   # None: the preset's


NLG_PROFILES: dict[str, NLGSettings] = {
    "cpu": NLGSettings(model="tiny", data="local", seeds=(42,), lr=1e-3, max_steps=30, global_batch=8,
                       per_device_batch=2, nproc=2, save_steps=10, deepspeed="zero2_cpu",
                       methods=("lora", "dora", "pissa", "miss", "full")),
    "small": NLGSettings(model="small", data="hub", seeds=(42,), lr=2e-5, max_steps=-1, max_samples=20000,
                         global_batch=64, per_device_batch=8, save_steps=100),
    "paper": NLGSettings(model="paper", data="hub", seeds=(42, 43), lr=2e-5, max_steps=-1, per_device_batch=4,
                         save_steps=500),
}


def settings_for(ctx: Context, table: dict[str, NLGSettings] = NLG_PROFILES) -> NLGSettings:
    base = table[ctx.profile.name]
    if not ctx.overrides:
        return base
    return override(base, where=f"--set for profile {ctx.profile.name}", **ctx.overrides)


def add_nlg_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default=None, help="math, code or both comma-separated (default: the preset's tasks)")
    p.add_argument("--method", default=None, help="comma-separated methods (default: the paper's for this model)")
    p.add_argument("--seed", default=None, help="comma-separated seeds (default: the profile's)")
    p.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("MISS_RUNS_DIR", DEFAULT_RUNS_DIR)),
                   help="checkpoints, adapters and merged models go here (default: runs/ or $MISS_RUNS_DIR)")
    p.add_argument("--hostfile", default=None,
                   help="DeepSpeed hostfile ('host slots=N' per line) for a multi-node run; passed to the launcher")
    p.add_argument("--launcher-args", default="",
                   help="extra arguments for the launcher, e.g. \"--num_nodes 2 --master_addr node1\"")
    add_eval_arguments(p)


def _csv(value: str | None, cast=str) -> tuple | None:
    return tuple(cast(v) for v in value.split(",") if v) if value else None


# --------------------------------------------------------------------------- plan
def sft_run(ctx: Context, settings: NLGSettings, preset: ModelPreset, task: str, method: str, seed: int,
            r: int | None = None, name: str | None = None) -> Run:
    """One planned run: its resolved ``SFTConfig`` (model path resolved at execute time for ``tiny``)."""
    if task not in TASK_DATA:
        raise ValueError(f"unknown task {task!r}; choose math or code")
    source, qf, rf, n = TASK_DATA[task][settings.data]
    paper_r, paper_alpha = preset.rank_alpha(method) if method in preset.hparams or method == "full" else (None, None)
    r = r or settings.r or paper_r
    alpha = settings.alpha if settings.alpha is not None else (paper_alpha if r == paper_r else None)
    if method != "full" and r is None:
        raise ValueError(f"{preset.paper_name}: no paper rank for {method!r}; pass --set r=N")
    global_batch = settings.global_batch or preset.global_batch
    run_name = name or f"{task}-{method}-s{seed}"
    model = {"tiny": "tiny", "small": preset.small_model, "paper": preset.hub_id}.get(settings.model, settings.model)
    sft = SFTConfig(
        model=model, method=method, output_dir=str(Path(ctx.args.runs_dir) / ctx.experiment / run_name),
        data_source=source, query_field=qf, response_field=rf, max_samples=settings.max_samples or n,
        data_dir=str(ctx.data_dir) if ctx.data_dir else None, target_modules=preset.target_modules,
        r=None if method == "full" else r, alpha=None if method in ("full", "miss") else alpha,
        lr=settings.lr, epochs=settings.epochs, max_steps=settings.max_steps, global_batch=global_batch,
        per_device_batch=settings.per_device_batch, max_length=settings.max_length,
        deepspeed=settings.deepspeed if settings.launcher != "python" else None,
        gradient_checkpointing=settings.gradient_checkpointing, seed=seed, save_steps=settings.save_steps,
        import_modules=("fla",) if preset.family == "fla" else (), trust_remote_code=preset.family == "fla",
    )
    config = {"preset": preset.name, "paper_model": preset.paper_name, "task": task, "method": method,
              "settings": asdict(settings), "sft": sft.to_dict()}
    return Run(run_name, config, seed)


def nlg_plan(ctx: Context, preset: ModelPreset, table: dict[str, NLGSettings] = NLG_PROFILES) -> list[Run]:
    if ctx.profile.name == "cpu" and preset.family == "fla":
        print(f"[{ctx.experiment}] {preset.paper_name} is not run in the cpu profile: flash-linear-attention's "
              "RWKV kernels are Triton-only (no CPU driver); use --profile small or paper on a GPU", file=sys.stderr)
        return []
    s = settings_for(ctx, table)
    tasks = _csv(ctx.args.task) or s.tasks or preset.tasks
    methods = _csv(ctx.args.method) or s.methods or preset.methods
    seeds = _csv(ctx.args.seed, int) or s.seeds
    return [sft_run(ctx, s, preset, t, m, seed) for t in tasks for m in methods for seed in seeds]


# --------------------------------------------------------------------------- execute
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(settings: NLGSettings, config_path: Path, hostfile: str | None, launcher_args: str,
                   cuda: bool) -> tuple[list[str], dict[str, str]]:
    """argv and environment that start ``sft_trainer`` on ``config_path`` with the chosen launcher."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    nproc = settings.nproc
    if not cuda:
        nproc = nproc or 1
        env.setdefault("DS_ACCELERATOR", "cpu")
        env["LOCAL_SIZE"] = str(nproc)          # DeepSpeed's CPU accelerator counts "devices" from this
        # One thread per process unless told otherwise: on a shared machine, OpenMP threads waiting on
        # each other while other jobs hold the cores slow steps down by an order of magnitude, at random.
        env.setdefault("OMP_NUM_THREADS", "1")
    module = ["-m", "experiments.common.sft_trainer", "--config", str(config_path)]
    extra = launcher_args.split()
    if settings.launcher == "python":
        return [sys.executable, *module], env
    if settings.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc or 'gpu'}",
                f"--master_port={_free_port()}", *extra, *module], env
    if settings.launcher != "deepspeed":
        raise ValueError(f"launcher must be deepspeed, torchrun or python, got {settings.launcher!r}")
    exe = Path(sys.executable).with_name("deepspeed")
    argv = [str(exe) if exe.exists() else "deepspeed"]
    if hostfile:
        argv += ["--hostfile", hostfile]
    elif nproc:
        argv += ["--num_gpus", str(nproc)]
    if "--master_port" not in launcher_args:
        argv += ["--master_port", str(_free_port())]
    return [*argv, *extra, "--module", *module[1:]], env


def execute_sft(run: Run, record: RunRecord, ctx: Context) -> None:
    """Train one planned run in a launched child and copy its result into ``record``."""
    import torch

    settings = NLGSettings(**run.config["settings"])
    sft = dict(run.config["sft"])
    out = Path(sft["output_dir"])
    if ctx.force and out.exists():
        shutil.rmtree(out)
    if sft["model"] == "tiny":
        from .tiny_model import ensure_tiny_model

        sft["model"] = str(ensure_tiny_model(Path(ctx.args.runs_dir) / "_cache", ctx.data_dir))
        record.config["sft"]["model"] = sft["model"]
    cfg = from_dict(SFTConfig, sft, where=f"run {run.name}")
    cuda = torch.cuda.is_available()
    if settings.nproc and not ctx.args.hostfile:      # fail before launching if the batch cannot be split
        gradient_accumulation(cfg.global_batch, settings.nproc, cfg.per_device_batch)

    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "sft_config.json"
    config_path.write_text(json.dumps(cfg.to_dict(), indent=1))
    (out / RESULT_FILE).unlink(missing_ok=True)
    argv, env = launch_command(settings, config_path, ctx.args.hostfile, ctx.args.launcher_args, cuda)
    record.config["launch"] = argv
    log = out / "train.log"
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(argv)}\n")
        f.flush()
        rc = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0 or not (out / RESULT_FILE).exists():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"training exited with code {rc} (log: {log}); last lines:\n{tail}")
    result = json.loads((out / RESULT_FILE).read_text())
    fill_record(record, result, run.config)


def check_inputs(ctx: Context, runs: list[Run]) -> None:
    """The data files the planned runs read, before the first run: the local training stand-ins, the tiny
    model's corpus and, when the runs are scored, the benchmarks (required without the hub; with it, only
    the copies that exist are checked, the rest come from the hub)."""
    from eval.data_files import locate, require
    from eval.tasks import TASKS

    from .nlg_eval import EVAL_TASKS, enabled
    from .sft_data import local_source_files
    from .tiny_model import CORPUS_FILES

    files: list[str] = []
    benchmarks: list[str] = []
    for run in runs:
        sft = run.config["sft"]
        files += local_source_files([sft["data_source"]])
        if sft["model"] == "tiny":
            files += CORPUS_FILES
        if enabled(ctx):
            benchmarks += [f for task in EVAL_TASKS[run.config["task"]] for f in TASKS[task].SPEC.local_files]
    if ctx.profile.hub_access:
        for f in dict.fromkeys(benchmarks):
            locate(f, ctx.data_dir, hub=True)
    else:
        files += benchmarks
    require(files, ctx.data_dir)


def fill_record(record: RunRecord, result: dict[str, Any], run_config: dict[str, Any]) -> None:
    m = result["metrics"]
    record.metrics.update(m)
    record.metrics["artifacts"] = result.get("artifacts", {})
    record.curves = result["curves"]
    record.trainable_params = m["trainable_params"]
    preset, method, sft = run_config["preset"], run_config["method"], run_config["sft"]
    # The count the paper's table prints: this method on the paper's model, whatever model trained here.
    record.metrics["paper_model_trainable_params"] = trainable_params(preset, method, sft.get("r"))


def nlg_main(experiment: str, preset_name: str, description: str, argv: list[str] | None = None) -> int:
    preset = get_preset(preset_name)
    return experiment_main(experiment, description, lambda ctx: nlg_plan(ctx, preset), execute_sft,
                           argv=argv, add_arguments=add_nlg_arguments, stage=EVAL_STAGE, check_inputs=check_inputs)
