"""One run of the PEFT Pareto benchmark (SPEC §3.9, Table 8, Fig. 4): train, test, measure.

The protocol of Hugging Face PEFT's ``method_comparison/MetaMathQA`` benchmark, which the paper ran:
MetaMathQA rows of at most 1300 characters (``len(f"{query} {response}")``), text
``"Question: {query} Think step by step.\\nAnswer:" + response`` cut at ``max_length`` tokens, loss on
every token (prompt included) plus the first padding (= EOS) position, batches drawn from length buckets
of ``batch x 20`` rows sorted longest first, AdamW (lr 1e-4, weight decay 0.1), cosine schedule with 10%
warmup, gradient clipping 1.0, seed 0; validation every ``eval_steps`` on GSM8K-train questions; at the end,
greedy generation on GSM8K test graded by ``eval.gsm8k_peft``. A method is a PEFT config (``peft_type``
plus keyword arguments) or full fine-tuning (``peft_type`` null); LoRA-FA uses PEFT's LoRA-FA optimizer and
AdaLoRA calls ``update_and_allocate`` after every step, as the benchmark does.

Measured, as the benchmark defines them:
- ``total_time_s``: model load to the end of the test evaluation; ``train_time_s``: the training loop
  without the validation passes;
- memory on CUDA: ``torch.cuda.memory_reserved()`` after every step, minus the reserved memory before the
  model was loaded; ``max`` = ``max_memory_reserved`` at the end (test generation included), ``p99`` and
  ``avg`` over the per-step samples; the cache is emptied every 10 steps, as in the benchmark;
- memory on CPU (no allocator counters): the process's resident set size (RSS), the same three numbers
  (peak from the kernel's high-water mark, reset at the start), minus the RSS before the model was loaded;
  labelled ``cpu_rss`` so it is never read as accelerator memory.

``side_by_side`` trains two methods on the same batches in one process, alternating step by step, so that
the load of a shared machine falls on both equally; its step-time ratio is the fairest time comparison a
busy machine allows.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval import gsm8k_peft

CHAR_LIMIT = 1300
WARMUP_RATIO = 0.1
BUCKET_FACTOR = 20
EMPTY_CACHE_EVERY = 10


@dataclass(frozen=True)
class BenchSettings:
    """The §3.9 defaults (``paper``) and their scaled-down versions; one per profile in ``pareto.py``."""

    model: str                          # hub id / local path, or "tiny" (the cpu profile's model)
    data: str                           # "hub" (MetaMathQA + openai/gsm8k) or "local" (the data/ benchmark files)
    dtype: str = "bfloat16"
    max_steps: int = 5000
    batch_size: int = 4
    batch_size_eval: int = 50
    max_length: int = 768
    eval_steps: int = 250
    valid_size: int = 50                # GSM8K-train questions for the validation passes (0: none)
    test_size: int | None = None        # first N GSM8K test questions (None: all 1319)
    max_new_tokens: int = 300
    lr: float = 1e-4
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    train_samples: int | None = None    # first N filtered training rows after shuffling (None: all)
    threads: int | None = None          # torch CPU threads (None: torch's default)
    side_by_side: tuple[str, ...] = ("miss", "lora")   # methods of the side-by-side timing run (() : none)
    side_by_side_steps: int = 0         # timed steps per method in that run (0: no such run)
    methods: tuple[str, ...] | None = None  # None: every config file

    def __post_init__(self) -> None:
        object.__setattr__(self, "side_by_side", tuple(self.side_by_side))
        if self.methods is not None:
            object.__setattr__(self, "methods", tuple(self.methods))
        if self.data not in ("hub", "local"):
            raise ValueError(f"data must be 'hub' or 'local', got {self.data!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        for name in ("max_steps", "batch_size", "batch_size_eval", "max_length", "eval_steps", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.eval_steps > self.max_steps:
            raise ValueError(f"eval_steps ({self.eval_steps}) > max_steps ({self.max_steps})")


@dataclass(frozen=True)
class MethodSpec:
    """One method of the benchmark: a file ``experiments/configs/pareto/<name>.json`` (see its README)."""

    name: str
    peft_type: str | None               # PEFT's PeftType name; None = full fine-tuning
    peft_experiment: str                # the PEFT benchmark experiment this mirrors
    paper_row: str | None = None        # Table 8's row name, None if the paper has no such row
    adapter: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)   # lr, weight_decay, optimizer ("adamw" | "lora-fa")
    profiles: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # profile -> {adapter, training}
    note: str = ""

    def resolved(self, profile: str) -> "MethodSpec":
        """The spec with the ``profile``'s overrides applied (the tiny model is smaller than Llama-3.2-3B)."""
        over = self.profiles.get(profile, {})
        unknown = set(over) - {"adapter", "training"}
        if unknown:
            raise ValueError(f"method {self.name}: profile {profile!r} overrides unknown section(s) {sorted(unknown)}")
        return MethodSpec(self.name, self.peft_type, self.peft_experiment, self.paper_row,
                          {**self.adapter, **over.get("adapter", {})}, {**self.training, **over.get("training", {})},
                          {}, self.note)


