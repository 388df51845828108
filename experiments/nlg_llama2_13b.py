"""Table 5, Llama2-13B rows: math and code SFT with LoRA, DoRA, PiSSA and MiSS (Table 11 settings).

    python experiments/nlg_llama2_13b.py --profile paper [--task math] [--method miss] [--seed 42]
    python experiments/nlg_llama2_13b.py --profile paper --hostfile hostfile  # several nodes

Protocol: as ``nlg_llama2_7b.py`` (SPEC §3.5) on meta-llama/Llama-2-13b-hf with Table 11: global batch 128,
LoRA/DoRA r64 a128, PiSSA r64 a64, MiSS r128. Trainable: LoRA/PiSSA 250M, DoRA 252M, MiSS r128 272.6M
(the paper prints 255M, which no power-of-two rank gives; see model_presets.py).

Expected (paper): MiSS 68.64 GSM8K / 15.74 MATH / 38.15 HumanEval / 47.91 MBPP, best average (42.11).
Profiles: small trains TinyLlama on 20k rows; cpu trains the tiny random Llama.
Runtime (estimated, not run: no GPU here): paper ~6-12 GPU-hours per math run on 8 A100s.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.sft_experiment import nlg_main


def main(argv: list[str] | None = None) -> int:
    return nlg_main("nlg_llama2_13b", "llama2-13b", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
