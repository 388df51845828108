"""What the LLM fine-tuning scripts share: the per-profile scale, the plan of runs, and the launch.

A script (``experiments/nlg_llama2_7b.py`` ...) is a model preset plus ``nlg_main``. Each run of its
plan (task x method x seed) is written to a JSON ``SFTConfig`` and trained by ``sft_trainer`` in a
child process started by the ``deepspeed`` launcher (or ``torchrun``, or plain ``python`` for one
process); the parent process reads the child's ``train_result.json`` into the run's result record.
Outputs of a run (checkpoints, adapter, merged model, log) go to ``<runs-dir>/<experiment>/<run>/``;
running the script again resumes an unfinished run from its last checkpoint (``--force`` starts over).
After the runs, the evaluation stage (``nlg_eval``) generates with and grades every trained run, writing
``results/<experiment>-eval/<run>.json`` (``--no-eval`` skips it). ``--dry-run`` trains nothing: it prints
each planned run's parameters, per-GPU memory and launch command (``memory_plan.py``).

Profiles (``--set KEY=VALUE`` overrides any field of ``NLGSettings``):

==========  =========================================  ==============================================
profile     model and data                             training
==========  =========================================  ==============================================
cpu         tiny random Llama (tiny_model.py; the RWKV   2 processes, DeepSpeed ZeRO-2 on CPU, global
            scripts: a tiny RWKV6/RWKV7 run through    batch 8, 30 steps, lr 1e-3 (a random model
            fla_cpu.py); GSM8K train sample as         barely moves at 2e-5 in 30 steps)
            MetaMathQA, MBPP train tasks as code
            instructions
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
import shlex
import socket
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .config import ConfigError, from_dict, override
from .memory_plan import Layout, MethodSpec, RunPlan, add_dry_run_arguments, estimate, print_report, report_row
from .model_presets import ModelPreset, get_preset, trainable_params
from .nlg_eval import EVAL_STAGE, add_eval_arguments
from .records import REPO_ROOT, RunRecord
from .runner import Context, Run, experiment_main
from .sft_data_cache import CACHE_ENV
from .sft_trainer import RESULT_FILE, SFTConfig, check_zero_stage, deepspeed_config, gradient_accumulation
from .streams import run_streamed

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
    report_to: tuple[str, ...] = ()      # e.g. tensorboard (logs under <run>/tensorboard) or wandb, if installed
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


# The RWKV scripts' cpu profile trains the methods of the paper's RWKV rows (no DoRA or full fine-tuning).
RWKV_PROFILES: dict[str, NLGSettings] = {**NLG_PROFILES, "cpu": replace(NLG_PROFILES["cpu"], methods=None)}


def settings_for(ctx: Context, table: dict[str, NLGSettings] = NLG_PROFILES) -> NLGSettings:
    base = table[ctx.profile.name]
    if not ctx.overrides:
        return base
    return override(base, where=f"--set for profile {ctx.profile.name}", **ctx.overrides)


def add_nlg_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default=None, help="math, code or both comma-separated (default: the preset's tasks)")
    p.add_argument("--method", default=None, help="comma-separated methods (default: the paper's for this model)")
    p.add_argument("--seed", default=None, help="comma-separated seeds (default: the profile's)")
    p.add_argument("--hostfile", default=None,
                   help="DeepSpeed hostfile ('host slots=N' per line, node 0 first) for a multi-node run; passed to "
                        "the launcher (with ssh from node 0, or with --nnodes: one launch per node, no ssh)")
    p.add_argument("--launcher-args", default="",
                   help="extra arguments for the launcher, e.g. \"--num_nodes 2 --master_addr node1\"")
    nodes = p.add_argument_group("multi-node without ssh (one launch per node, e.g. srun; see scripts/slurm_nlg.sbatch)")
    nodes.add_argument("--nnodes", type=int, default=1, help="machines in the job (default 1)")
    nodes.add_argument("--node-rank", type=int, default=0,
                       help="this machine's rank, 0..nnodes-1; node 0 writes the records and runs the eval stage")
    nodes.add_argument("--master-addr", default=None, help="address of node 0, reachable from every node")
    nodes.add_argument("--master-port", type=int, default=29500, help="a free TCP port on node 0 (default 29500)")
    add_eval_arguments(p)
    add_dry_run_arguments(p)


@dataclass(frozen=True)
class Nodes:
    """This process's place in a job of ``count`` machines, each started by its own launch (no ssh).

    Every node runs the same script with the same arguments but ``--node-rank``; the runs' output
    directories (checkpoints hold every rank's optimiser shard) must be on a filesystem all nodes share.
    """

    count: int = 1
    rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.rank < self.count:
            raise ValueError(f"--node-rank {self.rank} must be in 0..{self.count - 1} (--nnodes {self.count})")
        if self.count > 1 and not self.master_addr:
            raise ValueError("--nnodes > 1 needs --master-addr (the address of node 0, the same on every node)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Nodes":
        return cls(getattr(args, "nnodes", 1), getattr(args, "node_rank", 0), getattr(args, "master_addr", None),
                   getattr(args, "master_port", 29500))

    def write_hostfile(self, path: Path, slots: int) -> Path:
        """A DeepSpeed hostfile of ``count`` nodes with ``slots`` processes each. With ``--no_ssh`` the
        launcher only counts the lines (its world layout) and picks line ``rank``; the names are labels."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"node{i} slots={slots}\n" for i in range(self.count)))
        return path


def _csv(value: str | None, cast=str) -> tuple | None:
    return tuple(cast(v) for v in value.split(",") if v) if value else None


# --------------------------------------------------------------------------- plan
def sft_run(ctx: Context, settings: NLGSettings, preset: ModelPreset, task: str, method: str, seed: int,
            r: int | None = None, name: str | None = None) -> Run:
    """One planned run: its resolved ``SFTConfig`` (model path resolved at execute time for ``tiny``)."""
    if task not in TASK_DATA:
        raise ValueError(f"unknown task {task!r}; choose math or code")
    try:        # a usage error, reported before any run starts
        Nodes.from_args(ctx.args)
    except ValueError as e:
        raise ConfigError(str(e)) from None
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
        report_to=settings.report_to,
        # fla_cpu imports fla (which registers its RWKV models) and gives its Triton ops a CPU path
        import_modules=("experiments.common.fla_cpu",) if preset.family == "fla" else (),
        trust_remote_code=preset.family == "fla",
    )
    config = {"preset": preset.name, "paper_model": preset.paper_name, "task": task, "method": method,
              "settings": asdict(settings), "sft": sft.to_dict()}
    return Run(run_name, config, seed, output_dir=Path(sft.output_dir))