TRAINING_KEYS = {"lr", "weight_decay", "optimizer"}


def load_method(path: Path) -> MethodSpec:
    from .config import from_dict

    data = json.loads(Path(path).read_text())
    data.setdefault("name", Path(path).stem)
    spec = from_dict(MethodSpec, data, where=str(path))
    for section in [spec.training, *(p.get("training", {}) for p in spec.profiles.values())]:
        unknown = set(section) - TRAINING_KEYS
        if unknown:
            raise ValueError(f"{path}: unknown training key(s) {sorted(unknown)}; known: {sorted(TRAINING_KEYS)}")
    if spec.training.get("optimizer", "adamw") not in ("adamw", "lora-fa"):
        raise ValueError(f"{path}: optimizer must be adamw or lora-fa")
    return spec


def load_methods(config_dir: Path) -> dict[str, MethodSpec]:
    files = sorted(Path(config_dir).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no method configs (*.json) in {config_dir}")
    return {spec.name: spec for spec in map(load_method, files)}


# --------------------------------------------------------------------------- data
def read_train_rows(settings: BenchSettings, data_dir: Path | None) -> list[dict[str, str]]:
    """MetaMathQA rows (query, response) within the character limit, shuffled with the seed."""
    if settings.data == "local":
        from .sft_data import gsm8k_as_metamath

        rows = [row for _, row in gsm8k_as_metamath(data_dir)]
    else:
        import datasets

        ds = datasets.load_dataset("meta-math/MetaMathQA", split="train")
        rows = [{"query": q, "response": r} for q, r in zip(ds["query"], ds["response"])]
    rows = [r for r in rows if len(f"{r['query']} {r['response']}") <= CHAR_LIMIT]
    random.Random(settings.seed).shuffle(rows)
    return rows[:settings.train_samples] if settings.train_samples else rows


def read_gsm8k(split: str, settings: BenchSettings, data_dir: Path | None) -> list[dict[str, str]]:
    """GSM8K questions with their gold number: ``test`` (the first ``test_size``) or ``valid`` (a seeded
    sample of ``valid_size`` training questions)."""
    from eval.gsm8k import gold_answer

    if split == "test":
        from eval import gsm8k

        examples = gsm8k.load_examples(data_dir, hub=settings.data != "local")
        rows = [{"question": e["question"], "gold": e["gold"]} for e in examples]
        return rows[:settings.test_size] if settings.test_size else rows
    if settings.valid_size <= 0:
        return []
    if settings.data == "local":
        from eval.common import read_jsonl
        from eval.data_files import locate

        from .sft_data import GSM8K_TRAIN

        raw = read_jsonl(locate(GSM8K_TRAIN, data_dir))
    else:
        import datasets

        raw = list(datasets.load_dataset("openai/gsm8k", "main", split="train"))
    picked = random.Random(settings.seed + 1).sample(range(len(raw)), settings.valid_size)
    return [{"question": raw[i]["question"], "gold": gold_answer(raw[i]["answer"])} for i in picked]


def tokenize_rows(tokenizer, rows: Sequence[dict[str, str]], max_length: int) -> list[list[int]]:
    texts = [gsm8k_peft.render_prompt(r["query"]) + r["response"] for r in rows]
    return [ids[:max_length] for ids in tokenizer(texts)["input_ids"]]


def bucket_batches(samples: Sequence[list[int]], batch_size: int, bucket_factor: int = BUCKET_FACTOR
                   ) -> Iterator[list[list[int]]]:
    """Batches in data order of buckets of ``batch_size x bucket_factor`` rows, each bucket sorted longest
    first (less padding; an out-of-memory error shows up early); repeats the data for more epochs."""
    if not samples:
        raise ValueError("no training samples")
    size = batch_size * bucket_factor
    while True:
        for start in range(0, len(samples), size):
            bucket = sorted(samples[start:start + size], key=len, reverse=True)
            for j in range(0, len(bucket), batch_size):
                yield bucket[j:j + batch_size]


def collate(batch: Sequence[list[int]], pad_id: int):
    """Right-padded ``input_ids``/``attention_mask``; labels = inputs, padding ignored except its first
    position (the EOS the model must learn to emit; pad = EOS)."""
    import torch

    longest = max(len(s) for s in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for i, s in enumerate(batch):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    labels = ids.clone()
    for i, s in enumerate(batch):
        labels[i, len(s) + 1:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --------------------------------------------------------------------------- memory
class MemoryLog:
    """Per-step memory samples, as the benchmark takes them (see the module docstring)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.samples: list[int] = []
        if cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.init = torch.cuda.max_memory_reserved()
        else:
            self.hwm_reset = _reset_peak_rss()
            self.init = _rss_bytes()

    @property
    def kind(self) -> str:
        return "cuda_reserved" if self.cuda else "cpu_rss"

    def step(self) -> None:
        if self.cuda:
            import torch

            self.samples.append(torch.cuda.memory_reserved() - self.init)
        else:
            self.samples.append(_rss_bytes() - self.init)

    def summary(self) -> dict[str, Any]:
        import numpy as np

        if self.cuda:
            import torch

            peak = torch.cuda.max_memory_reserved() - self.init
            process_peak = torch.cuda.max_memory_reserved()
        else:
            hwm = _peak_rss_bytes() if self.hwm_reset else None
            # the kernel syncs its per-thread RSS counters lazily: a sample can exceed VmHWM by a few pages
            process_peak = max(hwm or 0, self.init + max(self.samples, default=0))
            peak = process_peak - self.init
        return {
            "kind": self.kind,
            "max_bytes": int(peak),
            "p99_bytes": int(np.percentile(self.samples, 99)) if self.samples else None,
            "avg_bytes": int(sum(self.samples) / len(self.samples)) if self.samples else None,
            "baseline_bytes": int(self.init),
            "process_peak_bytes": int(process_peak),
            "peak_source": ("torch.cuda.max_memory_reserved" if self.cuda else
                            "VmHWM (reset at start)" if self.hwm_reset else "max of per-step RSS samples"),
        }


def cpu_step_tensor_peak(model, opt, raw_batch: Sequence[list[int]], pad_id: int) -> dict[str, Any]:
    """Tensor bytes of one forward + backward on a fixed batch (the first, longest one of the data, the same
    for every method) after training: parameters, buffers, optimizer state and batch, plus the peak of what
    the step allocates (torch.profiler's CPU memory events, as ``experiments/efficiency.py``). No update is
    made. Unlike RSS this counts tensors only, so it resolves differences of kilobytes."""
    import torch

    from experiments.efficiency import _profiled_transient_bytes, _storage_bytes

    batch = collate(raw_batch, pad_id)

    def step() -> None:
        model(**batch).loss.backward()

    opt.zero_grad(set_to_none=True)
    state = [t for st in opt.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
    resident = _storage_bytes([*model.parameters(), *model.buffers(), *state, *batch.values()])
    transient = _profiled_transient_bytes(step)
    opt.zero_grad(set_to_none=True)
    return {"peak_bytes": resident + transient, "resident_bytes": resident, "transient_bytes": transient,
            "method": "resident tensor bytes + peak of torch.profiler CPU 'Total Allocated' over one forward+backward"}


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss_bytes() -> int | None:
    kb = _status_kb("VmHWM")
    return None if kb is None else kb * 1024


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- model
def _resolve(value: Any, model, tokenizer) -> Any:
    """``"@name"`` -> the model config's (or tokenizer's) attribute ``name``, so one config file fits any
    model (``"@num_hidden_layers"``, ``"@eos_token_id"``); lists are resolved element-wise."""
    if isinstance(value, list):
        return [_resolve(v, model, tokenizer) for v in value]
    if isinstance(value, str) and value.startswith("@"):
        name = value[1:]
        for source in (model.config, tokenizer):
            got = getattr(source, name, None)
            if got is not None:
                return got
        raise ValueError(f"config value {value!r}: neither the model config nor the tokenizer has {name!r}")
    return value


def peft_config(spec: MethodSpec, model, tokenizer, max_steps: int):
    """The PEFT config of ``spec`` for ``model`` (task CAUSAL_LM; AdaLoRA's schedule length = max_steps)."""
    import peft

    kwargs = {k: _resolve(v, model, tokenizer) for k, v in spec.adapter.items()}
    kwargs.setdefault("task_type", "CAUSAL_LM")
    if spec.peft_type == "ADALORA":
        kwargs["total_step"] = max_steps
    try:
        cls = peft.PEFT_TYPE_TO_CONFIG_MAPPING[peft.PeftType[spec.peft_type]]
    except KeyError:
        raise ValueError(f"method {spec.name}: PEFT {peft.__version__} has no peft_type {spec.peft_type!r}") from None
    return cls(**kwargs)


def build_model(spec: MethodSpec, model_path: str, tokenizer, settings: BenchSettings, device: str):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, settings.dtype)).to(device)
    if spec.peft_type is None:
        model.requires_grad_(True)
        return model
    import peft

    return peft.get_peft_model(model, peft_config(spec, model, tokenizer, settings.max_steps))


def param_counts(model) -> tuple[int, int]:
    if hasattr(model, "get_nb_trainable_parameters"):
        return tuple(model.get_nb_trainable_parameters())
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def make_optimizer(model, spec: MethodSpec, settings: BenchSettings):
    import torch
    from transformers import get_cosine_schedule_with_warmup

    lr = spec.training.get("lr", settings.lr)
    wd = spec.training.get("weight_decay", settings.weight_decay)
    if spec.training.get("optimizer", "adamw") == "lora-fa":
        from peft.optimizers import create_lorafa_optimizer

        opt = create_lorafa_optimizer(model, r=spec.adapter["r"], lora_alpha=spec.adapter["lora_alpha"], lr=lr,
                                      weight_decay=wd)
    else:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=wd)
    sched = get_cosine_schedule_with_warmup(opt, int(WARMUP_RATIO * settings.max_steps), settings.max_steps)
    return opt, sched


def train_step(model, batch, opt, sched, grad_clip: float, adalora_step: int | None = None) -> float:
    import torch

    opt.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    opt.step()
    sched.step()
    if adalora_step is not None:
        model.base_model.update_and_allocate(adalora_step)
    return loss.item()


# --------------------------------------------------------------------------- evaluation
def generate(model, tokenizer, questions: Sequence[str], batch_size: int, max_new_tokens: int,
             device: str) -> list[str]:
    """Greedy completions of the benchmark prompt, left-padded batches, decoded without the prompt."""
    import torch

    outputs: list[str] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(questions), batch_size):
        prompts = [gsm8k_peft.render_prompt(q) for q in questions[start:start + batch_size]]
        enc = [tokenizer(p)["input_ids"] for p in prompts]
        longest = max(map(len, enc))
        ids = torch.full((len(enc), longest), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, longest - len(e):] = torch.tensor(e)
            mask[i, longest - len(e):] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id)
        outputs += tokenizer.batch_decode(out[:, longest:], skip_special_tokens=True)
    return outputs


