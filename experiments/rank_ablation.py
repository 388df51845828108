"""Table 7: MiSS rank ablation on Llama2-7B, math SFT at r = 16, 32, 64, 128.

    python experiments/rank_ablation.py --profile cpu
    python experiments/rank_ablation.py --profile paper --set ranks=16,128 --seed 42

Protocol: ``nlg_llama2_7b.py``'s math run (SPEC §3.5, §3.8: MetaMathQA, Table 10 settings) with MiSS at
each rank; trainable parameters 21.8M / 43.5M / 87.0M / 174.1M (printed 21.7/43.5/87.0/174.0M, i.e.
truncated). The r64 run is the same configuration as nlg_llama2_7b's MiSS run; it is trained again here
so that this table is self-contained. The eval stage (``--no-eval`` skips it) scores GSM8K and MATH,
all four MiSS adapters on one engine load (results/rank_ablation-eval/).

Expected (paper): GSM8K 45.90 / 46.18 / 48.16 / 53.49 and MATH 3.77 / 7.43 / 8.58 / 10.08, rising with r.
The cpu profile (tiny random Llama, one process, no DeepSpeed: the DeepSpeed path is nlg_llama2_7b's)
only shows that every rank trains and how the loss and step time move with r.

Runtime: cpu ~1.5 min (4 runs of 30 steps); paper (estimated, not run here) ~3-6 GPU-hours per run on 8 A100s.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common.config import override
from experiments.common.model_presets import get_preset
from experiments.common.runner import Context, Run, experiment_main
from experiments.common.nlg_eval import EVAL_STAGE
from experiments.common.sft_experiment import NLG_PROFILES, add_nlg_arguments, check_inputs, dry_run_sft, execute_sft, sft_run

EXPERIMENT = "rank_ablation"
PRESET = "llama2-7b"
RANKS = (16, 32, 64, 128)
PROFILES = {
    # the cpu profile trains in one process (the two-process DeepSpeed path is shown by nlg_llama2_7b)
    "cpu": dataclasses.replace(NLG_PROFILES["cpu"], launcher="python", deepspeed=None, nproc=1, per_device_batch=4),
    "small": NLG_PROFILES["small"],
    "paper": NLG_PROFILES["paper"],
}


def plan(ctx: Context) -> list[Run]:
    overrides = dict(ctx.overrides)
    ranks = overrides.pop("ranks", RANKS)
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    settings = override(PROFILES[ctx.profile.name], where=f"--set for profile {ctx.profile.name}", **overrides)
    preset = get_preset(PRESET)
    seeds = tuple(int(s) for s in ctx.args.seed.split(",")) if ctx.args.seed else settings.seeds
    return [sft_run(ctx, settings, preset, "math", "miss", seed, r=r, name=f"math-miss-r{r}-s{seed}")
            for r in ranks for seed in seeds]


def main(argv: list[str] | None = None) -> int:
    return experiment_main(EXPERIMENT, __doc__, plan, execute_sft, argv=argv, add_arguments=add_nlg_arguments,
                           stage=EVAL_STAGE, dry_run=dry_run_sft, check_inputs=check_inputs)


if __name__ == "__main__":
    sys.exit(main())
