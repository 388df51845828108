"""The one SFT trainer every LLM script uses (SPEC §3.5): HF ``Trainer`` + PEFT + DeepSpeed ZeRO.

One run = one ``SFTConfig``. Launch it on one or many machines with any launcher that sets the usual
``RANK``/``WORLD_SIZE`` variables::

    deepspeed --num_gpus 8 --module experiments.common.sft_trainer --config run.json
    deepspeed --hostfile hostfile --module experiments.common.sft_trainer --config run.json
    deepspeed --hostfile hostfile --no_ssh --node_rank R --master_addr node0 ...   # on each node R, no ssh
    torchrun --nproc_per_node 8 -m experiments.common.sft_trainer --config run.json

(the experiment scripts write ``run.json`` and call the launcher for you; see ``sft_experiment.py``).

What a run does:
- data: tokenised once into ``$MISS_CACHE_DIR/sft_data/`` (``$MISS_CACHE_DIR`` defaults to
  ``<runs-dir>/_cache``) by one process per node while the others wait; they, later seeds and methods on
  the same tokenizer, and resumed runs map that Arrow file instead of tokenising again (``sft_data``,
  ``sft_data_cache``);
- methods: ``lora``, ``dora``, ``pissa`` and ``miss`` through PEFT (as the authors trained them), any
  other method of ``adapters.METHODS`` through ``adapters.inject``, and ``full`` fine-tuning;
- AdamW, cosine schedule, no warmup, weight decay 0, gradient clipping 1.0, bf16 on GPU, global batch =
  devices x per-device batch x accumulation (checked, accumulation derived), DeepSpeed ZeRO-2 by default
  (``experiments/configs/zero2.json``; ``zero3`` (PEFT's methods and full fine-tuning) or none as options);
- checkpoints every ``save_steps`` under ``<output_dir>/checkpoints``; a run started again resumes from
  the last one (on CPU the resumed run ends with bit-identical adapter weights, see the tests);
- at the end (rank 0): the adapter in PEFT format (``adapter/``; methods PEFT lacks in our format, which
  ``adapters.load_pretrained`` reads, as it reads the PEFT ones), MiSS also as an exact LoRA
  (``lora/``), a merged full model for DoRA, PiSSA and full FT (``merged/``), and ``train_result.json``
  with the per-step loss, tokens seen and wall time, trainable parameters, peak memory and tokens/s.

PiSSA's ``adapter/`` is relative to the residual weights PiSSA leaves in the base model; use ``merged/``
(or load the adapter with the same PiSSA config, which recomputes the residual) to evaluate it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .records import REPO_ROOT, write_json_atomic
from .streams import progress_bars_wanted

PEFT_METHODS = ("lora", "dora", "pissa", "miss")
MERGED_EXPORT = ("dora", "pissa", "full")
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEEPSPEED_CONFIGS = {name: REPO_ROOT / "experiments" / "configs" / f"{name}.json"
                     for name in ("zero2", "zero3", "zero2_cpu")}
RESULT_FILE = "train_result.json"
# The Trainer integrations we document, and the package each one needs.
REPORT_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


@dataclass(frozen=True)
class SFTConfig:
    """Everything one training run depends on; saved with its result."""

    model: str                                   # hub id or local directory
    method: str                                  # lora | dora | pissa | miss | full | any adapters.METHODS name
    output_dir: str
    data_source: str                             # see sft_data.DataSpec
    query_field: str = "query"
    response_field: str = "response"
    data_split: str = "train"
    max_samples: int | None = None
    data_dir: str | None = None                  # searched first for the local: sources' files (eval.data_files)
    target_modules: tuple[str, ...] = LLAMA_TARGETS
    r: int | None = None
    alpha: float | None = None                   # None: the method's convention (LoRA/DoRA 2r, PiSSA r)
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float = 2e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_steps: int = -1                          # > 0 overrides epochs
    global_batch: int = 64
    per_device_batch: int = 4
    max_length: int = 512
    max_grad_norm: float = 1.0
    dtype: str = "auto"                          # auto: bfloat16 on GPU, float32 on CPU
    deepspeed: str | None = "zero2"              # zero2 | zero3 | zero2_cpu | a JSON path | None
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False              # RWKV's world tokenizer ships as custom code
    import_modules: tuple[str, ...] = ()         # imported before loading (e.g. "fla" registers RWKV6/7)
    seed: int = 42
    report_to: tuple[str, ...] = ()              # HF integrations: tensorboard, wandb, ... (must be installed)
    save_steps: int = 500                        # <= 0: no checkpoints (benchmarks)
    save_total_limit: int = 2
    logging_steps: int = 1
    export: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "import_modules", tuple(self.import_modules))
        object.__setattr__(self, "report_to", tuple(r for r in self.report_to if r != "none"))
        for integration in self.report_to:
            module = REPORT_MODULES.get(integration)
            if module is None:
                raise ValueError(f"report_to: {integration!r} is not one of {sorted(REPORT_MODULES)} (or none)")
            if importlib.util.find_spec(module) is None:
                raise ValueError(f"report_to={integration} needs the {module} package: pip install {module}")
        if self.method != "full" and self.method not in PEFT_METHODS:
            from adapters import METHODS

            if self.method not in METHODS:
                raise ValueError(f"unknown method {self.method!r}; use full, {', '.join(PEFT_METHODS)} "
                                 f"or an adapters method ({', '.join(sorted(METHODS))})")
        if self.method != "full" and (not isinstance(self.r, int) or self.r <= 0):
            raise ValueError(f"method {self.method!r} needs a positive integer rank r, got {self.r!r}")
        if self.global_batch <= 0 or self.per_device_batch <= 0:
            raise ValueError(f"global_batch ({self.global_batch}) and per_device_batch ({self.per_device_batch}) "
                             "must be positive")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"dtype must be auto, bfloat16, float16 or float32, got {self.dtype!r}")
        known = self.deepspeed is None or self.deepspeed in DEEPSPEED_CONFIGS or Path(self.deepspeed).is_file()
        if not known:
            raise ValueError(f"deepspeed must be one of {sorted(DEEPSPEED_CONFIGS)}, a JSON file or None; "
                             f"got {self.deepspeed!r}")

    @classmethod
    def from_json(cls, path: str | Path) -> "SFTConfig":
        from .config import from_dict

        return from_dict(cls, json.loads(Path(path).read_text()), where=str(path))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["import_modules"] = list(self.import_modules)
        return d


# --------------------------------------------------------------------------- pure helpers
def gradient_accumulation(global_batch: int, world_size: int, per_device_batch: int) -> int:
    """Accumulation steps so that ``world_size x per_device_batch x accumulation == global_batch``."""
    per_step = world_size * per_device_batch
    if global_batch % per_step:
        raise ValueError(
            f"global batch {global_batch} is not devices ({world_size}) x per-device batch ({per_device_batch}) "
            f"x an integer accumulation: {global_batch} / {per_step} = {global_batch / per_step:g}; "
            f"change per_device_batch or global_batch")
    return global_batch // per_step


def deepspeed_config(name: str | None) -> dict[str, Any] | None:
    if name is None:
        return None
    path = DEEPSPEED_CONFIGS.get(name, Path(name))
    cfg = json.loads(Path(path).read_text())
    cfg.pop("_comment", None)
    return cfg


def zero_stage(ds_config: dict[str, Any] | None) -> int:
    return int((ds_config or {}).get("zero_optimization", {}).get("stage", 0))


def check_zero_stage(method: str, ds_cfg: dict[str, Any] | None) -> None:
    """Refuse, before training (not at save time), a method that cannot run under ZeRO-3.

    PEFT's layers are ZeRO-3 aware (PiSSA's SVD and DoRA's norm gather the partitioned weight,
    Trainer.save_model gathers the adapter; tests/test_sft_distributed.py). Ours are not: saving reads the
    tensors as rank 0 holds them, and ZeRO-3 partitions every tensor above stage3_param_persistence_threshold
    (VeRA at threshold 0 saved 0-element tensors)."""
    if zero_stage(ds_cfg) == 3 and method not in (*PEFT_METHODS, "full"):
        raise ValueError(f"deepspeed: {method} cannot train with ZeRO-3: it trains with this repository's "
                         "adapter layers, which are not ZeRO-3 aware (they would be saved from rank 0's partition "
                         "of each tensor); use deepspeed=zero2, the adapter's state is small")


def torch_dtype(name: str, cuda: bool):
    import torch

    if name == "auto":
        return torch.bfloat16 if cuda else torch.float32
    return getattr(torch, name)


def count_trainable(model) -> int:
    """Trainable parameters; under ZeRO-3 a partitioned tensor reports its full size via ``ds_numel``."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += getattr(p, "ds_numel", p.numel())
    return total