def nlg_plan(ctx: Context, preset: ModelPreset, table: dict[str, NLGSettings] = NLG_PROFILES) -> list[Run]:
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
                   cuda: bool, nodes: Nodes = Nodes()) -> tuple[list[str], dict[str, str]]:
    """argv and environment that start ``sft_trainer`` on ``config_path`` with the chosen launcher.

    With ``nodes.count > 1`` this is one node's launch of the job (every node runs its own): DeepSpeed's
    ``--no_ssh --node_rank`` with ``hostfile`` (required then; node 0 first), or torchrun's
    ``--nnodes --node_rank``; both rendezvous at ``nodes.master_addr:master_port``.
    """
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
    multi = nodes.count > 1
    if settings.launcher == "python":
        if multi:
            raise ValueError("launcher=python runs one process; use deepspeed or torchrun for --nnodes > 1")
        return [sys.executable, *module], env
    if settings.launcher == "torchrun":
        where = ([f"--nnodes={nodes.count}", f"--node_rank={nodes.rank}", f"--master_addr={nodes.master_addr}",
                  f"--master_port={nodes.master_port}"] if multi else [f"--master_port={_free_port()}"])
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc or 'gpu'}", *where,
                *extra, *module], env
    if settings.launcher != "deepspeed":
        raise ValueError(f"launcher must be deepspeed, torchrun or python, got {settings.launcher!r}")
    exe = Path(sys.executable).with_name("deepspeed")
    argv = [str(exe) if exe.exists() else "deepspeed"]
    if multi:
        if not hostfile:
            raise ValueError("a DeepSpeed launch per node (--nnodes > 1) needs the job's hostfile")
        argv += ["--hostfile", hostfile, "--no_ssh", "--node_rank", str(nodes.rank), "--num_nodes", str(nodes.count),
                 "--master_addr", nodes.master_addr, "--master_port", str(nodes.master_port)]
    elif hostfile:
        argv += ["--hostfile", hostfile]
    elif nproc:
        argv += ["--num_gpus", str(nproc)]
    if not multi and "--master_port" not in launcher_args:
        argv += ["--master_port", str(_free_port())]
    return [*argv, *extra, "--module", *module[1:]], env


