"""What the classification experiments (GLUE, VTAB-1K) share: the method table, adapter injection with a
trainable head, parameter accounting, training through the HF ``Trainer``, and saving what trained.

One code path for every profile (scale is data in each experiment's profile table):

- ``train_classifier`` trains with ``transformers.Trainer``: AdamW (weight decay skips biases and
  LayerNorm weights), a warmup-then-decay schedule, gradient clipping, bf16 autocast on CUDA (fp32 master
  weights) and fp32 on CPU, a progress bar on a terminal (one line per epoch otherwise), the dev metrics
  after every epoch, and a checkpoint after every epoch. A run started again resumes from its last epoch
  checkpoint and ends where an uninterrupted run ends (on CPU bit for bit: the Trainer restores the
  optimizer, scheduler and random-number states; tests/test_classification_training.py).
- Checkpoints and the final outputs hold only the tensors that trained (adapter + head; every tensor for
  full fine-tuning): the frozen backbone is rebuilt from its source, so an adapter checkpoint of
  RoBERTa-base is ~4 MB instead of 500 MB.
- A device that is asked for and absent is an error (``require_device``), never a silent CPU run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapters import adapter_state_dict, get_method, inject, trainable_parameters

from .config import ConfigError
from .records import write_json_atomic

CHECKPOINT_DIR = "checkpoints"
TRAINED_DIR = "trained"                    # the final adapter + head of a run, under its output_dir
ADAPTER_FILE = "adapter.safetensors"       # adapters.save_adapter's tensors
TRAINED_FILE = "trained.safetensors"       # every other tensor that trained: the head (all, for full FT)
META_FILE = "classifier.json"              # how to rebuild the model the tensors belong to


@dataclass(frozen=True)
class MethodSpec:
    """One line of a method table: the label, the adapters registry name and what ``inject`` gets.

    ``method == "full"`` means full fine-tuning: every parameter of the model trains, nothing is injected.
    ``lr`` overrides the task's learning rate for this method (full fine-tuning needs a smaller one).
    """

    name: str
    method: str
    hyper: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    note: str = ""


def apply_method(model: nn.Module, spec: MethodSpec, targets: Sequence[str], head_modules: Sequence[str]) -> None:
    """Make ``model`` train ``spec``'s parameters plus the classifier head (changes it in place)."""
    if spec.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return
    inject(model, spec.method, list(targets), trainable_modules=list(head_modules), **spec.hyper)


def parameter_counts(model: nn.Module, base_total: int) -> dict[str, Any]:
    """Trainable parameters split into the adapter's and the rest (the head), with their shares of the base model.

    ``base_total`` is the parameter count of the model before injection (backbone + head). The paper's
    "Trainable" column of Table 4 is the adapter's share: LoRA r8 on RoBERTa-base's query/value is
    294,912 / 124,647,170 = 0.2366%, printed as 0.236%.
    """
    from adapters import ADAPTER_PREFIX

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    adapter = sum(p.numel() for n, p in trainable if any(s.startswith(ADAPTER_PREFIX) for s in n.split(".")))
    total = trainable_parameters(model)
    return {
        "trainable_params": total,
        "adapter_params": adapter,
        "head_params": total - adapter,
        "base_params": base_total,
        "adapter_share_pct": 100.0 * adapter / base_total,
        "trainable_share_pct": 100.0 * total / base_total,
    }


def formula_params(spec: MethodSpec, shapes: Iterable[tuple[int, int]]) -> int | None:
    """The adapter's trainable count from the closed form of SPEC §2 over the targets' ``(d_out, k_in)``."""
    if spec.method == "full":
        return None
    cls = get_method(spec.method)
    return sum(cls.trainable_count(d, k, **spec.hyper) for d, k in shapes)


# ---------------------------------------------------------------------------------------------- device
def require_device(device: str, where: str) -> None:
    """Refuse a device this machine does not have, naming the setting (``where``) that asked for it."""
    if device == "cpu":
        return
    if device != "cuda":
        raise ConfigError(f"{where}: device must be 'cpu' or 'cuda', got {device!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"{where}: device='cuda' but this machine has no CUDA device "
                          "(torch.cuda.is_available() is False); run it on a GPU, or train on the CPU on purpose "
                          "with --set device=cpu")


