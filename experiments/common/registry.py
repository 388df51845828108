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
)


def get_experiment(name: str) -> Experiment:
    for e in EXPERIMENTS:
        if e.name == name:
            return e
    raise ValueError(f"unknown experiment {name!r}; known: {', '.join(e.name for e in EXPERIMENTS)}")
