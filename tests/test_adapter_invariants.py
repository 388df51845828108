"""The adapter invariants of DESIGN.md §3, driven by one table of cases over every registered method.

A method registered in ``adapters.METHODS`` but missing from ``CASES`` fails ``test_every_method_has_a_case``,
so a new method cannot skip these checks.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import adapters
from adapters import (
    ADAPTER_PREFIX,
    adapter_state_dict,
    inject,
    load_adapter_state_dict,
    merge,
    trainable_parameters,
    unmerge,
)

# case id -> hyperparameters (method = case id), or (method, hyperparameters). Sizes suit the model below:
# every dim is a multiple of 8 (MiSS bat r=4, mini_r=8, MoS shards) and 16 % 5 != 0 exercises padding.
CASES: dict[str, dict | tuple[str, dict]] = {
    "lora": dict(r=4),
    "lora_rslora": ("lora", dict(r=4, rslora=True)),
    "pissa": dict(r=4),
    "dora": dict(r=4),
    "lora_fa": dict(r=4),
    "vera": dict(r=8),
    "adalora": dict(r=4),
    "loha": dict(r=4),
    "miss": dict(r=4),
    "miss_padded": ("miss", dict(r=5)),
    "miss_mini": ("miss", dict(r=4, variant="mini", mini_r=8)),
    "miss_bat": ("miss", dict(r=4, variant="bat")),
    "miss_expand": dict(shards=5),
    "prolora": dict(r=4, unshared_rank=1, sharing_ratio=3),
    "prolora_all_shared": ("prolora", dict(r=3, unshared_rank=0, sharing_ratio=2)),
    "mos": dict(r=2, rank_factor=3, shards_per_vector=2, private_ratio=0.5),
    "mos_no_private": ("mos", dict(r=2, private_ratio=0.0)),
    "mora": dict(r=5),
    "full": dict(),
}


def _case(case_id: str) -> tuple[str, dict]:
    spec = CASES[case_id]
    return spec if isinstance(spec, tuple) else (case_id, spec)


CASE_IDS = sorted(CASES)
TARGETS = ["0", "2", "4"]  # 16->24, 24->24, 24->24: two shapes, and two layers sharing one shape
HEAD = "6"


def _model() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 32)
    )


def _input() -> torch.Tensor:
    return torch.randn(2, 3, 16)


@torch.no_grad()
def _randomise(model: nn.Module) -> None:
    """Move every trainable tensor away from its init, so the update is non-zero everywhere."""
    for p in model.parameters():
        if p.requires_grad:
            p.add_(0.1 * torch.randn_like(p))


def _is_adapter_name(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith(ADAPTER_PREFIX)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_every_method_has_a_case():
    covered = {_case(c)[0] for c in CASES}
    missing = sorted(set(adapters.METHODS) - covered)
    assert not missing, f"registered methods without an invariant case in CASES: {missing}"
    unknown = sorted(covered - set(adapters.METHODS))
    assert not unknown, f"CASES names methods that are not registered: {unknown}"


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_init_output_equals_base(case_id):
    method, hyper = _case(case_id)
    model = _model()
    base = copy.deepcopy(model)
    x = _input()
    inject(model, method, TARGETS, **hyper)
    with torch.no_grad():
        assert _close(model(x), base(x))


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_merge_matches_unmerged_and_unmerge_restores(case_id):
    method, hyper = _case(case_id)
    model = inject(_model(), method, TARGETS, **hyper)
    _randomise(model)
    x = _input()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y = model(x)
        merge(model)
        assert _close(model(x), y)
        unmerge(model)
        assert _close(model(x), y)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert _close(after[key], before[key]), f"unmerge did not restore {key}"


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_only_adapter_parameters_train(case_id):
    method, hyper = _case(case_id)
    model = inject(_model(), method, TARGETS, trainable_modules=[HEAD], **hyper)
    _randomise(model)
    named = list(model.named_parameters(remove_duplicate=False))
    allowed = {id(p) for n, p in named if _is_adapter_name(n)} | {id(p) for p in model[6].parameters()}
    assert all(p.requires_grad for p in model[6].parameters())
    trainable = [(n, p) for n, p in named if p.requires_grad]
    assert any(_is_adapter_name(n) for n, _ in trainable), "no adapter parameter is trainable"
    for n, p in trainable:
        assert id(p) in allowed, f"{n} trains but is neither an adapter tensor nor in trainable_modules"

    model(_input()).pow(2).sum().backward()
    for n, p in named:
        if p.requires_grad:
            assert p.grad is not None, f"trainable {n} got no gradient"
        else:
            assert p.grad is None, f"frozen {n} got a gradient"
    assert any(p.grad.abs().sum() > 0 for n, p in trainable if _is_adapter_name(n))


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_adapter_state_dict_round_trips(case_id):
    method, hyper = _case(case_id)
    model = _model()
    fresh = copy.deepcopy(model)
    inject(model, method, TARGETS, **hyper)
    _randomise(model)
    state = adapter_state_dict(model)
    assert state and all(_is_adapter_name(k) for k in state)

    torch.manual_seed(1)  # a different init (and, for MoS, different shard indices) in the fresh model
    inject(fresh, method, TARGETS, **hyper)
    load_adapter_state_dict(fresh, state)
    x = _input()
    with torch.no_grad():
        assert _close(fresh(x), model(x))


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_trainable_count_matches_formula_on_one_layer(case_id):
    method, hyper = _case(case_id)
    model = inject(nn.Sequential(nn.Linear(16, 24)), method, "0", **hyper)
    assert trainable_parameters(model) == adapters.get_method(method).trainable_count(24, 16, **hyper)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_trainable_count_sums_over_layers(case_id):
    """Shared tensors (VeRA's projections, MoS's pools) are counted once; the total is the per-layer sum."""
    method, hyper = _case(case_id)
    model = inject(_model(), method, TARGETS, trainable_modules=[HEAD], **hyper)
    cls = adapters.get_method(method)
    expected = sum(cls.trainable_count(model.get_submodule(t).out_features, model.get_submodule(t).in_features, **hyper)
                   for t in TARGETS)
    assert trainable_parameters(model) == expected + sum(p.numel() for p in model[6].parameters())


def test_second_inject_keeps_the_first_adapters_trainable():
    model = nn.Sequential(nn.Linear(16, 24), nn.Linear(24, 8))
    adapters.inject(model, "miss", ["0"], r=4)
    adapters.inject(model, "lora", ["1"], r=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0.adapter_D", "1.adapter_A", "1.adapter_B"}


def test_unload_restores_plain_linears_with_the_update_merged():
    model = nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 8))
    adapters.inject(model, "miss", ["0", "2"], r=4)
    with torch.no_grad():
        for _, layer in adapters.adapter_layers(model):
            layer.adapter_D.normal_()
    x = torch.randn(3, 16)
    expected = model(x)
    adapters.unload(model)
    assert all(type(m) in (nn.Linear, nn.Tanh) for m in model)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
