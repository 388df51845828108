"""The three scales every experiment runs at, as data (DESIGN.md "Profiles").

Experiments keep their own per-profile table of sizes (steps, models, seeds) keyed by these names;
this table holds what is common: the hardware assumed, where data and models come from, the dtype.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    purpose: str
    hardware: str
    device: str          # "cpu" or "cuda"
    dtype: str           # training dtype of the transformer experiments
    hub_access: bool     # whether models/data may be read from the Hugging Face hub
    local_data: bool     # whether data is read from a local data directory by default


PROFILES: dict[str, Profile] = {
    "cpu": Profile(
        name="cpu",
        purpose="whole pipeline end to end in minutes; real numbers for the synthetic experiments",
        hardware="a laptop or CI box: 2 cores, no GPU, no hub",
        device="cpu", dtype="float32", hub_access=False, local_data=True,
    ),
    "small": Profile(
        name="small",
        purpose="a faithful trend in hours: ~0.5-1B LLMs, RoBERTa-base, ViT-B/16, hub subsets",
        hardware="one GPU",
        device="cuda", dtype="bfloat16", hub_access=True, local_data=False,
    ),
    "paper": Profile(
        name="paper",
        purpose="the paper's models, data and budgets",
        hardware="multi-GPU, multi-node via DeepSpeed",
        device="cuda", dtype="bfloat16", hub_access=True, local_data=False,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
