"""Trainer benchmark (issue 4, part 6; not a paper table): the cost of our SFT trainer, and MiSS vs LoRA.

    python experiments/trainer_bench.py --profile cpu
    python experiments/trainer_bench.py --profile small --set reps=3     # one GPU, TinyLlama-1.1B

Two comparisons on the same model, data, batch and steps, one process, no DeepSpeed:
1. ``ours`` (``sft_trainer.run_sft``: offset-based label masking, token counting, wall-clock logging)
   against ``plain``, a minimal HF ``Trainer`` + PEFT script of the kind the PiSSA/MiSS authors ran
   (``DataCollatorForSeq2Seq``, prompt masked by its tokenised length), both LoRA r36 a72. Goal:
   ours >= 0.97 x plain in tokens/s. Tokens/s = non-padding input tokens / ``train_runtime``.
2. MiSS r64 against LoRA r36 (Table 10's ranks), both through our trainer: time per optimizer step
   (median over steps after the first) and peak memory (CUDA max allocated on GPU; on CPU the process's
   peak RSS, which mostly measures the libraries). The paper claims MiSS costs less time and memory.

Each measurement runs in its own process (a clean memory peak), variants interleaved and repeated
``reps`` times so that load on a shared machine hits all of them alike; ``python -m analysis`` reports
medians and ratios. Runtime: cpu ~2 min; small (estimated, not run here) ~5 min on one GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.config import override
from experiments.common.model_presets import LLAMA_TARGETS, TABLE10, get_preset
from experiments.common.records import REPO_ROOT, RunRecord
from experiments.common.runner import Context, Run, experiment_main

EXPERIMENT = "trainer_bench"
VARIANTS = ("ours-lora", "plain-lora", "ours-miss")


@dataclass(frozen=True)
class BenchSettings:
    model: str                  # tiny | a hub id or path
    reps: int
    max_steps: int
    per_device_batch: int = 4
    gradient_accumulation: int = 2
    max_samples: int = 512
    lr: float = 1e-3
    seed: int = 42


PROFILES = {
    "cpu": BenchSettings(model="tiny", reps=2, max_steps=20),
    "small": BenchSettings(model=get_preset("llama2-7b").small_model, reps=3, max_steps=30, lr=2e-5),
    "paper": BenchSettings(model=get_preset("llama2-7b").small_model, reps=3, max_steps=30, lr=2e-5),
}


def add_arguments(p) -> None:
    p.add_argument("--worker", type=Path, default=None, help="internal: measure one variant described by this JSON")


def plan(ctx: Context) -> list[Run]:
    s = override(PROFILES[ctx.profile.name], where=f"--set for profile {ctx.profile.name}", **ctx.overrides)
    return [Run(f"{variant}-rep{rep}", {"variant": variant, "rep": rep, "settings": asdict(s)}, s.seed)
            for rep in range(s.reps) for variant in VARIANTS]


def check_inputs(ctx: Context, runs: list[Run]) -> None:
    """The tiny model's corpus, which holds its training file too, before the first run."""
    from eval.data_files import require
    from experiments.common.tiny_model import CORPUS_FILES

    if any(run.config["settings"]["model"] == "tiny" for run in runs):
        require(CORPUS_FILES, ctx.data_dir)


def execute(run: Run, record: RunRecord, ctx: Context) -> None:
    s = BenchSettings(**run.config["settings"])
    model = s.model
    if model == "tiny":
        from experiments.common.tiny_model import ensure_tiny_model

        model = str(ensure_tiny_model(Path(ctx.args.runs_dir) / "_cache", ctx.data_dir))
    data_dir = str(ctx.data_dir) if ctx.data_dir else None
    source = "local:gsm8k-metamath" if s.model == "tiny" else "meta-math/MetaMathQA"
    job = {"variant": run.config["variant"], "model": model, "data_source": source, "data_dir": data_dir,
           "settings": asdict(s)}
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "job.json"
        spec.write_text(json.dumps(job))
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)], cwd=REPO_ROOT,
                             capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    record.runtime["model"] = model
    record.metrics.update(result)
    record.trainable_params = result["trainable_params"]


# --------------------------------------------------------------------------- the measured processes
def _peak_mb() -> tuple[float, str]:
    from experiments.common.records import peak_memory

    return peak_memory()


