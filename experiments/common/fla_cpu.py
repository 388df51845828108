"""flash-linear-attention's RWKV6 and RWKV7 models on CPU: plain-PyTorch stand-ins for its Triton ops.

``fla`` (flash-linear-attention 0.6.0) builds its RWKV models on any device, but their layers call Triton
kernels, and Triton has no CPU driver ("0 active drivers"). Importing this module imports ``fla`` (which
registers the RWKV6/RWKV7 configs and models with transformers) and installs a CPU path: each fla function
below is replaced, in the module namespace where fla's code looks it up at call time (fla's layers import
these functions by name), by a dispatcher that runs our plain-PyTorch version when its first tensor
argument is on the CPU and fla's own function otherwise. The model classes are untouched, and on CUDA
every Triton kernel runs exactly as before. The SFT trainer and
the evaluation worker import it through ``SFTConfig.import_modules`` (``sft_experiment``).

What is replaced, and by what:

- ``token_shift`` (RWKV6/RWKV7 layers and feed-forwards): fla's ``token_shift_ref``, plus the decoding
  cache it lacks (the previous call's last token stands before the first one);
- ``chunk_rwkv6``, ``fused_recurrent_rwkv6``: fla's ``naive_recurrent_rwkv6`` (one loop over time);
- ``chunk_rwkv7``, ``fused_mul_recurrent_rwkv7``: fla's naive DPLR recurrence ``dplr_recurrence`` (RWKV7's
  state update is a diagonal-plus-low-rank delta rule; fla's own kernels for it are the DPLR ones);
- ``fused_addcmul_rwkv7``, ``fused_k_rwkv7``, ``gate_output_correction``: fla's ``torch_addcmul_rwkv7``,
  ``k_update_ref``, ``gate_output_correction_ref``;
- ``l2_norm`` (RWKV7 with ``fuse_norm``): ``x / sqrt(sum x^2 + eps)``, as fla's kernel;
- ``layer_norm``, ``group_norm`` (called by ``fla.modules.LayerNorm`` / ``GroupNorm``): fla's
  ``layer_norm_ref``, ``rms_norm_ref``, ``group_norm_ref``;
- ``swish_fwd/bwd``, ``sqrelu_fwd/bwd`` (the autograd functions behind ``ACT2FN``): closed forms (fla
  compiles sqrelu with ``torch.compile``, which needs a C++ toolchain on CPU);
- ``FusedCrossEntropyLoss`` (the loss ``fla.models`` builds): a subclass computing the same loss with
  ``torch.nn.functional`` for CPU tensors (fla's asserts a GPU device before anything else).

Packed sequences (``cu_seqlens``), context parallelism and reverse recurrences are not used by the
transformers path (padded batches) and raise ``NotImplementedError`` on CPU. The recurrences loop over
time in Python: fine for the cpu profile's tiny models (a 30-step run trained in 52-84 s, measured by
``nlg_rwkv6.py`` / ``nlg_rwkv7.py --profile cpu`` on the busy 2-core machine), far too slow for a real RWKV
checkpoint, which belongs on a GPU. ``tests/test_fla_cpu.py`` checks every replaced op, within a tiny
model (logits, every gradient, decoding with the cache) and alone (``chunk_rwkv6`` past 64 tokens, the
cross entropy), against fla's own kernels run by Triton's interpreter.
"""

from __future__ import annotations

import functools
import importlib
import math

import torch
import torch.nn.functional as F

import fla  # noqa: F401  (registers the RWKV6/RWKV7 configs and models with transformers)
from fla.modules.fused_cross_entropy import FusedCrossEntropyLoss
from fla.modules.norm.layernorm import group_norm_ref, layer_norm_ref, rms_norm_ref
from fla.modules.token_shift import token_shift_ref
from fla.ops.generalized_delta_rule.dplr.naive import dplr_recurrence
from fla.ops.rwkv6.recurrent_naive import naive_recurrent_rwkv6
from fla.ops.rwkv7.fused_addcmul import torch_addcmul_rwkv7
from fla.ops.rwkv7.fused_k_update import k_update_ref
from fla.ops.rwkv7.gate_output_correction import gate_output_correction_ref


def _sequences_only(cu_seqlens=None, cp_context=None, reverse=False) -> None:
    if cu_seqlens is not None or cp_context is not None or reverse:
        raise NotImplementedError("fla on CPU (experiments.common.fla_cpu): packed sequences (cu_seqlens), context "
                                  "parallelism and reverse recurrences have no CPU implementation; pad the batch")


