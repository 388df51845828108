"""Our adapter layers against Hugging Face PEFT (the reference implementation, SPEC §1-§2).

For each method and a few small, mostly non-square shapes, the same two-layer model is adapted twice,
once with ``adapters.inject`` and once with ``peft.get_peft_model``. After checking the inits that are
deterministic (SVD, norms, seeded projections, zeros), every trainable tensor is set to the same random
value on both sides, and then the outputs, the gradients of the trainable tensors, the trainable counts
and the merged outputs must agree to float32 rounding.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from torch import nn

peft = pytest.importorskip("peft")

import adapters  # noqa: E402
from adapters.methods import pissa as pissa_module  # noqa: E402

TARGETS = ["a", "b"]
TOL = {"rtol": 1e-5, "atol": 1e-6}
# Merged and unmerged are different float32 arithmetic on O(1) values: one more order of atol.
MERGE_TOL = {"rtol": 1e-5, "atol": 1e-5}


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    hyper: dict[str, Any]
    config: Callable[[], Any]
    # our tensor name -> attribute path of the PEFT layer (indexed by the adapter name "default")
    names: dict[str, str]
    trainable: tuple[str, ...]
    deterministic_init: tuple[str, ...] = ()
    shapes: tuple[tuple[int, int, int], ...] = ((16, 40, 24), (96, 32, 8), (30, 30, 30))
    train_mode: bool = False  # dropout active: both sides must draw the same masks
    peft_count_matches: bool = True
    positive: tuple[str, ...] = field(default=())  # tensors randomised around their init, kept positive


LORA_NAMES = {"adapter_A": "lora_A.weight", "adapter_B": "lora_B.weight"}
MISS_NAMES = {"adapter_D": "miss_block"}


def _lora(**kw):
    return lambda: peft.LoraConfig(target_modules=TARGETS, **kw)


def _miss(**kw):
    return lambda: peft.MissConfig(target_modules=TARGETS, **kw)


CASES = [
    Case("lora", "lora", dict(r=4, alpha=8.0), _lora(r=4, lora_alpha=8), LORA_NAMES, ("adapter_A", "adapter_B")),
    Case("lora-dropout", "lora", dict(r=4, alpha=8.0, dropout=0.2), _lora(r=4, lora_alpha=8, lora_dropout=0.2),
         LORA_NAMES, ("adapter_A", "adapter_B"), train_mode=True),
    Case("lora-rslora", "lora", dict(r=4, alpha=8.0, rslora=True), _lora(r=4, lora_alpha=8, use_rslora=True),
         LORA_NAMES, ("adapter_A", "adapter_B")),
    Case("pissa", "pissa", dict(r=4, alpha=4.0), _lora(r=4, lora_alpha=4, init_lora_weights="pissa"),
         LORA_NAMES, ("adapter_A", "adapter_B"), deterministic_init=("adapter_A", "adapter_B")),
    Case("pissa-scaled", "pissa", dict(r=4, alpha=16.0), _lora(r=4, lora_alpha=16, init_lora_weights="pissa"),
         LORA_NAMES, ("adapter_A", "adapter_B"), deterministic_init=("adapter_A", "adapter_B")),
    Case("pissa-niter", "pissa", dict(r=4, alpha=4.0, niter=2),
         _lora(r=4, lora_alpha=4, init_lora_weights="pissa_niter_2"),
         LORA_NAMES, ("adapter_A", "adapter_B"), deterministic_init=("adapter_A", "adapter_B")),
    Case("dora", "dora", dict(r=4, alpha=8.0), _lora(r=4, lora_alpha=8, use_dora=True),
         {**LORA_NAMES, "adapter_magnitude": "lora_magnitude_vector.weight"},
         ("adapter_A", "adapter_B", "adapter_magnitude"), deterministic_init=("adapter_B", "adapter_magnitude"),
         positive=("adapter_magnitude",)),
    Case("dora-dropout", "dora", dict(r=4, alpha=8.0, dropout=0.2), _lora(r=4, lora_alpha=8, use_dora=True, lora_dropout=0.2),
         {**LORA_NAMES, "adapter_magnitude": "lora_magnitude_vector.weight"},
         ("adapter_A", "adapter_B", "adapter_magnitude"), deterministic_init=("adapter_B", "adapter_magnitude"),
         train_mode=True, positive=("adapter_magnitude",)),
    Case("lora_fa", "lora_fa", dict(r=4, alpha=8.0), _lora(r=4, lora_alpha=8), LORA_NAMES, ("adapter_B",),
         peft_count_matches=False),
    Case("vera", "vera", dict(r=16, projection_prng_key=7), lambda: peft.VeraConfig(target_modules=TARGETS, r=16, projection_prng_key=7),
         {"adapter_lambda_d": "vera_lambda_d", "adapter_lambda_b": "vera_lambda_b",
          "adapter_shared.adapter_vera_A": "vera_A", "adapter_shared.adapter_vera_B": "vera_B"},
         ("adapter_lambda_d", "adapter_lambda_b"),
         deterministic_init=("adapter_lambda_d", "adapter_lambda_b", "adapter_shared.adapter_vera_A", "adapter_shared.adapter_vera_B")),
    Case("vera-dropout", "vera", dict(r=8, dropout=0.2), lambda: peft.VeraConfig(target_modules=TARGETS, r=8, vera_dropout=0.2),
         {"adapter_lambda_d": "vera_lambda_d", "adapter_lambda_b": "vera_lambda_b"},
         ("adapter_lambda_d", "adapter_lambda_b"), deterministic_init=("adapter_lambda_d", "adapter_lambda_b"), train_mode=True),
    Case("adalora", "adalora", dict(r=4, alpha=8.0),
         lambda: peft.AdaLoraConfig(target_modules=TARGETS, init_r=4, lora_alpha=8, total_step=10),
         {"adapter_P": "lora_B", "adapter_Q": "lora_A", "adapter_E": "lora_E"},
         ("adapter_P", "adapter_E", "adapter_Q"), deterministic_init=("adapter_E",)),
    Case("loha", "loha", dict(r=4, alpha=6.0), lambda: peft.LoHaConfig(target_modules=TARGETS, r=4, alpha=6),
         {f"adapter_w{i}_{s}": f"hada_w{i}_{s}" for i in (1, 2) for s in "ab"},
         ("adapter_w1_a", "adapter_w1_b", "adapter_w2_a", "adapter_w2_b"), deterministic_init=("adapter_w2_b",)),
    Case("miss", "miss", dict(r=8), _miss(r=8), MISS_NAMES, ("adapter_D",), deterministic_init=("adapter_D",),
         shapes=((32, 24, 16), (30, 20, 12))),  # second shape: in_features 30 and 20 not divisible by r = 8
    # Second shape pads (30 % 4 != 0): we pad before dropout as PEFT does, so the masks are identical.
    Case("miss-dropout", "miss", dict(r=4, dropout=0.2), _miss(r=4, miss_dropout=0.2), MISS_NAMES, ("adapter_D",),
         shapes=((32, 24, 16), (30, 20, 12)), train_mode=True),
    Case("miss-bat", "miss", dict(r=4, variant="bat"), _miss(r=4, init_weights="bat"), MISS_NAMES, ("adapter_D",),
         deterministic_init=("adapter_D",), shapes=((16, 24, 8), (32, 32, 32))),
    Case("miss-mini", "miss", dict(r=4, variant="mini", mini_r=4), _miss(r=4, init_weights="mini", mini_r=4),
         MISS_NAMES, ("adapter_D",), deterministic_init=("adapter_D",), shapes=((16, 24, 8), (30, 20, 12))),
]

PARAMS = [pytest.param(c, s, id=f"{c.id}-{'x'.join(map(str, s))}") for c in CASES for s in c.shapes]


def _model(k: int, d: int, e: int) -> nn.Module:
    return nn.Sequential(OrderedDict(a=nn.Linear(k, d), act=nn.Tanh(), b=nn.Linear(d, e)))


def _peft_tensor(layer: nn.Module, path: str) -> torch.Tensor:
    """``"lora_A.weight"`` -> ``layer.lora_A["default"].weight``."""
    container, *rest = path.split(".")
    obj = getattr(layer, container)["default"]
    for attr in rest:
        obj = getattr(obj, attr)
    return obj


def _pairs(ours: nn.Module, theirs: nn.Module, case: Case):
    """(name, our tensor, PEFT tensor) for every mapped tensor of every target."""
    for target in TARGETS:
        mine = ours.get_submodule(target)
        ref = theirs.get_submodule(f"base_model.model.{target}")
        for our_name, peft_path in case.names.items():
            # getattr, not get_parameter: shared tensors are referenced by the layer, owned by the root
            yield f"{target}.{our_name}", functools.reduce(getattr, our_name.split("."), mine), _peft_tensor(ref, peft_path)


def _seeded_svd_lowrank(real):
    """``torch.svd_lowrank`` with a fixed seed, so ours and PEFT draw the same random subspace."""

    def wrapped(*args, **kwargs):
        torch.manual_seed(1234)
        return real(*args, **kwargs)

    return wrapped


def _forward(model: nn.Module, x: torch.Tensor, train_mode: bool) -> torch.Tensor:
    model.train(train_mode)
    torch.manual_seed(99)  # identical dropout masks on both sides
    return model(x)


@pytest.mark.parametrize("case,shape", PARAMS)
def test_matches_peft(case: Case, shape: tuple[int, int, int], monkeypatch):
    if case.method == "pissa":
        monkeypatch.setattr(pissa_module, "svd_lowrank", _seeded_svd_lowrank(pissa_module.svd_lowrank))
        monkeypatch.setattr(peft.tuners.lora.layer, "svd_lowrank", _seeded_svd_lowrank(peft.tuners.lora.layer.svd_lowrank))
    k, d, e = shape
    ours = _model(k, d, e)
    theirs = peft.get_peft_model(copy.deepcopy(ours), case.config())
    adapters.inject(ours, case.method, TARGETS, **case.hyper)

    # Init: the frozen weights (PiSSA's W_res) and every deterministic adapter tensor agree.
    for target in TARGETS:
        ref = theirs.get_submodule(f"base_model.model.{target}").get_base_layer()
        torch.testing.assert_close(ours.get_submodule(target).base_layer.weight, ref.weight, **TOL)
    pairs = list(_pairs(ours, theirs, case))
    for name, mine, ref in pairs:
        if name.split(".", 1)[1] in case.deterministic_init:
            torch.testing.assert_close(mine, ref, **TOL, msg=lambda m: f"init of {name}: {m}")

    # Trainable sets and counts.
    trainable = {n.split(".", 1)[1] for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == set(case.trainable)
    counted = sum(type(layer).trainable_count(layer.out_features, layer.in_features, **case.hyper)
                  for _, layer in adapters.adapter_layers(ours))
    assert adapters.trainable_parameters(ours) == counted
    if case.peft_count_matches:
        assert counted == theirs.get_nb_trainable_parameters()[0]

    # The same random, non-zero update on both sides.
    gen = torch.Generator().manual_seed(sum(shape))
    with torch.no_grad():
        for name, mine, ref in pairs:
            if not mine.requires_grad and name.split(".", 1)[1] in case.deterministic_init:
                continue  # frozen and already equal (VeRA's projections)
            noise = torch.randn(mine.shape, generator=gen)
            value = mine * (1 + 0.2 * noise.abs()) if name.split(".", 1)[1] in case.positive else 0.3 * noise
            mine.copy_(value)
            ref.copy_(value)

    x = torch.randn(3, 5, k, generator=gen)
    probe = torch.randn(3, 5, e, generator=gen)
    y_ours = _forward(ours, x, case.train_mode)
    y_peft = _forward(theirs, x, case.train_mode)
    torch.testing.assert_close(y_ours, y_peft, **TOL)
    assert not torch.allclose(y_ours, _model_without_adapter(ours, x)), "the update should be non-zero"

    (y_ours * probe).sum().backward()
    (y_peft * probe).sum().backward()
    for name, mine, ref in pairs:
        if mine.requires_grad:
            torch.testing.assert_close(mine.grad, ref.grad, **TOL, msg=lambda m: f"grad of {name}: {m}")
        else:
            assert mine.grad is None, f"{name} is frozen but received a gradient"

    # Merged: the same function as unmerged, on both sides.
    with torch.no_grad():
        y_eval = _forward(ours, x, False)
        adapters.merge(ours)
        theirs.merge_adapter()
        y_merged = _forward(ours, x, False)
        torch.testing.assert_close(y_merged, _forward(theirs, x, False), **TOL)
        torch.testing.assert_close(y_merged, y_eval, **MERGE_TOL)


def _model_without_adapter(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of the frozen weights alone, with every adapter's contribution left out."""
    with torch.no_grad():
        h = torch.tanh(model.a.base_layer(x))
        return model.b.base_layer(h)