def _ours(job: dict) -> dict:
    from experiments.common.sft_trainer import SFTConfig, run_sft

    s = BenchSettings(**job["settings"])
    method = job["variant"].split("-", 1)[1]
    r, alpha = TABLE10[method]
    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(model=job["model"], method=method, r=r, alpha=alpha, output_dir=out,
                        data_source=job["data_source"], data_dir=job["data_dir"], max_samples=s.max_samples,
                        lr=s.lr, max_steps=s.max_steps, per_device_batch=s.per_device_batch,
                        global_batch=s.per_device_batch * s.gradient_accumulation, deepspeed=None, save_steps=0,
                        export=False, seed=s.seed)
        res = run_sft(cfg)
    m, times = res["metrics"], res["curves"]["wall_time_s"]
    steps = [b - a for a, b in zip(times, times[1:])]
    return {"tokens": m["tokens_seen"], "train_runtime_s": m["train_runtime_this_session_s"],
            "step_times_s": steps, "trainable_params": m["trainable_params"], "final_loss": m["final_loss"]}


def _plain(job: dict) -> dict:
    """A minimal HF Trainer + PEFT LoRA script (what a user would write), measured the same way."""
    import peft
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments, set_seed)

    from experiments.common.sft_data import PROMPT, DataSpec, read_pairs

    s = BenchSettings(**job["settings"])
    set_seed(s.seed)
    r, alpha = TABLE10["lora"]
    tok = AutoTokenizer.from_pretrained(job["model"])
    tok.pad_token = tok.pad_token or tok.eos_token
    pairs = read_pairs(DataSpec(job["data_source"], max_samples=s.max_samples),
                       Path(job["data_dir"]) if job["data_dir"] else None)
    sources = [PROMPT.format(query=q) for q, _ in pairs]
    full = tok([src + f"{resp}\n{tok.eos_token}" for src, (_, resp) in zip(sources, pairs)], truncation=True,
               max_length=512)["input_ids"]
    lens = [len(ids) for ids in tok(sources)["input_ids"]]
    data = [{"input_ids": ids, "labels": [-100] * n + ids[n:]} for ids, n in zip(full, lens)]
    per_batch: list[int] = []     # the loader runs one batch ahead: only the trained ones are counted below
    pad = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)

    def collate(batch):
        out = pad(batch)
        per_batch.append(int(out["attention_mask"].sum()))
        return out

    import torch

    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.bfloat16 if cuda else torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(LLAMA_TARGETS),
                                                       lora_dropout=0.0, task_type="CAUSAL_LM"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=s.per_device_batch,
                                 gradient_accumulation_steps=s.gradient_accumulation, learning_rate=s.lr,
                                 lr_scheduler_type="cosine", max_steps=s.max_steps, logging_steps=1, save_strategy="no",
                                 report_to=[], seed=s.seed, data_seed=s.seed, bf16=cuda, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
        runtime = trainer.train().metrics["train_runtime"]
    return {"tokens": sum(per_batch[:s.max_steps * s.gradient_accumulation]), "train_runtime_s": runtime,
            "step_times_s": None,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "final_loss": next(h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h)}


def worker(spec: Path) -> None:
    import torch

    job = json.loads(spec.read_text())
    # One thread on CPU: on a shared machine, OpenMP threads that wait on each other while other jobs hold
    # the cores slow a step down by an order of magnitude, at random.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = (_plain if job["variant"].startswith("plain") else _ours)(job)
    peak, kind = _peak_mb()
    result.update({"tokens_per_s": result["tokens"] / result["train_runtime_s"], "peak_memory_mb": round(peak, 1),
                   "peak_memory_kind": kind, "process_time_s": round(time.perf_counter() - t0, 2),
                   "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads()})
    if result["step_times_s"]:
        steps = sorted(result["step_times_s"])
        result["step_time_median_s"] = steps[len(steps) // 2]
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    if argv is None and "--worker" in sys.argv:
        worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
        return 0
    return experiment_main(EXPERIMENT, __doc__, plan, execute, argv=argv, add_arguments=add_arguments,
                           check_inputs=check_inputs)


if __name__ == "__main__":
    sys.exit(main())