# --------------------------------------------------------------------------------------------- token shift
def token_shift(x, cu_seqlens=None, cache=None, output_cache=False, chunk_indices=None):
    """``delta[t] = x[t-1] - x[t]``, with ``x[-1]`` = ``cache`` (the previous call's last token) or 0."""
    _sequences_only(cu_seqlens)
    delta = token_shift_ref(x)
    if cache is not None:
        delta = torch.cat([delta[:, :1] + cache[:, None], delta[:, 1:]], 1)
    return (delta, x[:, -1]) if output_cache else delta


# --------------------------------------------------------------------------------------------- recurrences
def _head_first(*xs):
    return [x.transpose(1, 2) for x in xs]     # fla's kernels take [B, T, H, D], its naive references [B, H, T, D]


def rwkv6(r, k, v, w, u, scale=None, initial_state=None, output_final_state=False, reverse=False,
          cu_seqlens=None, **_kernel_options):
    """RWKV6: ``S_t = diag(exp(w_t)) S_{t-1} + k_t v_t^T``, ``o_t = (S_{t-1} + diag(u) k_t v_t^T)^T (scale r_t)``."""
    _sequences_only(cu_seqlens, reverse=reverse)
    o, state = naive_recurrent_rwkv6(*_head_first(r, k, v, w), u, scale=scale, initial_state=initial_state,
                                     output_final_state=output_final_state)
    return o.transpose(1, 2), state


def _dplr(q, k, v, a, b, gk, scale, initial_state, output_final_state):
    """``S_t = (diag(exp(gk_t)) + b_t a_t^T) S_{t-1} + k_t v_t^T``, ``o_t = S_t^T (scale q_t)``."""
    head_dim = q.shape[-1]
    scale = head_dim ** -0.5 if scale is None else scale
    # dplr_recurrence always scales q by head_dim**-0.5; RWKV7 passes its own scale (1.0)
    q = q * (scale * math.sqrt(head_dim))
    o, state = dplr_recurrence(*_head_first(q, k, v, a.float(), b, gk), initial_state=initial_state,
                               output_final_state=output_final_state)
    return o.transpose(1, 2), state


def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, cu_seqlens=None,
                cp_context=None, **_kernel_options):
    """RWKV7 as fla's ``chunk_rwkv7`` (its DPLR delta rule with ``w`` the log decay); the chunking is a GPU detail."""
    _sequences_only(cu_seqlens, cp_context)
    return _dplr(r, k, v, a, b, w, scale, initial_state, output_final_state)


def fused_mul_recurrent_rwkv7(r, w, k, v, kk, a, scale=1.0, initial_state=None, output_final_state=False,
                              reverse=False, cu_seqlens=None):
    """fla's decoding form of RWKV7: the DPLR rule with ``a = -kk``, ``b = kk * a``."""
    _sequences_only(cu_seqlens, reverse=reverse)
    return _dplr(r, k, v, -kk, kk * a, w, scale, initial_state, output_final_state)


# --------------------------------------------------------------------------------------------- norms, activations
def l2_norm(x, eps=1e-6, output_dtype=None):
    y = x.float() * torch.rsqrt(x.float().square().sum(-1, keepdim=True) + eps)
    return y.to(output_dtype or x.dtype)


def layer_norm(x, weight, bias, residual=None, eps=1e-5, prenorm=False, residual_in_fp32=False, is_rms_norm=False):
    ref = rms_norm_ref if is_rms_norm else layer_norm_ref
    return ref(x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, upcast=residual_in_fp32)


def group_norm(x, weight, bias, residual=None, eps=1e-5, prenorm=False, residual_in_fp32=False, is_rms_norm=False,
               num_groups=1):
    return group_norm_ref(x, weight, bias, num_groups, residual=residual, eps=eps, is_rms_norm=is_rms_norm,
                          prenorm=prenorm, upcast=residual_in_fp32)


def swish_fwd(x, output_contiguous=False):
    return (x.float() * torch.sigmoid(x.float())).to(x.dtype)


def swish_bwd(x, dy, output_contiguous=False):
    s = torch.sigmoid(x.float())
    return (dy.float() * s * (1 + x.float() * (1 - s))).to(x.dtype)


def sqrelu_fwd(x):
    return F.relu(x.float()).square().to(x.dtype)


def sqrelu_bwd(g, x):
    return (2.0 * g * F.relu(x.float())).to(x.dtype)


