"""Table 6 of the MiSS paper: ViT-B/16 on the VTAB-1K image tasks with Full FT, VeRA, LoRA, DoRA and MiSS
(§5.1; SPEC §3.7). Does MiSS match LoRA at about half LoRA's trainable parameters?

    python experiments/vtab.py --profile cpu                        # pipeline check: tiny random ViT, generated images
    python experiments/vtab.py --profile small --data-dir /data     # ViT-B/16 on <data-dir>/vtab-1k, 1 seed
    python experiments/vtab.py --profile small --runs 'eurosat-*' --set epochs=20

The paper ran nothing here: it copied Table 6 from SliceFine (Kowsher et al., 2025), so a run is new evidence.

Protocol (VTAB-1K, Zhai et al. 2019, as the PEFT literature runs it: VPT, NOAH, FacT): train on the 1,000
``train800val200`` images of a task, report top-1 accuracy on its official ``test`` split; images resized to
224 x 224 and normalised by the backbone's image processor, no augmentation; AdamW, batch 64, 100 epochs,
10% warmup then cosine decay, weight decay 1e-4, lr 1e-3 for the adapters and 1e-4 for full fine-tuning. The
paper gives none of these; they are the literature's. Backbone ``google/vit-base-patch16-224-in21k``.

Methods (adapters on query and value of every block; the classifier head trains in every method):
  Full FT  every parameter (85.8M backbone).
  LoRA     r8, alpha 16: (768 + 768) x 8 x 24 = 294,912.
  DoRA     r8, alpha 16: LoRA's 294,912 + 24 x 768 magnitudes = 313,344.
  VeRA     r256 (shared frozen projections, seed = run seed): 24 x (768 + 256) = 24,576.
  MiSS     r8: 8 x 768 x 24 = 147,456, half of LoRA's, the ratio of the paper's table (0.414M vs 0.833M).
The paper's absolute counts (0.833M for LoRA) imply a larger rank or more targets than SliceFine states;
the analysis prints both and the ratio.

Training: the HF ``Trainer`` as for GLUE (``experiments.common.classification``): bf16 autocast on CUDA, images
decoded by DataLoader workers, a checkpoint after every epoch under ``<runs-dir>/vtab/<profile>/<run>`` (an
interrupted run resumes), the trained adapter + head in ``.../<run>/trained`` (``load_trained_run``), and the
test accuracy after the last epoch (``eval_each_epoch=true`` adds a curve). A profile that asks for CUDA on a
machine without it stops before any run.

Data: the standard VTAB-1K folder (``vtab-1k/<task>/{train800val200,test}.txt``, lines
``<image path relative to the task folder> <label>``, as produced by the VPT/NOAH preparation scripts from
TFDS), in ``--data-dir`` or ``$MISS_DATA_DIR`` (the repository's ``data/`` does not hold it); a missing
folder stops the script before any run. Folders: caltech101, oxford_flowers102, oxford_iiit_pet,
patch_camelyon, eurosat, diabetic_retinopathy, kitti. Images are read with PIL and prepared by the
transformers image processor (no torchvision). The video rows of Table 6 (UCF101, Kinetics, HMDB) are not reproduced.

Profiles:
  cpu    pipeline check only: a 2-layer random ViT (hidden 64, 32 x 32 images, patch 8) on a generated
         4-class task written to disk in the VTAB-1K layout (a square whose colour is the class, random size
         and place, on noise); the same loader, processor, methods and loop as the real runs. Its accuracies say the
         pipeline learns, nothing about the paper. 5 methods x 3 seeds: 25 s measured here.
  small  ViT-B/16 on the seven image tasks, 1 seed (~7 GPU-hours).
  paper  3 seeds.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from eval.data_files import MissingDataError, search_dirs, verify
from experiments.common.classification import (TRAINED_DIR, MethodSpec, TrainSettings, apply_method,
                                               drop_checkpoints, formula_params, load_trained, parameter_counts,
                                               read_trained_meta, require_device, save_trained, train_classifier)
from experiments.common.config import from_dict, override
from experiments.common.records import RunRecord
from experiments.common.runner import Context, Run, experiment_main
from experiments.common.seeding import seed_everything

EXPERIMENT = "vtab"
VIT_B16 = "google/vit-base-patch16-224-in21k"
TINY_VIT = "tiny-random-vit"
SYNTHETIC = "synthetic"
TARGETS = ("q_proj", "v_proj")   # ViT's query and value projections (transformers 5 names)
HEAD_MODULES = ("classifier",)


class VtabDataError(ValueError):
    """A VTAB-1K file list that does not have the expected layout; the message names the file and line."""


@dataclass(frozen=True)
class TaskSpec:
    name: str          # run-name key and folder under vtab-1k/
    label: str         # Table 6's column
    num_classes: int


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("caltech101", "Caltech", 102),
    TaskSpec("oxford_flowers102", "Flowers", 102),
    TaskSpec("oxford_iiit_pet", "Pets", 37),
    TaskSpec("patch_camelyon", "Camel.", 2),
    TaskSpec("eurosat", "Euro.", 10),
    TaskSpec("diabetic_retinopathy", "Retino.", 5),
    TaskSpec("kitti", "KITTI", 4),
    TaskSpec(SYNTHETIC, "Synthetic (pipeline check)", 4),
)
TASK_BY_NAME = {t.name: t for t in TASKS}

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("full", "full", note="every parameter; lr = full_lr"),
    MethodSpec("vera", "vera", {"r": 256}, note="r256, frozen shared projections from the run seed"),
    MethodSpec("lora", "lora", {"r": 8, "alpha": 16.0}, note="r8 alpha16"),
    MethodSpec("dora", "dora", {"r": 8, "alpha": 16.0}, note="r8 alpha16 + magnitudes"),
    MethodSpec("miss", "miss", {"r": 8}, note="r8: 8 x d_out, half of LoRA r8"),
)
METHOD_BY_NAME = {m.name: m for m in METHODS}


@dataclass(frozen=True)
class VtabConfig:
    model: str = VIT_B16
    tasks: tuple[str, ...] = tuple(t.name for t in TASKS if t.name != SYNTHETIC)
    methods: tuple[str, ...] = tuple(m.name for m in METHODS)
    seeds: tuple[int, ...] = (0, 1, 2)
    train_list: str = "train800val200.txt"
    test_list: str = "test.txt"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    full_lr: float = 1e-4                  # full fine-tuning's learning rate
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.1
    scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    eval_batch_size: int = 128
    eval_each_epoch: bool = False          # VTAB reports the last epoch; the test split is not for choosing one
    max_test: int | None = None            # subsample of the test split (None: all of it)
    synthetic_train: int = 240             # generated task: images per split
    synthetic_test: int = 200
    synthetic_size: int = 32
    tiny_hidden: int = 64                  # the cpu profile's random ViT
    tiny_layers: int = 2
    tiny_patch: int = 8
    device: str = "cuda"
    threads: int = 0
    report_to: tuple[str, ...] = ()     # HF Trainer integrations (tensorboard, wandb; must be installed)

    def __post_init__(self) -> None:
        for name in ("tasks", "methods", "seeds"):
            value = getattr(self, name)
            if isinstance(value, (str, int)):
                object.__setattr__(self, name, (value,))
        for name, known in (("tasks", TASK_BY_NAME), ("methods", METHOD_BY_NAME)):
            unknown = sorted(set(getattr(self, name)) - set(known))
            if unknown:
                raise ValueError(f"vtab: unknown {name} {unknown}; known: {sorted(known)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "synthetic_train", "synthetic_test"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"vtab: {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.lr <= 0 or self.full_lr <= 0 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("vtab: need lr > 0 and 0 <= warmup_ratio < 1")


SCALE: dict[str, VtabConfig] = {
    "cpu": VtabConfig(model=TINY_VIT, tasks=(SYNTHETIC,), epochs=10, batch_size=32, lr=3e-3,
                      full_lr=1e-3, device="cpu"),
    "small": VtabConfig(seeds=(0,)),
    "paper": VtabConfig(),
}


# ---------------------------------------------------------------------------------------------- data
def read_file_list(path: Path, num_classes: int) -> list[tuple[str, int]]:
    """``<relative image path> <label>`` per line (VTAB-1K's file lists); labels must be in range."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise VtabDataError(f"{path}:{line_no}: expected '<image path> <integer label>', got {line.strip()!r}")
            label = int(parts[1])
            if not 0 <= label < num_classes:
                raise VtabDataError(f"{path}:{line_no}: label {label} outside 0..{num_classes - 1}")
            rows.append((parts[0], label))
    if not rows:
        raise VtabDataError(f"{path}: no images listed")
    return rows


# Square colours of the generated task's four classes (RGB).
SYNTHETIC_COLOURS = ((230, 40, 40), (40, 200, 40), (50, 80, 240), (230, 220, 60))


def write_synthetic_task(root: Path, cfg: VtabConfig, seed: int = 0) -> Path:
    """A generated 4-class task in the VTAB-1K layout under ``root/synthetic``: class k is a square of colour
    k (jittered) of random size at a random place on a dark noisy background. Same files for a given ``seed``."""
    from PIL import Image

    folder = root / SYNTHETIC
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    s = cfg.synthetic_size
    for split, n in (("train800val200", cfg.synthetic_train), ("test", cfg.synthetic_test)):
        lines = []
        for i in range(n):
            label = i % len(SYNTHETIC_COLOURS)
            img = rng.integers(0, 90, size=(s, s, 3), dtype=np.uint8)
            side = int(rng.integers(s // 4, s // 2 + 1))
            y0, x0 = (int(v) for v in rng.integers(0, s - side + 1, size=2))
            colour = np.clip(np.array(SYNTHETIC_COLOURS[label]) + rng.integers(-25, 26, size=3), 0, 255)
            img[y0:y0 + side, x0:x0 + side] = colour.astype(np.uint8)
            rel = f"images/{split}_{i:05d}.png"
            Image.fromarray(img).save(folder / rel)
            lines.append(f"{rel} {label}\n")
        (folder / f"{split}.txt").write_text("".join(lines))
    return folder


VTAB_HOW = ("VTAB-1K is not distributed with this repository: prepare vtab-1k/<task>/ with the VPT/NOAH "
            "preparation scripts (layout in experiments/vtab.py) and pass --data-dir DIR (or set MISS_DATA_DIR=DIR)")


def vtab_folder(task_name: str, cfg: VtabConfig, data_dir: Path | None) -> Path:
    """The first data directory's ``vtab-1k/<task>`` that holds both file lists; else ``MissingDataError``."""
    lists = [f"vtab-1k/{task_name}/{name}" for name in (cfg.train_list, cfg.test_list)]
    for d in search_dirs(data_dir):       # both lists from one folder: they index the same images/
        if all((d.path / rel).is_file() for rel in lists):
            for rel in lists:
                verify(d.path / rel, d.path, rel)
            return d.path / "vtab-1k" / task_name
    raise MissingDataError(lists, search_dirs(data_dir), how=VTAB_HOW)


def task_folder(task: TaskSpec, cfg: VtabConfig, data_dir: Path | None, scratch: Path) -> Path:
    if task.name == SYNTHETIC:
        return write_synthetic_task(scratch, cfg)
    return vtab_folder(task.name, cfg, data_dir)


def check_inputs(ctx: Context, runs: list[Run]) -> None:
    """The VTAB-1K folders the planned runs read, before the first run starts."""
    for run in runs:
        if run.config["task"] != SYNTHETIC:
            vtab_folder(run.config["task"], _config(run), ctx.data_dir)


class ImageList:
    """The images of one file list as dataset rows (``path``, ``labels``); ``ImageCollator`` reads and prepares
    them batch by batch with the image processor (PIL + numpy, no torchvision)."""

    def __init__(self, folder: Path, list_name: str, num_classes: int) -> None:
        self.folder = folder
        self.rows = read_file_list(folder / list_name, num_classes)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, label = self.rows[i]
        return {"path": str(self.folder / path), "labels": label}


class ImageCollator:
    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from PIL import Image

        images = []
        for r in rows:
            with Image.open(r["path"]) as im:
                images.append(im.convert("RGB"))
        return {"pixel_values": self.processor(images=images, return_tensors="pt")["pixel_values"],
                "labels": torch.tensor([r["labels"] for r in rows])}


class Subset:
    def __init__(self, data, idx: list[int]) -> None:
        self.data, self.idx = data, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int):
        return self.data[self.idx[i]]


# ---------------------------------------------------------------------------------------------- model
def learning_rate(cfg: VtabConfig, spec: MethodSpec) -> float:
    return cfg.full_lr if spec.method == "full" else cfg.lr


def load_model(cfg: VtabConfig, num_classes: int, hub: bool):
    from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if cfg.model == TINY_VIT:
        size = cfg.synthetic_size
        config = ViTConfig(image_size=size, patch_size=cfg.tiny_patch, hidden_size=cfg.tiny_hidden,
                           num_hidden_layers=cfg.tiny_layers, num_attention_heads=4,
                           intermediate_size=2 * cfg.tiny_hidden, num_labels=num_classes)
        processor = ViTImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return processor, ViTForImageClassification(config)
    processor = AutoImageProcessor.from_pretrained(cfg.model, local_files_only=not hub)
    model = ViTForImageClassification.from_pretrained(cfg.model, num_labels=num_classes, local_files_only=not hub)
    return processor, model


def run_vtab(cfg: VtabConfig, task: TaskSpec, spec: MethodSpec, seed: int, data_dir: Path | None,
             hub: bool, output_dir: Path, label: str = "vtab", callbacks=()) -> dict[str, Any]:
    """One (task, method, seed) run: train on train800val200, top-1 accuracy on test; checkpoints and the trained
    adapter + head under ``output_dir``."""
    require_device(cfg.device, f"{label}: device")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cuda = cfg.device == "cuda"
    with tempfile.TemporaryDirectory(prefix="vtab-synthetic-") as scratch:
        folder = task_folder(task, cfg, data_dir, Path(scratch))
        seed_everything(seed, deterministic=not cuda)
        processor, model = load_model(cfg, task.num_classes, hub)
        base_total = sum(p.numel() for p in model.parameters())
        hyper_spec = spec
        if spec.method == "vera":  # VeRA's frozen projections come from the run's seed
            hyper_spec = MethodSpec(spec.name, spec.method, {**spec.hyper, "projection_prng_key": seed}, spec.lr)
        apply_method(model, hyper_spec, TARGETS, HEAD_MODULES)
        counts = parameter_counts(model, base_total)
        shapes = [(m.out_features, m.in_features) for n, m in model.named_modules()
                  if n.rsplit(".", 1)[-1] in TARGETS and hasattr(m, "out_features")]
        train = ImageList(folder, cfg.train_list, task.num_classes)
        test = ImageList(folder, cfg.test_list, task.num_classes)
        test_idx = list(range(len(test)))
        if cfg.max_test is not None and cfg.max_test < len(test):
            test_idx = sorted(torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:cfg.max_test].tolist())
        settings = TrainSettings(
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=learning_rate(cfg, spec), weight_decay=cfg.weight_decay,
            warmup_ratio=cfg.warmup_ratio, scheduler=cfg.scheduler, max_grad_norm=cfg.max_grad_norm,
            eval_batch_size=cfg.eval_batch_size, eval_each_epoch=cfg.eval_each_epoch, device=cfg.device, seed=seed,
            num_workers=min(8, os.cpu_count() or 1) if cuda else 0,     # image decoding keeps up with a GPU
            report_to=cfg.report_to)
        result = train_classifier(
            model, train, {"test": Subset(test, test_idx)}, ImageCollator(processor),
            lambda logits, labels: {"accuracy": 100.0 * float((logits.argmax(-1) == labels).mean())},
            settings, output_dir, label, callbacks)
    saved = save_trained(model, Path(output_dir) / TRAINED_DIR, {
        "experiment": EXPERIMENT, "task": task.name, "method": spec.name, "registry_method": spec.method,
        "hyper": dict(hyper_spec.hyper), "targets": list(TARGETS), "head_modules": list(HEAD_MODULES),
        "num_labels": task.num_classes, "seed": seed, "config": asdict(cfg),
        "rebuild": "experiments.vtab.load_trained_run(<this folder>)"})
    drop_checkpoints(output_dir)
    labels = [test.rows[i][1] for i in test_idx]
    final = result.epoch_evals[-1]
    return {
        **counts, "formula_adapter_params": formula_params(hyper_spec, shapes),
        "accuracy": final["accuracy"], "epoch_evals": result.epoch_evals, "loss_curve": result.loss_curve,
        "steps": result.steps, "train_time_s": result.train_time_s, "train_cpu_time_s": result.train_cpu_time_s,
        "n_train": len(train), "n_test": len(test_idx),
        "test_largest_class_share": 100.0 * max(labels.count(c) for c in set(labels)) / len(labels),
        "pipeline_check": task.name == SYNTHETIC, "model": cfg.model,
        "runtime": {"device": result.device, "precision": result.precision, "resumed_from": result.resumed_from,
                    "dataloader_workers": settings.num_workers, "saved": saved},
    }


def load_trained_run(folder: Path, hub: bool = False):
    """(image processor, model) of a finished run rebuilt from its ``trained/`` folder. The backbone is rebuilt
    from its source; the cpu profile's random ViT is drawn again from the run's seed, as in training."""
    meta = read_trained_meta(folder)
    cfg = from_dict(VtabConfig, meta["config"], f"{folder}/classifier.json")
    seed_everything(meta["seed"])
    processor, model = load_model(cfg, meta["num_labels"], hub)
    apply_method(model, MethodSpec(meta["method"], meta["registry_method"], meta["hyper"]), TARGETS, HEAD_MODULES)
    return processor, load_trained(model, folder).eval()


# ---------------------------------------------------------------------------------------------- runner glue
def resolve_config(ctx: Context) -> VtabConfig:
    cfg = SCALE[ctx.profile.name]
    return override(cfg, EXPERIMENT, **ctx.overrides) if ctx.overrides else cfg


PLAN_KEYS = ("tasks", "methods", "seeds")   # what to run, not what one run computes


def plan(ctx: Context) -> list[Run]:
    cfg = resolve_config(ctx)
    if not getattr(ctx.args, "plan", False):   # --plan lists the runs on any machine; running them needs the device
        require_device(cfg.device, f"{EXPERIMENT} --profile {ctx.profile.name}: device (profile setting)")
    shared = {k: v for k, v in asdict(cfg).items() if k not in PLAN_KEYS}
    runs = []
    for task_name in cfg.tasks:
        for name in cfg.methods:
            spec = METHOD_BY_NAME[name]
            for seed in cfg.seeds:
                config = {**shared, "task": task_name, "method": spec.name, "registry_method": spec.method,
                          "hyper": dict(spec.hyper), "targets": list(TARGETS), "lr_used": learning_rate(cfg, spec),
                          "note": spec.note}
                name_ = f"{task_name}-{spec.name}-s{seed}"
                runs.append(Run(name_, config, seed,
                                output_dir=Path(ctx.args.runs_dir) / EXPERIMENT / ctx.profile.name / name_))
    return runs


def _config(run: Run) -> VtabConfig:
    return from_dict(VtabConfig, {k: v for k, v in run.config.items() if k in VtabConfig.__dataclass_fields__},
                     EXPERIMENT)


def execute(run: Run, record: RunRecord, ctx: Context) -> None:
    cfg = _config(run)
    out = run_vtab(cfg, TASK_BY_NAME[run.config["task"]], METHOD_BY_NAME[run.config["method"]], run.seed,
                   ctx.data_dir, ctx.profile.hub_access, run.output_dir, label=f"{EXPERIMENT} {run.name}")
    record.trainable_params = out.pop("trainable_params")
    record.curves = {"train_loss": out.pop("loss_curve")}
    record.runtime.update(out.pop("runtime"), output_dir=str(run.output_dir))
    record.metrics = out


def main(argv: list[str] | None = None) -> int:
    return experiment_main(EXPERIMENT, __doc__, plan, execute, argv=argv, check_inputs=check_inputs)


if __name__ == "__main__":
    sys.exit(main())