def execute_sft(run: Run, record: RunRecord, ctx: Context) -> None:
    """Train one planned run in a launched child and copy its result into ``record``."""
    import torch

    settings = NLGSettings(**run.config["settings"])
    sft = dict(run.config["sft"])
    out = Path(sft["output_dir"])
    nodes = Nodes.from_args(ctx.args)
    # Node 0 owns the run's directory (it may clear it with --force while the others start); the
    # other nodes keep their launch files and log beside it. The training itself writes into `out`.
    own = out if nodes.rank == 0 else out.parent / f"_node{nodes.rank}" / out.name
    if sft["model"] == "tiny":
        from .tiny_model import TinyModelSpec, ensure_tiny_model

        spec = TinyModelSpec(architecture=get_preset(run.config["preset"]).cpu_stand_in)
        sft["model"] = str(ensure_tiny_model(Path(ctx.args.runs_dir) / "_cache", ctx.data_dir, spec))
    record.runtime["model"] = sft["model"]
    cfg = from_dict(SFTConfig, sft, where=f"run {run.name}")
    cuda = torch.cuda.is_available()
    slots = settings.nproc or (torch.cuda.device_count() if cuda else 1)
    if (settings.nproc or nodes.count > 1) and not ctx.args.hostfile:   # fail before launching if the batch cannot be split
        gradient_accumulation(cfg.global_batch, slots * nodes.count, cfg.per_device_batch)

    own.mkdir(parents=True, exist_ok=True)
    config_path = own / "sft_config.json"
    config_path.write_text(json.dumps(cfg.to_dict(), indent=1))
    hostfile = ctx.args.hostfile
    if nodes.count > 1 and not hostfile:
        hostfile = str(nodes.write_hostfile(own / "hostfile", slots))
    if nodes.rank == 0:
        (out / RESULT_FILE).unlink(missing_ok=True)
    argv, env = launch_command(settings, config_path, hostfile, ctx.args.launcher_args, cuda, nodes)
    env.setdefault(CACHE_ENV, str(Path(ctx.args.runs_dir) / "_cache"))     # the tokenised data, shared by the runs
    if cfg.report_to:
        env.setdefault("TENSORBOARD_LOGGING_DIR", str(out / "tensorboard"))
    record.runtime["launch"] = argv
    log = own / "train.log"
    print(f"[{ctx.experiment}/{run.name}] output {out}\n[{ctx.experiment}/{run.name}] log    {log}",
          file=sys.stderr, flush=True)
    rc = run_streamed(argv, log, env=env, cwd=REPO_ROOT)
    if rc != 0 or (nodes.rank == 0 and not (out / RESULT_FILE).exists()):
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"training exited with code {rc} (log: {log}); last lines:\n{tail}")
    if nodes.rank == 0:         # global rank 0 (on node 0) wrote the result; node 0 keeps the record
        fill_record(record, json.loads((out / RESULT_FILE).read_text()), run.config)


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


# --------------------------------------------------------------------------- --dry-run
ASSUMED_GPUS_PER_NODE = 8


