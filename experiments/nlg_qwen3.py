"""Table 5, Qwen3-4B rows: math and code SFT with LoRA, DoRA, PiSSA and MiSS (Table 10 settings).

    python experiments/nlg_qwen3.py --profile paper [--task math] [--method miss] [--seed 42]

Protocol: as ``nlg_llama2_7b.py`` (SPEC §3.5) on Qwen/Qwen3-4B, the model the authors' released script
names (the paper says only "Qwen3-4B"; the Base model has the same dimensions and counts). Trainable: LoRA/PiSSA r36 74.3M, DoRA 75.4M, MiSS r64 70.8M (the paper prints 70.1M).

Expected (paper): MiSS 85.52 GSM8K / 34.82 MATH (the highest Math score of the table) / 74.48 HumanEval /
78.05 MBPP, best average (68.22). Profiles: small trains Qwen/Qwen3-0.6B on 20k rows.
Runtime (estimated, not run: no GPU here): paper ~2-4 GPU-hours per math run on 8 A100s.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.sft_experiment import nlg_main


def main(argv: list[str] | None = None) -> int:
    return nlg_main("nlg_qwen3", "qwen3-4b", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
