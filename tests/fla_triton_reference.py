"""Compare ``experiments.common.fla_cpu`` with flash-linear-attention's own Triton kernels on CPU.

    python tests/fla_triton_reference.py rwkv7 OUT.json

Run by ``tests/test_fla_cpu.py`` in a subprocess: Triton decides whether a kernel is compiled or
interpreted when fla defines it (at import), so ``TRITON_INTERPRET=1`` is set here before fla is
imported. Two things keep fla 0.6.0's kernels from running under Triton 3.9's interpreter; both are
handled here, in this process only, not by editing fla:

* an autotuner with several configs benchmarks them through a device driver, which the interpreter
  lacks: every autotuner of fla keeps its first config (the config changes speed, not results);
* some kernels call ``.to(tl.int64)`` on a ``for`` loop index, which the interpreter leaves a Python
  int: its source rewriter is extended to make loop indices ints with a no-op ``.to()``.

Each check runs once with fla's functions (``fla_cpu.uninstall()``, the interpreted kernels) and once
with the CPU path, on a tiny random model whose every parameter is perturbed, so that every gradient
is nonzero. OUT.json maps each compared tensor to ``[max |ours - fla|, max |fla|]``.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import warnings
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore", message="According to Bo")     # fla's notice on every RWKV layer

import torch  # noqa: E402
from triton.runtime import interpreter  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402

from experiments.common import fla_cpu  # noqa: E402   (imports fla: its kernels are now interpreted)
from eval.generate_tiny import random_rwkv  # noqa: E402


class _LoopIndex(int):
    def to(self, dtype, bitcast=False):
        return self                     # a Python int is already as wide as any Triton integer


class _LoopIndexRewriter(interpreter.ASTTransformer):
    def visit_For(self, node):
        node = self.generic_visit(node)
        if isinstance(node.target, ast.Name):
            name = node.target.id
            node.body.insert(0, ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=ast.Call(
                func=ast.Name(id="_LoopIndex", ctx=ast.Load()), args=[ast.Name(id=name, ctx=ast.Load())],
                keywords=[])))
        return node


def prepare_interpreter() -> None:
    interpreter._LoopIndex = _LoopIndex     # the rewriter copies the interpreter's globals into the kernel's
    interpreter.FunctionRewriter.ast_transformer = _LoopIndexRewriter()
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] != "fla":
            continue
        for obj in list(vars(module).values()):
            while obj is not None and not isinstance(obj, Autotuner):
                obj = getattr(obj, "fn", None)        # heuristics wrap autotuners
            if obj is not None:
                obj.configs = obj.configs[:1]


def both(fn):
    """``fn()`` with fla's kernels, then with the CPU path."""
    fla_cpu.uninstall()
    try:
        reference = fn()
    finally:
        fla_cpu.install()
    return reference, fn()


def compare(out: dict, name: str, reference: torch.Tensor, ours: torch.Tensor) -> None:
    if reference.shape != ours.shape:
        raise AssertionError(f"{name}: shape {tuple(ours.shape)} != fla's {tuple(reference.shape)}")
    out[name] = [(ours.float() - reference.float()).abs().max().item(), reference.float().abs().max().item()]


def tiny_model(version: str, vocab_size: int = 256):
    model = random_rwkv(version, vocab_size=vocab_size, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                        head_dim=32, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():        # zero-initialised projections would leave most gradients at 0
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def check_training_pass(out: dict, model, tokens: torch.Tensor, tag: str) -> None:
    def run():
        model.train()
        model.zero_grad()
        logits = model(tokens).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.roll(-1, 1).flatten()).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    (ref_logits, ref_grads), (logits, grads) = both(run)
    compare(out, f"{tag}/logits", ref_logits, logits)
    for name, grad in ref_grads.items():
        compare(out, f"{tag}/grad/{name}", grad, grads[name])


def check_decoding(out: dict, model, tokens: torch.Tensor) -> None:
    """Prompt with a cache, then two one-token steps: the recurrent and token-shift states carried over."""
    @torch.no_grad()
    def run():
        model.eval()
        step = model(tokens[:, :-2], use_cache=True)
        logits = [step.logits]
        for t in (-2, -1):
            step = model(tokens[:, t:t + 1 or None], past_key_values=step.past_key_values, use_cache=True)
            logits.append(step.logits)
        return torch.cat(logits, 1)

    compare(out, "decode/logits", *both(run))


def check_rwkv6_chunk_op(out: dict) -> None:
    """``chunk_rwkv6`` (sequences over 64 tokens) with initial and final state, forward and backward."""
    from fla.layers import rwkv6 as layer

    g = torch.Generator().manual_seed(2)
    B, T, H, K = 1, 80, 2, 32
    inputs = {"r": torch.randn(B, T, H, K, generator=g), "k": torch.randn(B, T, H, K, generator=g),
              "v": torch.randn(B, T, H, K, generator=g), "w": -torch.exp(torch.randn(B, T, H, K, generator=g) - 1),
              "u": torch.randn(H, K, generator=g), "initial_state": torch.randn(B, H, K, K, generator=g)}

    def run():
        xs = {n: x.clone().requires_grad_() for n, x in inputs.items()}
        o, state = layer.chunk_rwkv6(**xs, scale=1.0, output_final_state=True)
        (o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum().add(state.square().sum()).backward()
        return o.detach(), state.detach(), {n: x.grad for n, x in xs.items()}

    (ref_o, ref_state, ref_grads), (o, state, grads) = both(run)
    compare(out, "chunk_rwkv6/o", ref_o, o)
    compare(out, "chunk_rwkv6/final_state", ref_state, state)
    for name, grad in ref_grads.items():
        compare(out, f"chunk_rwkv6/grad/{name}", grad, grads[name])


def check_cross_entropy(out: dict) -> None:
    """The loss fla's models use (``fuse_cross_entropy``), with its options away from their defaults."""
    from fla.modules.fused_cross_entropy import cross_entropy_loss

    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(12, 200, generator=g)
    target = torch.randint(0, 200, (12,), generator=g)
    target[[2, 7]] = -100
    # soft-capping is left out: the interpreter has no libdevice tanh (tests/test_fla_cpu.py checks it)
    options = {"label_smoothing": 0.1, "logit_scale": 0.7, "lse_square_scale": 1e-3}

    def run():
        x = logits.clone().requires_grad_()
        if fla_cpu.installed():
            loss = fla_cpu.CPUFusedCrossEntropyLoss(reduction="none", **options)(x, target)
        else:
            loss, _ = cross_entropy_loss(x, target, **options)
        (loss * torch.arange(1.0, 13.0)).sum().backward()
        return loss.detach(), x.grad

    (ref_loss, ref_grad), (loss, grad) = both(run)
    compare(out, "cross_entropy/loss", ref_loss, loss)
    compare(out, "cross_entropy/grad", ref_grad, grad)


def main(version: str, out_path: str) -> None:
    prepare_interpreter()
    torch.manual_seed(0)
    model = tiny_model(version)
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(4))
    out: dict = {}
    check_training_pass(out, model, tokens, "train")
    check_decoding(out, model, tokens)
    if version == "rwkv6":
        check_rwkv6_chunk_op(out)
    else:
        check_cross_entropy(out)
    Path(out_path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