# ---------------------------------------------------------------------------------------------- trained tensors
def trained_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint of ``model`` needs: every trainable parameter plus every adapter tensor (frozen
    ones too, e.g. VeRA's projections); the frozen backbone is rebuilt from its source instead."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k in trainable}
    state.update({k: v.contiguous() for k, v in adapter_state_dict(model).items()})
    return state


def load_trained_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load tensors written by ``trained_state_dict``; a key the model lacks, or one it trains but the file
    lacks, is an error naming ``source``."""
    expected = set(trained_state_dict(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=False)


def save_trained(model: nn.Module, out_dir: Path, meta: dict[str, Any]) -> dict[str, str]:
    """Write what trained in ``model`` to ``out_dir``: the adapter (``adapters.save_adapter``'s format), every
    other trained tensor (the head; the whole model for full fine-tuning) and ``classifier.json`` with
    ``meta`` (how to rebuild the model). Returns ``{kind: path}``.

    The one place that decides the on-disk format of a trained classifier: switching it to PEFT's format
    (``adapter_config.json`` + ``adapter_model.safetensors``) changes this function and ``load_trained``.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter = {k: v.contiguous() for k, v in adapter_state_dict(model).items()}
    rest = {k: v for k, v in trained_state_dict(model).items() if k not in adapter}
    files = {}
    if adapter:
        save_file(adapter, str(out_dir / ADAPTER_FILE))
        files["adapter"] = ADAPTER_FILE
    save_file(rest, str(out_dir / TRAINED_FILE))
    files["trained"] = TRAINED_FILE
    write_json_atomic(out_dir / META_FILE, {**meta, "files": files})
    return {kind: str(out_dir / name) for kind, name in files.items()}


def read_trained_meta(out_dir: Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / META_FILE).read_text())


def load_trained(model: nn.Module, out_dir: Path) -> nn.Module:
    """Load what ``save_trained`` wrote into ``model``, rebuilt as the metadata says (same backbone, method,
    targets and head); returns ``model``."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    meta = read_trained_meta(out_dir)
    state: dict[str, torch.Tensor] = {}
    for name in meta["files"].values():
        state.update(load_file(str(out_dir / name)))
    load_trained_state(model, state, str(out_dir))
    return model


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    scheduler: str
    max_grad_norm: float
    eval_batch_size: int
    eval_each_epoch: bool              # dev metrics after every epoch (the best epoch is reported) or at the end
    device: str                        # cpu | cuda (checked by require_device)
    seed: int                          # data order and dropout (the model's init follows the caller's seeding)
    group_by_length: bool = False      # batches of similar length (HF's length-grouped sampler): less padding
    num_workers: int = 0               # DataLoader workers (image decoding)
    log_every: int = 10                # at most this many steps per training-loss point
    report_to: tuple[str, ...] = ()    # HF integrations (tensorboard, wandb, ...)


@dataclass
class TrainResult:
    loss_curve: list[float]            # mean training loss of each logging window
    epoch_evals: list[dict[str, Any]]  # metrics after each evaluated epoch: {"epoch": e, metric: value, ...}
    steps: int
    train_time_s: float                # wall time of this attempt's training (a resumed run: since the resume)
    train_cpu_time_s: float            # CPU time of this process during that training (all threads)
    resumed_from: str | None           # the checkpoint this attempt started from
    device: str
    precision: str                     # bf16 autocast (CUDA) or fp32


def _callbacks(label: str, epochs: int, progress: bool):
    from transformers import TrainerCallback

    class StopOnNonFiniteLoss(TrainerCallback):
        """The Trainer would log a NaN loss and go on; a diverged run stops here, naming the step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise FloatingPointError(f"{label}: training loss became {loss} by step {state.global_step}")

    class EpochLine(TrainerCallback):
        """Without a terminal (CI logs, run_all): one line per evaluated epoch instead of a progress bar."""

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            shown = {k[len("eval_"):]: round(v, 3) for k, v in (metrics or {}).items()
                     if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))}
            print(f"[{label}] epoch {round(state.epoch or 0)}/{epochs} step {state.global_step}: {shown}",
                  file=sys.stderr, flush=True)

    return [StopOnNonFiniteLoss()] + ([] if progress else [EpochLine()])


def _trainer_class():
    """Built on first use so importing this module does not import transformers."""
    from safetensors.torch import load_file, save_file
    from transformers import Trainer

    class ClassifierTrainer(Trainer):
        """``Trainer`` whose checkpoints hold only the tensors that train (``trained_state_dict``)."""

        def _save(self, output_dir: str | None = None, state_dict=None) -> None:
            output_dir = output_dir or self.args.output_dir
            os.makedirs(output_dir, exist_ok=True)
            if self.args.should_save:
                save_file(trained_state_dict(self.model), os.path.join(output_dir, "model.safetensors"),
                          metadata={"format": "pt"})
                torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
            path = os.path.join(resume_from_checkpoint, "model.safetensors")
            load_trained_state(model or self.model, load_file(path), path)

    return ClassifierTrainer


