"""Table 9: RWKV7-3B math SFT with LoRA, PiSSA and MiSS through flash-linear-attention.

    python experiments/nlg_rwkv7.py --profile cpu                    # tiny random RWKV7, 2 CPU processes
    python experiments/nlg_rwkv7.py --profile paper [--method miss] [--seed 42]

Protocol: as ``nlg_llama2_7b.py`` (SPEC §3.5) on fla-hub/rwkv7-2.9B-world, math only (Table 9 reports
GSM8K alone). Adapted: r/k/v/o projections, channel-mix key/value. Ranks are not given for RWKV7; Table
10's are assumed. Trainable: MiSS r64 47.2M as printed; LoRA/PiSSA at r36 give 53.1M, the printed 47.2M
is r32. The model comes from flash-linear-attention (``fla``), whose RWKV7 layers call Triton kernels on a
GPU; on CPU, ``experiments/common/fla_cpu.py`` runs them in plain PyTorch (fast enough for tiny models only).

Expected (paper): GSM8K base 44.35, LoRA 55.64, PiSSA 57.16, MiSS 58.22.
The cpu profile is a pipeline check: a tiny random RWKV7 (hidden 128, 2 layers, heads of 32) trained
30 steps with LoRA, PiSSA and MiSS by 2-process DeepSpeed ZeRO-2 on CPU (the loss falls), then scored
through transformers' generate (vLLM has no RWKV) on 8 prompts per task, ~0%.

Runtime: cpu 9 min 18 s (3 runs and their scoring), measured by `python experiments/nlg_rwkv7.py --profile
cpu` on the 2-core machine while other jobs kept its load average at 9-13; paper (estimated, not run: no GPU
here) ~2-3 GPU-hours per run on 8 A100s; small (fla-hub/rwkv7-0.4B-world, 20k rows) ~0.5 GPU-hour.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.sft_experiment import RWKV_PROFILES, nlg_main


def main(argv: list[str] | None = None) -> int:
    return nlg_main("nlg_rwkv7", "rwkv7-3b", __doc__, argv, table=RWKV_PROFILES)


if __name__ == "__main__":
    sys.exit(main())
