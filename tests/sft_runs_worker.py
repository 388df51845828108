"""Train several SFT runs one after another in one launch (the multi-process tests' driver).

Every rank of a ``deepspeed`` (or ``torchrun``) launch runs this. Each config file is one ``SFTConfig``:
``--killed`` runs are first stopped by an exception right after their ``--fail-after`` checkpoint (as a
crash would stop them) and then started again, which resumes from that checkpoint; ``--configs`` runs
train straight through. One launch for several runs saves the launcher and the imports per run, which
dominate a tiny run on CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.common.sft_trainer import SFTConfig, SimulatedFailure, fail_after_checkpoint, run_sft


def _forget_previous_run() -> None:
    """The accelerate state keeps the previous run's DeepSpeed plugin (the process group stays); the
    next run must configure its own ZeRO stage."""
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    AcceleratorState._reset_state(reset_partial_state=False)
    unset_hf_deepspeed_config()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--killed", nargs="*", type=Path, default=[], help="runs stopped after a checkpoint, then resumed")
    p.add_argument("--configs", nargs="*", type=Path, default=[], help="runs trained straight through")
    p.add_argument("--fail-after", type=int, default=2, help="the step whose checkpoint --killed runs stop after")
    p.add_argument("--local_rank", type=int, default=None)      # passed by the deepspeed launcher
    args = p.parse_args(argv)
    for path in args.killed:
        try:
            run_sft(SFTConfig.from_json(path), callbacks=[fail_after_checkpoint(args.fail_after)])
        except SimulatedFailure:
            _forget_previous_run()
        else:
            raise RuntimeError(f"{path}: the run was to stop after step {args.fail_after} and did not")
        run_sft(SFTConfig.from_json(path))
        _forget_previous_run()
    for path in args.configs:
        run_sft(SFTConfig.from_json(path))
        _forget_previous_run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
