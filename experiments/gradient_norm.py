"""Fig. 1: the gradient norm at initialisation of Full FT, LoRA, PiSSA and MiSS at ranks 32-256.

    python experiments/gradient_norm.py --profile cpu
    python experiments/gradient_norm.py --profile paper --task math --method miss,lora

Protocol (SPEC §3.3): Llama2-7B and Qwen3-4B, Math (MetaMathQA) and Code (CodeFeedback) batches built
exactly as for training (Alpaca prompt, loss on the response, max length 512); each method at the
paper's targets (q/k/v/o/gate/up/down) with LoRA alpha = 2r and PiSSA alpha = r (Table 10's
conventions), before any update. The quantity is the L2 norm of the gradient of all trainable parameters
of the mean response-token loss of one batch. The paper does not say how many batches: here
``n_batches`` batches of ``batch_size`` examples, drawn with a fixed seed from the first ``pool`` rows,
and the mean (and spread) of the per-batch norms is recorded, with every per-batch value.

Expected (paper Fig. 1): MiSS starts with a larger gradient norm than LoRA (closer to PiSSA / Full FT),
the paper's explanation of its faster early convergence. The cpu profile (tiny random Llama, ranks
8-64 because its layers are 64-128 wide: 1/32 of Llama2-7B's, as 8-64 is of 256-2048; 4 batches of 4)
only exercises the measurement: a random model's gradients say nothing about the paper's claim.

Runtime: cpu ~1 min (26 runs); paper (estimated, not run here) ~1 GPU-hour (52 model loads of 4-7B, one 80 GB GPU).
"""

from __future__ import annotations

import math
import os
import random
import shlex
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.config import override
from experiments.common.memory_plan import Layout, MethodSpec, RunPlan, add_dry_run_arguments, estimate, print_report, \
    report_row
from experiments.common.model_presets import get_preset
from experiments.common.records import RunRecord
from experiments.common.runner import Context, Run, experiment_main
from experiments.common.sft_experiment import TASK_DATA

EXPERIMENT = "gradient_norm"


@dataclass(frozen=True)
class GradNormSettings:
    models: tuple[str, ...]              # model presets
    model: str                           # tiny | small (the preset's stand-in) | paper (its hub id)
    data: str                            # local | hub
    ranks: tuple[int, ...]
    n_batches: int
    batch_size: int
    tasks: tuple[str, ...] = ("math", "code")
    methods: tuple[str, ...] = ("full", "lora", "pissa", "miss")
    pool: int = 2000                     # batches are drawn from the first `pool` rows
    max_length: int = 512
    seed: int = 42
    gradient_checkpointing: bool = False


PROFILES = {
    "cpu": GradNormSettings(models=("llama2-7b",), model="tiny", data="local", ranks=(8, 16, 32, 64),
                            n_batches=4, batch_size=4),
    "small": GradNormSettings(models=("llama2-7b", "qwen3-4b"), model="small", data="hub", ranks=(32, 64, 128, 256),
                              n_batches=8, batch_size=4),
    "paper": GradNormSettings(models=("llama2-7b", "qwen3-4b"), model="paper", data="hub", ranks=(32, 64, 128, 256),
                              n_batches=8, batch_size=4, gradient_checkpointing=True),
}


def add_arguments(p) -> None:
    p.add_argument("--task", default=None, help="math, code or both comma-separated")
    p.add_argument("--method", default=None, help="comma-separated methods (full, lora, pissa, miss)")
    add_dry_run_arguments(p)


def plan(ctx: Context) -> list[Run]:
    s = override(PROFILES[ctx.profile.name], where=f"--set for profile {ctx.profile.name}", **ctx.overrides)
    tasks = tuple(ctx.args.task.split(",")) if ctx.args.task else s.tasks
    methods = tuple(ctx.args.method.split(",")) if ctx.args.method else s.methods
    runs = []
    for name in s.models:
        for task in tasks:
            for method in methods:
                for r in ((None,) if method == "full" else s.ranks):
                    run = f"{name}-{task}-{method}" + (f"-r{r}" if r else "")
                    runs.append(Run(run, {"preset": name, "task": task, "method": method, "r": r,
                                          "settings": asdict(s)}, s.seed))
    return runs


def _model_id(s: GradNormSettings, preset) -> str:
    return {"small": preset.small_model, "paper": preset.hub_id}.get(s.model, s.model)


