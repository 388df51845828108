"""Table 5, RWKV6-7B rows: math SFT with LoRA, PiSSA and MiSS through flash-linear-attention.

    python experiments/nlg_rwkv6.py --profile cpu                    # tiny random RWKV6, 2 CPU processes
    python experiments/nlg_rwkv6.py --profile paper [--method miss] [--seed 42]

Protocol: as ``nlg_llama2_7b.py`` (SPEC §3.5) on fla-hub/rwkv6-7B-finch, math only (the paper prints
"--" for code). Adapted: r/k/v/g projections, output projection, channel-mix key/value/receptance.
Trainable: MiSS r64 88.1M as printed; LoRA/PiSSA at Table 10's r36 give 99.1M, the printed 88.1M is r32.
The model comes from flash-linear-attention (``fla``), whose RWKV6 layers call Triton kernels on a GPU;
on CPU, ``experiments/common/fla_cpu.py`` runs them in plain PyTorch (fast enough for tiny models only).

Expected (paper): GSM8K LoRA 38.13 < PiSSA 40.48 < MiSS 41.73; MATH 6.06 / 6.12 / 6.52.
The cpu profile is a pipeline check: a tiny random RWKV6 (hidden 128, 2 layers, heads of 32) trained
30 steps with LoRA, PiSSA and MiSS by 2-process DeepSpeed ZeRO-2 on CPU (the loss falls), then scored
through transformers' generate (vLLM has no RWKV) on 8 prompts per task, ~0%.

Runtime: cpu 7 min 41 s (3 runs and their scoring), measured by `python experiments/nlg_rwkv6.py --profile
cpu` on the 2-core machine while other jobs kept its load average at 13; paper (estimated, not run: no GPU
here) ~3-6 GPU-hours per run on 8 A100s; small (fla-hub/rwkv6-1.6B-finch, 20k rows) ~1 GPU-hour.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.sft_experiment import RWKV_PROFILES, nlg_main


def main(argv: list[str] | None = None) -> int:
    return nlg_main("nlg_rwkv6", "rwkv6-7b", __doc__, argv, table=RWKV_PROFILES)


if __name__ == "__main__":
    sys.exit(main())