def adapter_hyper(method: str, r: int | None, alpha: float | None, extra: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``adapters.inject``: ``r``/``alpha`` where the layer takes them, plus ``extra``."""
    from adapters import get_method

    accepted = set(inspect.signature(get_method(method).__init__).parameters)
    hyper = dict(extra)
    if "r" in accepted and r is not None:
        hyper.setdefault("r", r)
    if "alpha" in accepted and alpha is not None:
        hyper.setdefault("alpha", alpha)
    return hyper


def apply_method(model, cfg: SFTConfig):
    """Return the model to train for ``cfg.method`` (a ``PeftModel``, an injected model, or ``model``)."""
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if cfg.method in PEFT_METHODS:
        import peft
        from adapters.peft_configs import peft_config

        pcfg = peft_config(cfg.method, list(cfg.target_modules), r=cfg.r, alpha=cfg.alpha,
                           task_type="CAUSAL_LM", **cfg.method_kwargs)
        return peft.get_peft_model(model, pcfg)
    from adapters import inject

    hyper = adapter_hyper(cfg.method, cfg.r, cfg.alpha, cfg.method_kwargs)
    return inject(model, cfg.method, list(cfg.target_modules), **hyper)


def dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


# --------------------------------------------------------------------------- the Trainer subclass
def _trainer_classes():
    """Built lazily so importing this module (e.g. for SFTConfig) does not import transformers."""
    from transformers import Trainer, TrainerCallback

    class WallClock(TrainerCallback):
        """Training wall time, continued across resumes (offset = the last logged time before the kill)."""

        def __init__(self) -> None:
            self.t0 = None
            self.offset = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            times = [h["wall_time_s"] for h in state.log_history if "wall_time_s" in h]
            self.offset = times[-1] if times else 0.0
            self.t0 = time.perf_counter()

        def now(self) -> float:
            return self.offset + (time.perf_counter() - self.t0 if self.t0 is not None else 0.0)

    class SFTTrainer(Trainer):
        """``Trainer`` whose log entries also carry the training wall time (for the loss-vs-time figure)."""

        def __init__(self, *args, **kwargs) -> None:
            self.clock = WallClock()
            kwargs["callbacks"] = [self.clock, *(kwargs.get("callbacks") or [])]
            super().__init__(*args, **kwargs)

        def log(self, logs, start_time=None):
            logs["wall_time_s"] = round(self.clock.now(), 4)
            super().log(logs, start_time)

    return SFTTrainer


# --------------------------------------------------------------------------- the run
def run_sft(cfg: SFTConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train (or resume) one run; every rank calls this, rank 0 writes the outputs and returns the result."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from .seeding import seed_everything
    from .sft_data import DataSpec, build_dataset, sft_collator

    _, world = dist_info()
    accum = gradient_accumulation(cfg.global_batch, world, cfg.per_device_batch)
    cuda = torch.cuda.is_available()
    dtype = torch_dtype(cfg.dtype, cuda)
    ds_cfg = deepspeed_config(cfg.deepspeed)
    check_zero_stage(cfg.method, ds_cfg)
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    seed_everything(cfg.seed, deterministic=not cuda)
    for name in cfg.import_modules:
        importlib.import_module(name)

    tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    spec = DataSpec(cfg.data_source, cfg.query_field, cfg.response_field, cfg.data_split, cfg.max_samples)

    # The arguments come first: with ZeRO-3 they make from_pretrained load the weights partitioned.
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=cfg.per_device_batch,
        gradient_accumulation_steps=accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,     # a float < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        max_grad_norm=cfg.max_grad_norm,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=max(cfg.save_steps, 1),
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        deepspeed=ds_cfg,
        accelerator_config={"use_configured_state": _configure_cpu_deepspeed(ds_cfg, cuda, world)},
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        report_to=list(cfg.report_to),
        disable_tqdm=not progress_bars_wanted(),
        dataloader_num_workers=0,
    )
    if not progress_bars_wanted():
        import datasets

        datasets.disable_progress_bars()
    # One process per node tokenises into the cache (sft_data_cache), the others wait, then map its file;
    # per node rather than once, so that nodes without a shared file system each get their copy.
    with args.main_process_first(local=True, desc="tokenising the SFT data"):
        dataset = build_dataset(tokenizer, spec, Path(cfg.data_dir) if cfg.data_dir else None, cfg.max_length)

    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    model.config.use_cache = False
    total_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    model = apply_method(model, cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.method != "full":
            model.enable_input_require_grads()
    trainable = count_trainable(model)

    trainer = _trainer_classes()(
        model=model, args=args, train_dataset=dataset, data_collator=sft_collator(tokenizer),
        processing_class=tokenizer, callbacks=list(callbacks),
    )
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    train_out = trainer.train(resume_from_checkpoint=last)

    peak_mb, peak_kind = _peak_memory_max_over_ranks()
    artifacts = save_outputs(trainer, cfg, tokenizer, zero_stage(ds_cfg))
    result = _result(cfg, trainer, train_out, dataset, trainable, total_params, world, accum, peak_mb, peak_kind,
                     dtype, last, artifacts)
    if trainer.is_world_process_zero():
        write_json_atomic(out / RESULT_FILE, result)
    return result


def _configure_cpu_deepspeed(ds_cfg, cuda: bool, world: int) -> bool:
    """DeepSpeed across several CPU processes (the cpu profile): accelerate only counts the processes
    when it is given the gloo backend, which the Trainer does not pass on its DeepSpeed path; so the
    process state is set up here and the Trainer is told to use it. Returns whether it did."""
    if cuda or ds_cfg is None or world == 1:
        return False
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    state = PartialState(backend="gloo")
    if state.num_processes != world:
        raise RuntimeError(f"accelerate sees {state.num_processes} processes, the launcher started {world}")
    return True


def _peak_memory_max_over_ranks() -> tuple[float, str]:
    import torch

    from .records import peak_memory

    mb, kind = peak_memory()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        device = "cuda" if kind.startswith("cuda") else "cpu"
        t = torch.tensor([mb], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        mb = float(t.item())
    return round(mb, 1), kind + " (max over ranks)"


def _engine_zero_stage(trainer) -> int:
    """The ZeRO stage the DeepSpeed engine ran (0 without DeepSpeed): what happened, not what was asked."""
    engine = trainer.model_wrapped if trainer.is_deepspeed_enabled else None
    return int(engine.zero_optimization_stage()) if hasattr(engine, "zero_optimization_stage") else 0


def _curves(log_history: list[dict[str, Any]]) -> dict[str, list]:
    rows = [h for h in log_history if "loss" in h]
    return {
        "step": [h["step"] for h in rows],
        "loss": [h["loss"] for h in rows],
        "tokens_seen": [h.get("num_input_tokens_seen") for h in rows],
        "wall_time_s": [h.get("wall_time_s") for h in rows],
        "learning_rate": [h.get("learning_rate") for h in rows],
        "grad_norm": [h.get("grad_norm") for h in rows],
    }


def _result(cfg, trainer, train_out, dataset, trainable, total_params, world, accum, peak_mb, peak_kind,
            dtype, resumed_from, artifacts) -> dict[str, Any]:
    from .sft_data import dataset_stats

    curves = _curves(trainer.state.log_history)
    losses = [x for x in curves["loss"] if isinstance(x, (int, float)) and math.isfinite(x)]
    k = max(1, min(5, len(losses) // 4))
    tokens = trainer.state.num_input_tokens_seen
    wall = curves["wall_time_s"][-1] if curves["wall_time_s"] else None
    return {
        "config": cfg.to_dict(),
        "metrics": {
            "steps": trainer.state.global_step,
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "loss_first_k_mean": sum(losses[:k]) / k if losses else None,
            "loss_last_k_mean": sum(losses[-k:]) / k if losses else None,
            "loss_fell": bool(losses) and sum(losses[-k:]) / k < sum(losses[:k]) / k,
            "tokens_seen": tokens,
            "train_wall_time_s": wall,
            "tokens_per_s": round(tokens / wall, 1) if wall else None,
            "train_runtime_this_session_s": round(train_out.metrics.get("train_runtime", float("nan")), 3),
            "trainable_params": trainable,
            "total_params": total_params,
            "trainable_share": trainable / total_params if total_params else None,
            "train_peak_memory_mb": peak_mb,
            "train_peak_memory_kind": peak_kind,
            "world_size": world,
            "per_device_batch": cfg.per_device_batch,
            "gradient_accumulation": accum,
            "global_batch": cfg.global_batch,
            "zero_stage": _engine_zero_stage(trainer),
            "dtype": str(dtype).replace("torch.", ""),
            "device": "cuda" if trainer.args.device.type == "cuda" else trainer.args.device.type,
            "resumed_from": Path(resumed_from).name if resumed_from else None,
            "data": dataset_stats(dataset),
        },
        "curves": curves,
        "artifacts": artifacts,
    }


# --------------------------------------------------------------------------- outputs
def save_outputs(trainer, cfg: SFTConfig, tokenizer, stage: int) -> dict[str, str]:
    """Adapter (PEFT format or ours), MiSS as LoRA, merged model; returns ``{kind: path}``."""
    out = Path(cfg.output_dir)
    artifacts: dict[str, str] = {}
    if not cfg.export:
        return artifacts
    model = trainer.model
    if cfg.method == "full":
        trainer.save_model(str(out / "merged"))
        return {"merged": str(out / "merged")}
    if cfg.method in PEFT_METHODS:
        trainer.save_model(str(out / "adapter"))        # PEFT format; gathers ZeRO-3 shards itself
        artifacts["adapter"] = str(out / "adapter")
        if trainer.is_world_process_zero() and (cfg.method == "miss" or cfg.method in MERGED_EXPORT):
            if stage == 3:     # parameters are partitioned: rebuild from the saved files on rank 0
                from transformers.integrations.deepspeed import unset_hf_deepspeed_config

                unset_hf_deepspeed_config()     # else from_pretrained would partition again (a collective)
                model = load_trained_peft(cfg.model, out / "adapter", torch_dtype(cfg.dtype, False),
                                          cfg.trust_remote_code)
            artifacts.update(_export_peft(model, cfg, tokenizer, out))
        _barrier()
        return artifacts
    if trainer.is_world_process_zero():      # our layers: PEFT's format where PEFT has the method, ours otherwise
        from adapters import save_pretrained

        save_pretrained(model, out / "adapter", base_model_name_or_path=cfg.model, task_type="CAUSAL_LM")
        artifacts["adapter"] = str(out / "adapter")
    _barrier()
    return artifacts


def _barrier() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _export_peft(model, cfg: SFTConfig, tokenizer, out: Path) -> dict[str, str]:
    artifacts = {}
    if cfg.method == "miss":
        from adapters.lora_export import export_miss_peft_model_as_lora

        export_miss_peft_model_as_lora(model, out / "lora")
        tokenizer.save_pretrained(out / "lora")
        artifacts["lora"] = str(out / "lora")
    if cfg.method in MERGED_EXPORT:
        merged = model.merge_and_unload()
        merged.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
        artifacts["merged"] = str(out / "merged")
    return artifacts


def load_trained_peft(base: str, adapter_dir: Path, dtype, trust_remote_code: bool = False):
    """Base model + saved PEFT adapter, on CPU. For PiSSA, PEFT recomputes the residual weights from
    the config (the SVD is deterministic), so the loaded model equals the trained one."""
    import peft
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, trust_remote_code=trust_remote_code)
    return peft.PeftModel.from_pretrained(model, str(adapter_dir))


# --------------------------------------------------------------------------- entry point for launchers
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train one SFT run from a JSON SFTConfig (run under a launcher).")
    p.add_argument("--config", required=True, type=Path, help="JSON file with the SFTConfig fields")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)   # set by the deepspeed launcher
    args = p.parse_args(argv)
    fail_after = os.environ.get("MISS_SFT_FAIL_AFTER_STEP")
    run_sft(SFTConfig.from_json(args.config), callbacks=[fail_after_checkpoint(int(fail_after))] if fail_after else [])
    return 0


def fail_after_checkpoint(step: int):
    """A callback that kills the run right after the checkpoint of ``step`` is written, as a crash or a
    preempted job would (used by the resume tests, also through a real launcher via
    ``MISS_SFT_FAIL_AFTER_STEP``)."""
    from transformers import TrainerCallback

    class FailAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= step:
                raise SimulatedFailure(f"simulated failure after the checkpoint of step {state.global_step}")

    return FailAfterCheckpoint()


class SimulatedFailure(RuntimeError):
    pass


if __name__ == "__main__":
    sys.exit(main())