def dry_run(ctx: Context, runs: list[Run]) -> int:
    """``--dry-run``: memory of each run's one forward and backward pass (one process, no optimizer)."""
    rows = []
    for run in runs:
        s = GradNormSettings(**run.config["settings"])
        preset = get_preset(run.config["preset"])
        plan = RunPlan(model=_model_id(s, preset),
                       method=MethodSpec(run.config["method"], run.config["r"], None, preset.target_modules),
                       dtype="bfloat16" if ctx.profile.device == "cuda" else "float32", deepspeed=None,
                       layout=Layout(1, 1), per_device_batch=s.batch_size, seq_len=s.max_length,
                       gradient_checkpointing=s.gradient_checkpointing, optimizer=False)
        sets = [a for kv in ctx.args.overrides for a in ("--set", kv)]
        command = shlex.join([sys.executable, "experiments/gradient_norm.py", "--profile", ctx.profile.name, *sets,
                              "--runs", run.name])
        try:
            rows.append(report_row(run.name, plan, estimate(plan), ctx.args.gpu_mem, command))
        except (ValueError, ImportError) as e:
            rows.append(report_row(run.name, plan, None, ctx.args.gpu_mem, command, error=str(e)))
    return print_report(EXPERIMENT, rows, lambda r: f"{r['model']}, {r['method']}" + (f" r{r['r']}" if r["r"] else "")
                        + f", one GPU, {r['dtype']}, {r['per_device_batch']} x {r['seq_len']} tokens, no optimizer, "
                        f"gradient checkpointing {'on' if r['gradient_checkpointing'] else 'off'}")


def check_inputs(ctx: Context, runs: list[Run]) -> None:
    """The local training files and the tiny model's corpus the planned runs read, before the first run."""
    from eval.data_files import require
    from experiments.common.sft_data import local_source_files
    from experiments.common.tiny_model import CORPUS_FILES

    files: list[str] = []
    for run in runs:
        s = GradNormSettings(**run.config["settings"])
        files += local_source_files([TASK_DATA[run.config["task"]][s.data][0]])
        if s.model == "tiny":
            files += CORPUS_FILES
    require(files, ctx.data_dir)


def _batches(tokenizer, task: str, s: GradNormSettings, data_dir):
    from experiments.common.sft_data import DataSpec, prepare_tokenizer, read_pairs, sft_collator, tokenize_pairs

    source, qf, rf, _ = TASK_DATA[task][s.data]
    pairs = read_pairs(DataSpec(source, qf, rf, max_samples=s.pool), data_dir)
    need = s.n_batches * s.batch_size
    if len(pairs) < need:
        raise ValueError(f"{task}: {len(pairs)} rows, {need} needed for {s.n_batches} batches of {s.batch_size}")
    picked = [pairs[i] for i in random.Random(s.seed).sample(range(len(pairs)), need)]
    examples = tokenize_pairs(prepare_tokenizer(tokenizer), picked, s.max_length)
    collate = sft_collator(tokenizer)
    return [collate(examples[i:i + s.batch_size]) for i in range(0, need, s.batch_size)]


def execute(run: Run, record: RunRecord, ctx: Context) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from experiments.common.seeding import seed_everything
    from experiments.common.sft_trainer import SFTConfig, apply_method, count_trainable, torch_dtype

    s = GradNormSettings(**run.config["settings"])
    preset = get_preset(run.config["preset"])
    method, r = run.config["method"], run.config["r"]
    cuda = torch.cuda.is_available()
    if not cuda:     # see sft_experiment.launch_command: one thread is the robust choice on a shared CPU
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    if s.model == "tiny":
        from experiments.common.tiny_model import ensure_tiny_model

        model_path = str(ensure_tiny_model(Path(ctx.args.runs_dir) / "_cache", ctx.data_dir))
    else:
        model_path = _model_id(s, preset)
    record.runtime["model"] = model_path
    seed_everything(s.seed, deterministic=not cuda)

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    batches = _batches(tokenizer, run.config["task"], s, ctx.data_dir)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype("auto", cuda))
    model.config.use_cache = False
    # alpha=None: LoRA 2r, PiSSA r (the conventions of Table 10 at every rank)
    cfg = SFTConfig(model=model_path, method=method, r=r, output_dir="-", data_source="-",
                    target_modules=preset.target_modules)
    model = apply_method(model, cfg)
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method != "full":
            model.enable_input_require_grads()
    device = torch.device("cuda" if cuda else "cpu")
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]

    norms, losses = [], []
    for batch in batches:
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        norms.append(math.sqrt(sum(float(p.grad.detach().float().pow(2).sum()) for p in params if p.grad is not None)))
        losses.append(float(loss))
        model.zero_grad(set_to_none=True)

    record.trainable_params = count_trainable(model)
    record.metrics.update({
        "grad_norm_mean": statistics.fmean(norms),
        "grad_norm_std": statistics.stdev(norms) if len(norms) > 1 else 0.0,
        "grad_norm_first_batch": norms[0],
        "grad_norms": norms,
        "loss_mean": statistics.fmean(losses),
        "n_batches": len(batches),
        "batch_size": s.batch_size,
        "target_tokens_per_batch": [int((b["labels"] != -100).sum()) for b in batches],
        "rank": r,
        "device": device.type,
    })


def main(argv: list[str] | None = None) -> int:
    return experiment_main(EXPERIMENT, __doc__, plan, execute, argv=argv, add_arguments=add_arguments, dry_run=dry_run,
                           check_inputs=check_inputs)


if __name__ == "__main__":
    sys.exit(main())
