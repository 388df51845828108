"""Table 5, Llama2-7B rows (and Fig. 5's loss curves): math and code SFT with LoRA, DoRA, PiSSA and MiSS.

    python experiments/nlg_llama2_7b.py --profile cpu                       # tiny model, 2 CPU processes
    python experiments/nlg_llama2_7b.py --profile paper --task math --method miss --seed 42
    python experiments/nlg_llama2_7b.py --profile paper --hostfile hostfile  # several nodes (DeepSpeed)

Protocol (SPEC §3.5, Table 10): MetaMathQA (395k) or CodeFeedback-Python (~100k), Alpaca prompt, loss on
the response, max length 512; AdamW lr 2e-5, cosine, no warmup, 1 epoch, global batch 64, bf16,
DeepSpeed ZeRO-2; q/k/v/o/gate/up/down adapted; LoRA r36 a72, DoRA r36 a72, PiSSA r36 a36, MiSS r64
(trainable 89.9M / 91.3M / 89.9M / 87.0M). Records go to results/nlg_llama2_7b/, model outputs to
runs/nlg_llama2_7b/<run>/ (adapter/, lora/ for MiSS, merged/ for DoRA and PiSSA). Then the eval stage
(experiments/common/nlg_eval.py; --no-eval skips it) scores every trained run, math on GSM8K and MATH,
code on HumanEval and MBPP (vLLM; LoRA and MiSS adapters share one engine per base model), into
results/nlg_llama2_7b-eval/<run>.json.

Expected (paper, Table 5): MiSS 48.16 GSM8K / 8.58 MATH / 23.63 HumanEval / 36.81 MBPP, ahead of PiSSA,
DoRA and LoRA on average; Fig. 5: MiSS's loss falls faster than LoRA's per token and per second.
The cpu profile shows only that the pipeline runs end to end and the loss falls (random tiny model); its
scores (8 prompts per task, 32 new tokens, vLLM's CPU build) are a pipeline check, ~0%.

Runtime: cpu 274-330 s for training (10 runs, 30 steps each, 2 processes) and vLLM scoring together, measured
by `run_all --profile cpu` on an idle 2-core machine; paper (estimated, not run: no GPU here) ~3-6 GPU-hours per math run on 8 A100s, plus generation on the 6319 math / 563 code test prompts.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.sft_experiment import nlg_main


def main(argv: list[str] | None = None) -> int:
    return nlg_main("nlg_llama2_7b", "llama2-7b", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