def train_classifier(model: nn.Module, train_data, eval_data: dict[str, Any], collate: Callable[[list], dict],
                     metrics: Callable[[Any, Any], dict[str, float]], settings: TrainSettings, output_dir: Path,
                     label: str, callbacks: Sequence[Any] = (), progress: bool | None = None) -> TrainResult:
    """Train the parameters of ``model`` with ``requires_grad`` (the model returns ``.loss`` given ``labels``).

    ``train_data``/``eval_data`` are map-style datasets of examples ``collate`` turns into a batch (a
    ``length`` column, if any, feeds the length-grouped sampler and is dropped by ``collate``); the first
    entry of ``eval_data`` is the main split, the others (e.g. MNLI mismatched) are reported beside it with
    their name as a prefix. ``metrics(logits, labels)`` scores a split. Checkpoints go to
    ``output_dir/checkpoints`` after every epoch (the last one kept); an existing one is resumed.
    """
    from transformers import PrinterCallback, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    s = settings
    require_device(s.device, f"{label}: device")
    cuda = s.device == "cuda"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    progress = sys.stderr.isatty() if progress is None else progress
    ckpt_dir = Path(output_dir) / CHECKPOINT_DIR
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size,
        learning_rate=s.lr,
        lr_scheduler_type=s.scheduler,
        warmup_steps=s.warmup_ratio,            # a float < 1 is a ratio of the total steps
        weight_decay=s.weight_decay,
        num_train_epochs=s.epochs,
        max_grad_norm=s.max_grad_norm,
        bf16=bf16,
        use_cpu=not cuda,
        eval_strategy="epoch" if s.eval_each_epoch else "no",
        save_strategy="epoch",
        save_total_limit=1,
        logging_steps=logging_steps(math.ceil(len(train_data) / s.batch_size), s.log_every),
        logging_nan_inf_filter=False,
        seed=s.seed,
        train_sampling_strategy="group_by_length" if s.group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=False,
        dataloader_num_workers=s.num_workers,
        report_to=list(s.report_to),
        disable_tqdm=not progress,
    )
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=train_data, eval_dataset=eval_data, data_collator=collate,
        compute_metrics=lambda p: metrics(p.predictions, p.label_ids),
        callbacks=[*_callbacks(label, s.epochs, progress), *callbacks],
    )
    if not progress:
        trainer.remove_callback(PrinterCallback)        # a dict per logging step; EpochLine says enough
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last:
        print(f"[{label}] resuming from {last}", file=sys.stderr, flush=True)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    train_time, cpu_time = time.perf_counter() - wall0, time.process_time() - cpu0
    if not s.eval_each_epoch:
        trainer.evaluate()
    history = trainer.state.log_history
    return TrainResult(
        loss_curve=[h["loss"] for h in history if "loss" in h],
        epoch_evals=epoch_evals(history, list(eval_data)),
        steps=trainer.state.global_step,
        train_time_s=train_time,
        train_cpu_time_s=cpu_time,
        resumed_from=Path(last).name if last else None,
        device=s.device,
        precision="bf16 autocast" if bf16 else "fp32",
    )


def logging_steps(steps_per_epoch: int, at_most: int) -> int:
    """The largest divisor of ``steps_per_epoch`` up to ``at_most``: loss windows then never straddle an epoch
    checkpoint, so a resumed run logs the same training-loss curve as an uninterrupted one."""
    return max(d for d in range(1, min(at_most, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def drop_checkpoints(output_dir: Path) -> None:
    """Remove a finished run's epoch checkpoints: only an interrupted run needs them, and its trained tensors are
    saved by then (``save_trained``); full fine-tuning's would otherwise keep the whole model and its optimizer.
    Integration logs (TensorBoard's ``runs/``) stay."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    for ckpt in folder.glob("checkpoint-*"):
        shutil.rmtree(ckpt)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def epoch_evals(history: list[dict[str, Any]], splits: list[str]) -> list[dict[str, Any]]:
    """The Trainer's evaluation log entries, one dict per epoch: the main split's metrics under their own
    names, the other splits' as ``<split>_<metric>`` (the evaluation loss as ``loss``)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for h in history:
        for i, split in enumerate(splits):
            prefix = f"eval_{split}_"
            found = {k[len(prefix):]: v for k, v in h.items() if k.startswith(prefix)
                     and not k.endswith(("_runtime", "_samples_per_second", "_steps_per_second"))}
            if found:
                row = by_epoch.setdefault(round(h["epoch"]), {"epoch": round(h["epoch"])})
                row.update(found if i == 0 else {f"{split}_{k}": v for k, v in found.items()})
    return [by_epoch[e] for e in sorted(by_epoch)]


def best_and_final(evals: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The record fields of the LoRA protocol (dev metric after each epoch, the best kept) beside the last epoch."""
    final = evals[-1]
    best = max(evals, key=lambda e: e[metric])       # the earliest epoch among equals
    return {"final": final, "best_epoch": best, "epoch_evals": evals, "paper_metric": metric,
            "paper_metric_value": best[metric], "paper_metric_final": final[metric]}
