"""The CPU path of flash-linear-attention's RWKV models (``experiments/common/fla_cpu.py``).

The slow tests compare it with fla's own Triton kernels run by Triton's interpreter
(``tests/fla_triton_reference.py``, ~30-60 s each here); the others check the dispatch, the decoding
cache and the loss options the interpreter cannot run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("fla")

from eval.generate_tiny import random_rwkv  # noqa: E402
from experiments.common import fla_cpu  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:According to Bo")


def test_calls_on_cpu_tensors_take_the_cpu_version_and_others_fla_s():
    calls = []
    op = fla_cpu._on_cpu(lambda x: calls.append("fla"), lambda x: calls.append("cpu"))
    op(torch.zeros(1))
    op(torch.zeros(1, device="meta"))
    assert calls == ["cpu", "fla"]


def test_install_is_idempotent_and_uninstall_restores_fla_s_functions():
    import fla.layers.rwkv7 as layer
    import fla.models.modeling_utils as modeling
    from fla.modules.fused_cross_entropy import FusedCrossEntropyLoss
    from fla.ops.rwkv7 import chunk_rwkv7

    assert fla_cpu.installed() and layer.chunk_rwkv7.fla_cpu_version is fla_cpu.chunk_rwkv7
    fla_cpu.install()
    assert layer.chunk_rwkv7.__wrapped__ is chunk_rwkv7           # not wrapped twice
    fla_cpu.uninstall()
    try:
        assert layer.chunk_rwkv7 is chunk_rwkv7 and modeling.FusedCrossEntropyLoss is FusedCrossEntropyLoss
    finally:
        fla_cpu.install()
    assert modeling.FusedCrossEntropyLoss is fla_cpu.CPUFusedCrossEntropyLoss


@pytest.mark.parametrize("version", ["rwkv6", "rwkv7"])
def test_decoding_with_the_cache_matches_the_full_forward(version):
    """Token-shift and recurrent states carried between calls give the logits of one pass over everything."""
    model = random_rwkv(version, 64, hidden_size=64, intermediate_size=128, head_dim=32)
    tokens = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        full = model(tokens).logits
        step = model(tokens[:, :8], use_cache=True)
        logits = [step.logits]
        for t in range(8, 12):
            step = model(tokens[:, t:t + 1], past_key_values=step.past_key_values, use_cache=True)
            logits.append(step.logits)
    torch.testing.assert_close(torch.cat(logits, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("version", ["rwkv6", "rwkv7"])
def test_training_loss_is_the_mean_token_cross_entropy(version):
    model = random_rwkv(version, 64, hidden_size=64, intermediate_size=128, head_dim=32).train()
    tokens = torch.randint(0, 64, (2, 10))
    labels = tokens.clone()
    labels[0, :4] = -100
    out = model(tokens, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_cross_entropy_options_match_their_definition():
    logits = 3 * torch.randn(10, 50)
    target = torch.randint(0, 50, (10,))
    target[3] = -100
    opts = {"label_smoothing": 0.1, "logit_scale": 0.5, "lse_square_scale": 1e-2, "logit_softcapping": 4.0}
    z = 4.0 * torch.tanh(0.5 * logits / 4.0)
    kept = target != -100
    per_token = (F.cross_entropy(z, target, ignore_index=-100, reduction="none", label_smoothing=0.1)
                 + 1e-2 * torch.logsumexp(z, -1).square() * kept)
    for reduction, expected in [("none", per_token), ("sum", per_token.sum()), ("mean", per_token.sum() / kept.sum())]:
        loss = fla_cpu.CPUFusedCrossEntropyLoss(reduction=reduction, **opts)(logits, target)
        torch.testing.assert_close(loss, expected)


def test_packed_sequences_are_refused_with_a_clear_error():
    with pytest.raises(NotImplementedError, match="cu_seqlens"):
        fla_cpu.token_shift(torch.zeros(1, 4, 8), cu_seqlens=torch.tensor([0, 2, 4]))


@pytest.mark.slow
@pytest.mark.parametrize("version", ["rwkv6", "rwkv7"])
def test_matches_fla_s_triton_kernels_in_the_interpreter(version, tmp_path):
    """Logits, every parameter gradient, decoding with the cache, and (RWKV6) ``chunk_rwkv6`` over 80 tokens
    with states / (RWKV7) the fused cross entropy: within ~1e-5 of fla's kernels."""
    out = tmp_path / "diffs.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "fla_triton_reference.py"), version, str(out)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diffs = json.loads(out.read_text())
    grads = [k for k in diffs if k.startswith("train/grad/")]
    assert len(grads) > 40 and {"train/logits", "decode/logits"} <= set(diffs)
    assert any(k.startswith("chunk_rwkv6/" if version == "rwkv6" else "cross_entropy/") for k in diffs)
    assert all(diffs[k][1] > 0 for k in grads), "a zero reference gradient would compare nothing"
    too_far = {k: v for k, v in diffs.items() if v[0] > 1e-5 * (1 + v[1])}
    assert not too_far, too_far