def _launcher_option(launcher_args: str, name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` among the launcher arguments."""
    args = shlex.split(launcher_args)
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def read_hostfile(path: str) -> list[tuple[str, int]]:
    """``[(host, slots)]`` of a DeepSpeed hostfile (``host slots=N`` per line, ``#`` comments)."""
    hosts = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        host, _, slots = line.partition(" slots=")
        if not slots.strip().isdigit():
            raise ValueError(f"hostfile {path}, line {n}: expected 'host slots=N', got {line!r}")
        hosts.append((host.strip(), int(slots)))
    if not hosts:
        raise ValueError(f"hostfile {path} lists no hosts")
    return hosts


def launch_layout(settings: NLGSettings, hostfile: str | None, launcher_args: str, nodes: Nodes = Nodes()) -> Layout:
    """Nodes x processes per node the launch would start, read from the same settings the launch uses."""
    if settings.launcher == "python":
        return Layout(1, 1)
    if nodes.count > 1 and not hostfile:         # one launch per node (--nnodes): nproc (or every GPU) on each
        return replace(launch_layout(settings, None, launcher_args), nodes=nodes.count)
    gpus = _launcher_option(launcher_args, "--num_gpus") or _launcher_option(launcher_args, "--nproc_per_node")
    if settings.launcher == "deepspeed" and hostfile:
        hosts = read_hostfile(hostfile)
        nodes = _launcher_option(launcher_args, "--num_nodes")
        hosts = hosts[:int(nodes)] if nodes else hosts
        slots = {int(gpus)} if gpus else {s for _, s in hosts}
        if len(slots) != 1:
            raise ValueError(f"hostfile {hostfile}: hosts with different slot counts {sorted(slots)} are not planned; "
                             "pass --launcher-args '--num_gpus N'")
        return Layout(len(hosts), slots.pop())
    nodes = int(_launcher_option(launcher_args, "--nnodes") or _launcher_option(launcher_args, "--num_nodes") or 1)
    per_node = settings.nproc or (int(gpus) if gpus and gpus.isdigit() else None)
    if per_node:
        return Layout(nodes, per_node)
    import torch

    visible = torch.cuda.device_count()
    if visible:
        return Layout(nodes, visible)
    return Layout(nodes, ASSUMED_GPUS_PER_NODE,
                  assumed=f"no GPU is visible here and nproc is unset (every visible GPU): {ASSUMED_GPUS_PER_NODE} "
                          "GPUs per node assumed; pass --set nproc=N for another count")


def shell_command(argv: list[str], env: dict[str, str]) -> str:
    """``argv`` as one shell line, prefixed by the environment variables the launch sets or changes."""
    changed = [f"{k}={shlex.quote(v)}" for k, v in env.items() if os.environ.get(k) != v]
    return " ".join([*changed, shlex.join(argv)])


def run_plan(run: Run, ctx: Context) -> tuple[RunPlan, str]:
    """The memory plan of one planned SFT run and the exact command that would launch it."""
    settings = NLGSettings(**run.config["settings"])
    sft = from_dict(SFTConfig, run.config["sft"], where=f"run {run.name}")
    cuda = ctx.profile.device == "cuda"
    nodes = Nodes.from_args(ctx.args)
    layout = launch_layout(settings, ctx.args.hostfile, ctx.args.launcher_args, nodes)
    plan = RunPlan(
        model=sft.model, method=MethodSpec(sft.method, sft.r, sft.alpha, sft.target_modules, sft.method_kwargs),
        dtype=("bfloat16" if cuda else "float32") if sft.dtype == "auto" else sft.dtype,
        deepspeed=deepspeed_config(sft.deepspeed), layout=layout, per_device_batch=sft.per_device_batch,
        seq_len=sft.max_length, gradient_checkpointing=sft.gradient_checkpointing)
    hostfile = ctx.args.hostfile or (str(Path(sft.output_dir) / "hostfile") if nodes.count > 1 else None)
    argv, env = launch_command(settings, Path(sft.output_dir) / "sft_config.json", hostfile,
                               ctx.args.launcher_args, cuda, nodes)
    return plan, shell_command(argv, env)


def describe_run(row: dict[str, Any]) -> str:
    zero = "no DeepSpeed" if row["zero_stage"] is None else f"ZeRO-{row['zero_stage']}"
    rank = f" r{row['r']}" if row["r"] else ""
    return (f"{row['model']}, {row['method']}{rank}, {zero}, {row['nodes']} node(s) x {row['gpus_per_node']} GPU(s), "
            f"{row['dtype']}, {row['per_device_batch']} x {row['seq_len']} tokens per GPU, gradient checkpointing "
            f"{'on' if row['gradient_checkpointing'] else 'off'}")


def dry_run_sft(ctx: Context, runs: list[Run]) -> int:
    """``--dry-run``: each planned run's parameters, per-GPU memory and launch command; nothing is trained."""
    rows = []
    for run in runs:
        plan, command = run_plan(run, ctx)
        try:     # what the launch would refuse, refused here
            gradient_accumulation(run.config["sft"]["global_batch"], plan.layout.world_size, plan.per_device_batch)
            check_zero_stage(plan.method.method, plan.deepspeed)
            rows.append(report_row(run.name, plan, estimate(plan), ctx.args.gpu_mem, command))
        except (ValueError, ImportError) as e:     # a batch that cannot split; no stored dimensions; fla missing
            rows.append(report_row(run.name, plan, None, ctx.args.gpu_mem, command, error=str(e)))
    return print_report(ctx.experiment, rows, describe_run)


def nlg_main(experiment: str, preset_name: str, description: str, argv: list[str] | None = None,
             table: dict[str, NLGSettings] = NLG_PROFILES) -> int:
    preset = get_preset(preset_name)
    return experiment_main(experiment, description, lambda ctx: nlg_plan(ctx, preset, table), execute_sft,
                           argv=argv, add_arguments=add_nlg_arguments, stage=EVAL_STAGE, dry_run=dry_run_sft,
                           check_inputs=check_inputs)
