"""Bad requests fail loudly: ``adapters.AdapterError`` (a ``ValueError``) whose message names the module,
its shape and the broken rule, raised before the model is touched."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import adapters
from adapters import AdapterError, inject

# Module '0' is Linear 16->24 (weight 24x16), module '2' is Linear 24->12 (weight 12x24).
SHAPE_0 = "24x16"
SHAPE_2 = "12x24"

# Methods whose rank is not bounded by the layer: VeRA's r is the width of the shared random projections.
RANK_UNBOUNDED = {"vera"}


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 12))


def _ranked_methods() -> list[str]:
    return sorted(n for n, cls in adapters.METHODS.items() if "r" in inspect.signature(cls.__init__).parameters)


def _raises(method: str, targets, **hyper) -> str:
    with pytest.raises(AdapterError) as info:
        inject(_model(), method, targets, **hyper)
    return str(info.value)


def test_adapter_error_is_a_value_error():
    assert issubclass(AdapterError, ValueError)


def test_pattern_matching_nothing_lists_the_linear_modules():
    msg = _raises("lora", ["q_proj"], r=2)
    assert "q_proj" in msg and "matches no nn.Linear" in msg
    assert "'0'" in msg and "'2'" in msg


def test_unknown_method_is_an_adapter_error():
    msg = _raises("no_such_method", ["0"], r=2)
    assert "no_such_method" in msg and "lora" in msg  # names the known methods


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown adapter method 'no_such_method'; known: .*lora"):
        inject(_model(), "no_such_method", ["0"], r=2)


def test_unknown_hyperparameter_names_what_the_method_takes():
    msg = _raises("lora", ["0"], rank=2)
    assert "'lora'" in msg and "rank" in msg and "'r'" in msg


@pytest.mark.parametrize("method", _ranked_methods())
@pytest.mark.parametrize("r", [0, -1])
def test_non_positive_rank(method, r):
    msg = _raises(method, ["0", "2"], r=r)
    assert "'0'" in msg and SHAPE_0 in msg and "positive" in msg and str(r) in msg


@pytest.mark.parametrize("method", [m for m in _ranked_methods() if m not in RANK_UNBOUNDED])
def test_rank_above_in_features(method):
    msg = _raises(method, ["0", "2"], r=17)
    assert "'0'" in msg and SHAPE_0 in msg and "r=17" in msg and "16" in msg


# method, hyperparameters, the module that breaks the rule, its shape, words of the rule
RULES = [
    ("miss", dict(r=5, variant="bat"), "0", SHAPE_0, "divisible by r=5"),
    ("miss", dict(r=8, variant="bat"), "2", SHAPE_2, "divisible by r=8"),
    ("miss", dict(r=2, variant="mini", mini_r=7), "0", SHAPE_0, "divisible by mini_r=7"),
    ("miss", dict(r=2, variant="mini", mini_r=8), "2", SHAPE_2, "out_features=12 divisible by mini_r=8"),
    ("miss", dict(r=2, variant="shuffled"), "0", SHAPE_0, "variant"),
    ("miss_expand", dict(shards=0), "0", SHAPE_0, "positive integer"),
    ("miss_expand", dict(shards=13), "2", SHAPE_2, "shards=13 must not exceed out_features=12"),
    ("prolora", dict(r=2, unshared_rank=3), "0", SHAPE_0, "unshared_rank"),
    ("prolora", dict(r=2, sharing_ratio=0), "0", SHAPE_0, "sharing_ratio"),
    ("mos", dict(r=2, shards_per_vector=5), "0", SHAPE_0, "shards_per_vector=5"),
    ("mos", dict(r=2, private_ratio=1.0), "0", SHAPE_0, "private_ratio"),
    ("mos", dict(r=2, rank_factor=0), "0", SHAPE_0, "rank_factor"),
]


@pytest.mark.parametrize("method,hyper,module,shape,rule", RULES)
def test_method_rule_violations(method, hyper, module, shape, rule):
    msg = _raises(method, ["0", "2"], **hyper)
    assert f"'{module}'" in msg and shape in msg and rule in msg


@pytest.mark.parametrize("method,targets,hyper", [
    ("miss", ["0", "2"], dict(r=8, variant="bat")),  # '0' is fine, '2' (12x24) is not divisible by 8
    ("lora", ["0", "2"], dict(r=13)),  # '0' is fine, '2' has only 12 outputs
    ("lora", ["0", "2"], dict(rank=2)),
    ("lora", ["q_proj"], dict(r=2)),
])
def test_failed_inject_leaves_the_model_unchanged(method, targets, hyper):
    model = _model()
    model[2].weight.requires_grad_(False)  # a non-default flag, so a reset to any single value shows
    modules = [type(m) for m in model.modules()]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterError):
        inject(model, method, targets, **hyper)
    assert [type(m) for m in model.modules()] == modules
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
