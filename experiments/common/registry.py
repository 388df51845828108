"""Every experiment ``run_all.sh`` knows, in the order it runs them.

Each entry is a script (or module) that accepts the shared switches of ``runner.build_parser``.
Adding an experiment to the main job is one line here. Benchmarks (``python -m adapters.bench``)
are run by hand on a quiet machine and are not part of the main job.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    name: str                   # also the folder of its records under results/
    command: tuple[str, ...]    # argv after the python executable, run from the repository root
    reproduces: str             # the paper's table / figure
    profiles: tuple[str, ...] = ("cpu", "small", "paper")


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("no_free_lunch", ("experiments/no_free_lunch.py",), "Fig. 2 (left): No-Free-Lunch adaptation"),
    Experiment("efficiency", ("experiments/efficiency.py",), "Fig. 2 (middle, right): init and step time, memory"),
    Experiment("complexity", ("experiments/complexity.py",), "Tables 2-3: parameters, space and FLOPs"),
    Experiment("gradient_norm", ("experiments/gradient_norm.py",), "Fig. 1: gradient norm at initialisation"),
    Experiment("nlg_llama2_7b", ("experiments/nlg_llama2_7b.py",),
               "Table 5 (Llama2-7B) and Fig. 5: math/code SFT; cpu: every method on the tiny model, 2-process DeepSpeed"),
    Experiment("rank_ablation", ("experiments/rank_ablation.py",), "Table 7: MiSS rank 16-128 on Llama2-7B"),
    # the cpu profile of these would train the same tiny Llama again
    Experiment("nlg_mistral", ("experiments/nlg_mistral.py",), "Table 5 (Mistral-7B)", ("small", "paper")),
    Experiment("nlg_qwen3", ("experiments/nlg_qwen3.py",), "Table 5 (Qwen3-4B)", ("small", "paper")),
    Experiment("nlg_llama2_13b", ("experiments/nlg_llama2_13b.py",), "Table 5 (Llama2-13B)", ("small", "paper")),
    Experiment("nlg_rwkv6", ("experiments/nlg_rwkv6.py",),
               "Table 5 (RWKV6-7B); cpu: a tiny random RWKV6 through fla_cpu, LoRA/PiSSA/MiSS (pipeline check)"),
    Experiment("nlg_rwkv7", ("experiments/nlg_rwkv7.py",),
               "Table 9 (RWKV7-3B); cpu: a tiny random RWKV7 through fla_cpu, LoRA/PiSSA/MiSS (pipeline check)"),
    Experiment("glue", ("experiments/glue.py",),
               "Table 4: GLUE (RoBERTa-base; cpu: the real MiniLM-L6 encoder at a reduced budget)"),
    Experiment("vtab", ("experiments/vtab.py",), "Table 6: VTAB-1K with ViT-B/16 (cpu: a pipeline check)"),
    Experiment("pareto", ("experiments/pareto.py",),
               "Table 8 and Fig. 4: PEFT MetaMathQA benchmark, Pareto fronts (cpu: tiny model, every PEFT method)"),
)


def get_experiment(name: str) -> Experiment:
    for e in EXPERIMENTS:
        if e.name == name:
            return e
    raise ValueError(f"unknown experiment {name!r}; known: {', '.join(e.name for e in EXPERIMENTS)}")