def evaluate(model, tokenizer, rows: Sequence[dict[str, str]], settings: BenchSettings, device: str
             ) -> tuple[float, list[dict[str, Any]]]:
    model.eval()
    outs = generate(model, tokenizer, [r["question"] for r in rows], settings.batch_size_eval,
                    settings.max_new_tokens, device)
    model.train()
    samples = [{"question": r["question"], "gold": r["gold"], "output": o, "extracted": gsm8k_peft.extract(o),
                "correct": gsm8k_peft.is_correct(o, r["gold"]), "task_version": gsm8k_peft.VERSION}
               for r, o in zip(rows, outs)]
    return (sum(s["correct"] for s in samples) / len(samples) if samples else float("nan")), samples


# --------------------------------------------------------------------------- runs
def _setup(settings: BenchSettings, model_path: str, data_dir: Path | None):
    import torch
    from transformers import AutoTokenizer

    from .seeding import seed_everything

    cuda = torch.cuda.is_available()
    if settings.threads and not cuda:
        torch.set_num_threads(settings.threads)
    seed_everything(settings.seed, deterministic=not cuda)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.model_max_length = settings.max_length
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, ("cuda" if cuda else "cpu")


def run_method(spec: MethodSpec, settings: BenchSettings, model_path: str, data_dir: Path | None,
               out_dir: Path) -> dict[str, Any]:
    """Train and test one method; returns the metrics for its record (see the module docstring)."""
    import torch

    tokenizer, device = _setup(settings, model_path, data_dir)
    train = tokenize_rows(tokenizer, read_train_rows(settings, data_dir), settings.max_length)
    valid, test = read_gsm8k("valid", settings, data_dir), read_gsm8k("test", settings, data_dir)

    memory = MemoryLog(device == "cuda")
    tic_total, cpu_total = time.perf_counter(), time.process_time()
    model = build_model(spec, model_path, tokenizer, settings, device)
    opt, sched = make_optimizer(model, spec, settings)
    trainable, total = param_counts(model)      # after the optimizer: LoRA-FA's freezes A
    model.train()
    losses, durations, valid_curve = [], [], []
    batches = bucket_batches(train, settings.batch_size)
    tokens = 0
    eval_time = eval_cpu = 0.0
    tic_train, cpu_train = time.perf_counter(), time.process_time()
    for step in range(1, settings.max_steps + 1):
        tic = time.perf_counter()
        raw = next(batches)
        tokens += sum(map(len, raw))
        batch = {k: v.to(device) for k, v in collate(raw, tokenizer.pad_token_id).items()}
        loss = train_step(model, batch, opt, sched, settings.grad_clip,
                          step if spec.peft_type == "ADALORA" else None)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at step {step}")
        losses.append(loss)
        memory.step()
        durations.append(time.perf_counter() - tic)
        if valid and step % settings.eval_steps == 0:
            tic_eval, cpu_eval = time.perf_counter(), time.process_time()
            acc, _ = evaluate(model, tokenizer, valid, settings, device)
            valid_curve.append({"step": step, "valid_accuracy": acc,
                                "train_loss": statistics.fmean(losses[-settings.eval_steps:])})
            eval_time += time.perf_counter() - tic_eval
            eval_cpu += time.process_time() - cpu_eval
        if device == "cuda" and step % EMPTY_CACHE_EVERY == 0:
            torch.cuda.empty_cache()
    train_time = time.perf_counter() - tic_train - eval_time
    train_cpu = time.process_time() - cpu_train - eval_cpu

    tensor_peak = cpu_step_tensor_peak(model, opt, next(bucket_batches(train, settings.batch_size)),
                                       tokenizer.pad_token_id) if device == "cpu" else None
    test_acc, samples = evaluate(model, tokenizer, test, settings, device)
    total_time = time.perf_counter() - tic_total
    mem = memory.summary()
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "test_samples.jsonl", "w") as f:
        for s in samples:
            f.write(json.dumps(s) + "\n")
    return {
        "total_time_s": round(total_time, 3),
        "train_time_s": round(train_time, 3),
        # CPU time of this process over the same span: on a shared machine other tenants stretch wall
        # time, not this (with one torch thread it is the work of the run itself)
        "train_cpu_time_s": round(train_cpu, 3),
        "total_cpu_time_s": round(time.process_time() - cpu_total, 3),
        "valid_eval_time_s": round(eval_time, 3),
        "test_accuracy": test_acc,
        "test_correct": sum(s["correct"] for s in samples),
        "test_n": len(samples),
        "test_answer_found": sum(s["extracted"] is not None for s in samples),
        # the benchmark's "train loss": the mean over the last eval_steps steps
        "train_loss": statistics.fmean(losses[-settings.eval_steps:]),
        "first_loss": losses[0],
        "memory": mem,
        "cpu_step_tensor_peak": tensor_peak,
        "trainable_params": int(trainable),
        "total_params": int(total),
        "steps": settings.max_steps,
        "train_tokens": tokens,
        "tokens_per_s": round(tokens / train_time, 1) if train_time > 0 else None,
        "step_time_median_s": statistics.median(durations),
        "train_rows": len(train),
        "valid_curve": valid_curve,
        "losses": losses,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "samples_file": str(out_dir / "test_samples.jsonl"),
    }


