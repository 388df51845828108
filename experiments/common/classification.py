"""What the classification experiments (GLUE, VTAB-1K) share: the method table, adapter injection with a
trainable head, parameter accounting, and one plain training loop.

The loop is AdamW with a warmup-then-decay schedule (``transformers.get_scheduler``), gradient clipping and
a fixed order of batches drawn from the run's own generator, so a run repeats bit for bit on the same
machine and thread count, and different seeds differ (head init, adapter init, batch order, dropout).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adapters import ADAPTER_PREFIX, get_method, inject, trainable_parameters


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


@dataclass
class TrainResult:
    loss_curve: list[float]            # mean training loss of each logging window
    epoch_evals: list[dict[str, Any]]  # metrics after each evaluated epoch
    steps: int
    train_time_s: float


def train_classifier(model: nn.Module, batches: Callable[[int, torch.Generator], Iterable[dict[str, torch.Tensor]]],
                     steps_per_epoch: int, epochs: int, lr: float, weight_decay: float, warmup_ratio: float,
                     scheduler: str, max_grad_norm: float, gen: torch.Generator,
                     evaluate: Callable[[], dict[str, Any]], eval_each_epoch: bool, log_every: int = 10,
                     device: str = "cpu") -> TrainResult:
    """Train the parameters with ``requires_grad`` for ``epochs`` epochs; ``batches(epoch, gen)`` yields dicts
    the model takes (with ``labels``). Weight decay skips biases and LayerNorm weights (the HF Trainer rule).
    ``evaluate()`` runs after every epoch if ``eval_each_epoch``, else after the last."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in n or "layernorm" in n else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    from transformers import get_scheduler

    total = steps_per_epoch * epochs
    sched = get_scheduler(scheduler, opt, num_warmup_steps=math.ceil(warmup_ratio * total), num_training_steps=total)
    params = decay + no_decay
    curve, window, evals, step = [], [], [], 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for batch in batches(epoch, gen):
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            window.append(loss.item())
            step += 1
            if len(window) == log_every:
                curve.append(sum(window) / len(window))
                window = []
        if eval_each_epoch or epoch == epochs - 1:
            evals.append({"epoch": epoch + 1, **evaluate()})
    if window:
        curve.append(sum(window) / len(window))
    return TrainResult(curve, evals, step, time.perf_counter() - t0)


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator) -> list[list[int]]:
    """Indices ``0..n-1`` in a random order from ``gen``, cut into batches (the last may be short)."""
    order = torch.randperm(n, generator=gen).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
