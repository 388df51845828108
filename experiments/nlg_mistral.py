"""Table 5, Mistral-7B rows: math and code SFT with LoRA, DoRA, PiSSA and MiSS (Table 10 settings).

    python experiments/nlg_mistral.py --profile paper [--task math] [--method miss] [--seed 42]
    python experiments/nlg_mistral.py --profile paper --hostfile hostfile     # several nodes

Protocol: as ``nlg_llama2_7b.py`` (SPEC §3.5) on mistralai/Mistral-7B-v0.1. Trainable parameters from the
model dimensions: LoRA/PiSSA r36 94.4M, DoRA 95.7M (the paper prints 95.8M), MiSS r64 88.1M (the paper
prints 87.0M, the Llama2-7B number; see experiments/common/model_presets.py).

Expected (paper): MiSS 68.92 GSM8K / 18.85 MATH / 42.07 HumanEval / 61.33 MBPP, best average (47.79).
Profiles: small trains TinyLlama (no ~1B Mistral exists) on 20k rows; cpu trains the tiny random Llama
(the same runs as nlg_llama2_7b, so run_all leaves it to that script).
Runtime (estimated, not run: no GPU here): paper ~3-6 GPU-hours per math run on 8 A100s; small ~1 GPU-hour per run.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.sft_experiment import nlg_main


def main(argv: list[str] | None = None) -> int:
    return nlg_main("nlg_mistral", "mistral-7b", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