def run_side_by_side(specs: Sequence[MethodSpec], settings: BenchSettings, model_path: str,
                     data_dir: Path | None) -> dict[str, Any]:
    """Train ``specs`` in one process on identical batches, one step of each in turn (the order alternates
    every step); returns per-method step times and the ratios to the last method."""
    import torch

    tokenizer, device = _setup(settings, model_path, data_dir)
    train = tokenize_rows(tokenizer, read_train_rows(settings, data_dir), settings.max_length)
    models, opts = [], []
    for spec in specs:
        torch.manual_seed(settings.seed)
        model = build_model(spec, model_path, tokenizer, settings, device)
        model.train()
        models.append(model)
        opts.append(make_optimizer(model, spec, settings))
    batches = bucket_batches(train, settings.batch_size)
    warmup = max(2, settings.side_by_side_steps // 10)
    times: list[list[float]] = [[] for _ in specs]
    cpu_times: list[list[float]] = [[] for _ in specs]
    for step in range(warmup + settings.side_by_side_steps):
        batch = {k: v.to(device) for k, v in collate(next(batches), tokenizer.pad_token_id).items()}
        order = range(len(specs)) if step % 2 == 0 else reversed(range(len(specs)))
        for i in order:
            if device == "cuda":
                torch.cuda.synchronize()
            tic, cpu = time.perf_counter(), time.process_time()
            train_step(models[i], batch, *opts[i], settings.grad_clip,
                       step + 1 if specs[i].peft_type == "ADALORA" else None)
            if device == "cuda":
                torch.cuda.synchronize()
            if step >= warmup:
                times[i].append(time.perf_counter() - tic)
                cpu_times[i].append(time.process_time() - cpu)
    medians = [statistics.median(t) for t in times]
    cpu_medians = [statistics.median(t) for t in cpu_times]
    ref = specs[-1].name
    return {
        "methods": [s.name for s in specs],
        "steps": settings.side_by_side_steps,
        "warmup_steps": warmup,
        "step_time_median_s": {s.name: m for s, m in zip(specs, medians)},
        "step_time_sum_s": {s.name: sum(t) for s, t in zip(specs, times)},
        "step_time_ratio_median": {s.name: m / medians[-1] for s, m in zip(specs, medians)},
        "step_cpu_time_median_s": {s.name: m for s, m in zip(specs, cpu_medians)},
        "step_cpu_time_ratio_median": {s.name: m / cpu_medians[-1] for s, m in zip(specs, cpu_medians)},
        "reference": ref,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "step_times_s": {s.name: t for s, t in zip(specs, times)},
        "step_cpu_times_s": {s.name: t for s, t in zip(specs, cpu_times)},
    }


def settings_dict(settings: BenchSettings) -> dict[str, Any]:
    d = asdict(settings)
    d["side_by_side"] = list(settings.side_by_side)
    d["methods"] = list(settings.methods) if settings.methods is not None else None
    return d