# --------------------------------------------------------------------------------------------- loss
class CPUFusedCrossEntropyLoss(FusedCrossEntropyLoss):
    """fla's fused cross entropy, computed with ``torch.nn.functional`` for CPU tensors (fla's asserts a GPU).

    Per token, as fla's kernel: ``z = softcap(logit_scale * logits)``, loss = label-smoothed cross entropy of
    ``z`` plus ``lse_square_scale * logsumexp(z)^2``; ignored targets add 0 and do not count in the mean.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor):
        if input.device.type != "cpu" or self.process_group is not None:
            return super().forward(input, target)
        z = input.float() * self.logit_scale
        if self.logit_softcapping is not None:
            z = self.logit_softcapping * torch.tanh(z / self.logit_softcapping)
        kept = target != self.ignore_index
        loss = F.cross_entropy(z, target, ignore_index=self.ignore_index, reduction="none",
                               label_smoothing=self.label_smoothing)
        z_loss = self.lse_square_scale * torch.logsumexp(z, -1).square() * kept
        loss = loss + z_loss
        if self.reduction != "none":
            loss, z_loss = loss.sum(), z_loss.sum()
            if self.reduction == "mean":
                loss, z_loss = loss / kept.sum(), z_loss / kept.sum()
        return (loss, z_loss.detach()) if self.return_z_loss else loss


# --------------------------------------------------------------------------------------------- install
# (module, name) of every fla function the RWKV models call through -> its CPU implementation
SITES: dict[tuple[str, str], object] = {
    **{(m, "token_shift"): token_shift for m in ("fla.layers.rwkv6", "fla.layers.rwkv7",
                                                 "fla.models.rwkv6.modeling_rwkv6", "fla.models.rwkv7.modeling_rwkv7")},
    ("fla.layers.rwkv6", "chunk_rwkv6"): rwkv6,
    ("fla.layers.rwkv6", "fused_recurrent_rwkv6"): rwkv6,
    ("fla.layers.rwkv7", "chunk_rwkv7"): chunk_rwkv7,
    ("fla.layers.rwkv7", "fused_mul_recurrent_rwkv7"): fused_mul_recurrent_rwkv7,
    ("fla.layers.rwkv7", "fused_addcmul_rwkv7"): torch_addcmul_rwkv7,
    ("fla.layers.rwkv7", "fused_k_rwkv7"): k_update_ref,
    ("fla.layers.rwkv7", "gate_output_correction"): gate_output_correction_ref,
    ("fla.layers.rwkv7", "l2_norm"): l2_norm,
    ("fla.modules.norm.layernorm", "layer_norm"): layer_norm,
    ("fla.modules.norm.layernorm", "group_norm"): group_norm,
    ("fla.modules.activations.ops", "swish_fwd"): swish_fwd,
    ("fla.modules.activations.ops", "swish_bwd"): swish_bwd,
    ("fla.modules.activations.ops", "sqrelu_fwd"): sqrelu_fwd,
    ("fla.modules.activations.ops", "sqrelu_bwd"): sqrelu_bwd,
}
LOSS_SITE = ("fla.models.modeling_utils", "FusedCrossEntropyLoss")


def _first_tensor(args, kwargs) -> torch.Tensor:
    return next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))


def _on_cpu(original, cpu_version):
    """``original`` with calls on CPU tensors routed to ``cpu_version``."""
    @functools.wraps(original)
    def op(*args, **kwargs):
        impl = cpu_version if _first_tensor(args, kwargs).device.type == "cpu" else original
        return impl(*args, **kwargs)
    op.fla_cpu_version = cpu_version
    return op


def installed() -> bool:
    module, name = LOSS_SITE
    return getattr(importlib.import_module(module), name) is CPUFusedCrossEntropyLoss


def install() -> None:
    """Route fla's RWKV ops to the CPU versions for CPU tensors (idempotent)."""
    if installed():
        return
    for (module, name), cpu_version in SITES.items():
        mod = importlib.import_module(module)
        setattr(mod, name, _on_cpu(getattr(mod, name), cpu_version))
    setattr(importlib.import_module(LOSS_SITE[0]), LOSS_SITE[1], CPUFusedCrossEntropyLoss)


def uninstall() -> None:
    """Restore fla's own functions (the tests compare against them under Triton's interpreter)."""
    if not installed():
        return
    for module, name in SITES:
        mod = importlib.import_module(module)
        setattr(mod, name, getattr(mod, name).__wrapped__)
    setattr(importlib.import_module(LOSS_SITE[0]), LOSS_SITE[1], FusedCrossEntropyLoss)


install()
