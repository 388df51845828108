"""Will it fit? The per-GPU memory of one training run, computed before launch (``--dry-run``).

Nothing is downloaded and nothing is allocated. The run's model is built on the ``meta`` device from its
stored dimensions (``experiments/configs/model_presets/``, or a local directory's ``config.json``), the
run's method is applied to it there as the trainer applies it, and the memory follows from that model:
every parameter's count and dtype, which ones train, and what each adapted module keeps for backward.

Notation: Ψ all parameters, Ψt the trainable ones, N the world size (nodes x GPUs per node); B the
per-device batch, S the sequence length (``max_length``: the collator pads to the longest sample, so a
batch of long samples reaches it), T = B·S; h hidden size, I intermediate size, L layers, n_q and n_kv
attention and key-value heads of size d, V the vocabulary; p bytes per activation (2 in bf16, 4 in fp32).

Model states, per GPU
---------------------
Under DeepSpeed, the engine casts the model to 16 bit (bf16 on GPU) and its ZeRO optimizer keeps an fp32
master copy and the two fp32 Adam moments of every trainable parameter, partitioned over the N ranks
from stage 1 on; the 16-bit gradients are partitioned from stage 2 on, the 16-bit weights at stage 3.
At the optimizer step each rank also turns its gradient partition into fp32 (freed after the step, when
the activations are already gone, so the peak takes the larger of the two):

    ==============================  =======  =======  =======  =======
    bytes                           stage 0  stage 1  stage 2  stage 3
    ==============================  =======  =======  =======  =======
    weights (16 bit)                2Ψ       2Ψ       2Ψ       2Ψ/N
    gradients (16 bit)              2Ψt      2Ψt      2Ψt/N    2Ψt/N
    fp32 gradients, at the step     4Ψt      4Ψt/N    4Ψt/N    4Ψt/N
    optimizer: fp32 master + Adam   12Ψt     12Ψt/N   12Ψt/N   12Ψt/N
    ==============================  =======  =======  =======  =======

(in fp32, on CPU, "16 bit" is 4 bytes; DeepSpeed keeps its fp32 copy all the same). Full fine-tuning at
stage 2 is 2Ψ + 18Ψ/N, which is DeepSpeed's ``estimate_zero2_model_states_mem_needs`` exactly. At stage 3
DeepSpeed's estimator gives 18Ψ/N + 4·(largest layer): its comment counts 2 (16-bit gradients) + 4 (fp32
gradients) + 4 (fp32 weights) + 8 (moments) bytes and leaves out the 2Ψ/N of 16-bit weights each rank
holds as its partition, which is counted here (``tests/test_memory_plan.py`` shows both).
Without DeepSpeed (``launcher=python``, or ``deepspeed=None``): the weights as loaded (the trainer loads
the model in bf16 on GPU; PEFT keeps adapter weights in fp32), gradients and AdamW's two moments in each
trainable parameter's dtype, and no master copy. A run with no optimizer (``gradient_norm.py``) has
neither moments nor master weights.

Buffers: at stage 2 with ``contiguous_gradients`` a reduce bucket of ``reduce_bucket_size`` 16-bit
elements (two with ``overlap_comm``; 1 GB with ``configs/zero2.json``); at stage 3 the reduce and
prefetch buckets (``"auto"``: h² and 0.9·h², as the HF integration fills them) and the largest module
gathered in 16 bit, with its full 16-bit gradient when it trains (DeepSpeed's 4·largest-layer term).

Activations, per GPU
--------------------
What autograd keeps from the forward pass for the backward pass, for the Llama, Mistral and Qwen3 decoders
as transformers 5 runs them (SDPA attention, a right-padded batch), per decoder layer:

    =================  ===================  ============================================================
    term               bytes                why
    =================  ===================  ============================================================
    RMSNorm, twice     4Th + 4T             its fp32 input and 1/rms (the norm computes in fp32)
                       + pTh                the normalised input, when the norm's weight trains
    attention input    pTh                  when q, k or v keeps its input (full FT, LoRA, DoRA; not MiSS,
                                            which sums its input into r values before the matmul)
    q/k norms (Qwen3)  4T(n_q+n_kv)(d+1)    as RMSNorm, over each head (+ pT(n_q+n_kv)d when they train)
    SDPA               4pT·n_q·d            q, k, v and the output; k and v repeated to n_q heads, since
                                            transformers repeats them itself when a padding mask is passed
                       4B·n_q·S + pB·S²     the log-sum-exp, and the padding mask as an additive bias
    MLP input          pTh                  when gate or up keeps its input
    SwiGLU             3pTI                 SiLU input and output, up projection output
    MLP product        pTI                  when down keeps its input
    adapters           Σ a_m                what each adapted projection keeps besides its input: measured
                                            by running that module on the meta device (LoRA and PiSSA
                                            T·r·p, DoRA T·r·p + 2T·d_out·p, MiSS T·r·p)
    =================  ===================  ============================================================

The attention output doubles as o_proj's input. Outside the layers: the final norm (4Th + 4T), the
log-softmax of the fp32 logits (4TV) with the labels (8T), RoPE's cos and sin (2S·d·p); full fine-tuning
adds the token ids (8T), the final norm's normalised input and lm_head's input (2pTh). When the
embeddings are frozen and checkpointing is off, no gradient reaches the first layer's input: its norm
keeps nothing, and its q, k, v keep what they keep for an input without gradient (also measured on meta).
With gradient checkpointing (transformers' non-reentrant checkpoint around every decoder layer), a layer
keeps only its input (pTh), and the layers share the boolean mask (B·S² bytes) and position ids (8S).
Working memory on top of the saved activations: at the start of backward the fp32 gradients of the
log-softmax's output and input (8TV); under checkpointing, later, one recomputed layer's activations, if
those are larger.

How it was checked: ``tests/test_memory_plan.py`` runs tiny real Llama (grouped-query and multi-head
attention) and Qwen3 models on CPU in fp32 (p = 4), for full fine-tuning and for adapters, and compares the
formula with the bytes autograd actually saved (``torch.autograd.graph.saved_tensors_hooks``, each
storage counted once, parameters and buffers excluded) and, with checkpointing, with the bytes still
alive after the forward pass: equal to the byte (the test allows 1%). On GPU the memory-efficient SDPA
kernel keeps the same tensors as the CPU kernel measured here (q, k, v, output, log-sum-exp, bias): that
part rests on the kernels' signatures, not on a GPU measurement.
Not counted: the CUDA context and the allocator's fragmentation (leave ~1-2 GiB of ``--gpu-mem`` for them).
RWKV (flash-linear-attention) runs get model states but no activation term: its Triton kernels' saved
tensors are not modelled, so their fit is only checked for the model states.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GIB = 2 ** 30
ATTENTION_INPUT = ("q_proj", "k_proj", "v_proj")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")


# --------------------------------------------------------------------------- the model on meta
def hf_config_for(model: str):
    """The HF config of ``model`` without downloading: ``tiny`` (the cpu profile's model), a hub id with
    stored dimensions, or a local directory holding ``config.json``."""
    from .model_presets import hf_config, stored_config_name

    if model == "tiny":
        import transformers

        from .tiny_model import TinyLlamaSpec

        spec = TinyLlamaSpec()
        return transformers.LlamaConfig(
            vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
            num_key_value_heads=spec.num_key_value_heads, head_dim=spec.head_dim,
            max_position_embeddings=spec.max_position_embeddings, tie_word_embeddings=False)
    name = stored_config_name(model)
    if name is not None:
        return hf_config(name)
    if (Path(model) / "config.json").is_file():
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model, local_files_only=True)
    raise ValueError(f"model {model!r}: no stored dimensions (experiments/configs/model_presets/) and not a local "
                     "directory with a config.json; pass --set model=<local directory> to plan it")


@dataclass(frozen=True)
class MethodSpec:
    """The run's method, as ``sft_trainer.apply_method`` takes it."""

    method: str
    r: int | None = None
    alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    method_kwargs: dict[str, Any] = field(default_factory=dict)


def meta_model_with_method(hf_config, spec: MethodSpec, dtype, cast_all: bool):
    """The model on ``meta`` in ``dtype`` with the method applied; ``cast_all`` casts every parameter to
    ``dtype`` afterwards, as the DeepSpeed engine does with PEFT's fp32 adapter weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from .sft_trainer import SFTConfig, apply_method

    # PiSSA has LoRA's shapes; its SVD initialisation cannot run on meta tensors.
    method = "lora" if spec.method == "pissa" else spec.method
    cfg = SFTConfig(model="-", method=method, output_dir="-", data_source="-", target_modules=spec.target_modules,
                    r=spec.r, alpha=spec.alpha, method_kwargs=dict(spec.method_kwargs))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
        model = apply_method(model, cfg)
    if cast_all:
        model.to(dtype)
    return model


# --------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ParamStats:
    total: int
    trainable: int
    weight_bytes: int                # every parameter at its dtype
    trainable_bytes: int             # the trainable ones at theirs
    largest_module: int              # parameters held directly by the largest module (ZeRO-3 gathers it)
    largest_module_trains: bool


def param_stats(model) -> ParamStats:
    params = list(model.parameters())          # tied weights appear once
    trainable = [p for p in params if p.requires_grad]
    largest, trains = 0, False
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        n = sum(p.numel() for p in own)
        if n > largest:
            largest, trains = n, any(p.requires_grad for p in own)
    return ParamStats(
        total=sum(p.numel() for p in params), trainable=sum(p.numel() for p in trainable),
        weight_bytes=sum(p.numel() * p.element_size() for p in params),
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        largest_module=largest, largest_module_trains=trains)


# --------------------------------------------------------------------------- model states
@dataclass(frozen=True)
class ZeroSettings:
    stage: int                                   # 0-3
    reduce_bucket_size: int = 0                  # elements
    prefetch_bucket_size: int = 0                # elements (stage 3)
    overlap_comm: bool = False
    contiguous_gradients: bool = True


def zero_settings(ds_config: dict | None, hidden_size: int) -> ZeroSettings | None:
    """What of a DeepSpeed config decides memory; ``"auto"`` as the HF integration fills it in."""
    if ds_config is None:
        return None
    z = ds_config.get("zero_optimization", {})
    stage = int(z.get("stage", 0))
    if z.get("offload_optimizer") or z.get("offload_param"):
        raise ValueError("deepspeed: CPU/NVMe offload is not modelled by the memory planner")

    def number(key: str, auto: float, default: float) -> int:
        value = z.get(key, default)
        return int(auto if value == "auto" else value)

    return ZeroSettings(
        stage=stage,
        reduce_bucket_size=number("reduce_bucket_size", hidden_size * hidden_size, 5e8),
        prefetch_bucket_size=number("stage3_prefetch_bucket_size", 0.9 * hidden_size * hidden_size, 5e7),
        overlap_comm=bool(z.get("overlap_comm", stage == 3)),
        contiguous_gradients=bool(z.get("contiguous_gradients", True)))


@dataclass(frozen=True)
class ModelStates:
    weights: int
    gradients: int
    gradients_fp32_at_step: int
    optimizer: int
    reduce_buckets: int = 0
    prefetch_bucket: int = 0
    gathered_largest_module: int = 0

    @property
    def buffers(self) -> int:
        return self.reduce_buckets + self.prefetch_bucket + self.gathered_largest_module

    @property
    def model_states(self) -> int:
        """Weights, gradients (with the step's fp32 copy) and optimizer: what DeepSpeed's estimators count."""
        return self.weights + self.gradients + self.gradients_fp32_at_step + self.optimizer


def model_states(stats: ParamStats, zero: ZeroSettings | None, world_size: int, optimizer: bool = True) -> ModelStates:
    """Per-GPU bytes of weights, gradients, optimizer state and ZeRO buffers (see the module docstring)."""
    n = world_size
    if zero is None:   # plain PyTorch: AdamW's moments in the parameter's dtype, no master copy
        return ModelStates(weights=stats.weight_bytes, gradients=stats.trainable_bytes, gradients_fp32_at_step=0,
                           optimizer=2 * stats.trainable_bytes if optimizer else 0)
    # DeepSpeed has cast every parameter to one 16-bit (or, on CPU, 32-bit) dtype: bytes per element
    low = stats.weight_bytes // stats.total
    s = zero.stage
    pt = stats.trainable
    split = (lambda x: -(-x // n)) if s >= 1 else (lambda x: x)
    weights = stats.weight_bytes if s < 3 else -(-stats.weight_bytes // n)
    grads = low * pt if s < 2 else -(-low * pt // n)
    states = ModelStates(weights=weights, gradients=grads,
                         gradients_fp32_at_step=split(4 * pt) if optimizer else 0,
                         optimizer=split(12 * pt) if optimizer else 0)
    buckets = (2 if zero.overlap_comm else 1) * zero.reduce_bucket_size * low
    if s == 2 and zero.contiguous_gradients:
        return ModelStates(**{**asdict(states), "reduce_buckets": buckets})
    if s == 3:
        gathered = low * stats.largest_module * (2 if stats.largest_module_trains else 1)
        return ModelStates(**{**asdict(states), "reduce_buckets": zero.reduce_bucket_size * low,
                              "prefetch_bucket": zero.prefetch_bucket_size * low, "gathered_largest_module": gathered})
    return states


# --------------------------------------------------------------------------- activations
@dataclass(frozen=True)
class DecoderDims:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    qk_norm: bool


@dataclass(frozen=True)
class ModuleSaves:
    """What one projection module keeps for backward, for a (B, S, in_features) input."""

    saves_input: bool
    extra_bytes: int          # everything else it keeps (adapter intermediates), parameters excluded


@dataclass(frozen=True)
class Activations:
    saved: int                # kept from the forward pass for backward
    working: int              # on top, during backward (loss gradients; one recomputed layer)
    terms: dict[str, int]     # the saved bytes by term, for inspection

    @property
    def peak(self) -> int:
        return self.saved + self.working


def decoder_dims(model) -> DecoderDims | None:
    """The dimensions the activation formula needs; None for an architecture it does not model."""
    cfg = model.config
    if getattr(cfg, "model_type", None) not in LLAMA_LIKE:
        return None
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    qk_norm = any(name.endswith("self_attn.q_norm") for name, _ in model.named_modules())
    return DecoderDims(layers=cfg.num_hidden_layers, hidden=cfg.hidden_size, intermediate=cfg.intermediate_size,
                       heads=heads, kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
                       head_dim=head_dim, vocab=cfg.vocab_size, qk_norm=qk_norm)


def _storage_key(t) -> int:
    return t.untyped_storage()._cdata       # one key per storage, views included; works on meta tensors


class _Saved:
    """What the pack hook hands autograd instead of the tensor: it lives exactly as long as the graph
    node that saved it, so a weak reference to it says whether the tensor is still kept."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor) -> None:
        self.tensor = tensor


def saved_tensor_bytes(fn: Callable[[], Any], exclude: Sequence = ()) -> tuple[Any, dict[int, int]]:
    """Run ``fn``; return its result and ``{storage: bytes}`` of the tensors autograd still keeps for
    backward when ``fn`` returns (a graph built and dropped inside ``fn`` keeps nothing), each storage
    once, the storages of ``exclude`` (parameters) left out."""
    import weakref

    import torch

    skip = {_storage_key(t) for t in exclude}
    held: list[tuple[weakref.ref, int, int]] = []

    def pack(t):
        box = _Saved(t)
        held.append((weakref.ref(box), _storage_key(t), t.untyped_storage().nbytes()))
        return box

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        out = fn()
    return out, {key: n for ref, key, n in held if ref() is not None and key not in skip}


def probe_module(module, batch: int, seq: int, dtype, input_requires_grad: bool = True,
                 model_state: Sequence = ()) -> ModuleSaves:
    """Run one projection module on a meta input and see what it keeps for backward. ``model_state``: the
    model's parameters and buffers, which are not activations even when saved (VeRA's projections, shared
    by every layer and held by one of them, are buffers of the model, not of each module)."""
    import torch

    in_features = _in_features(module)
    x = torch.empty(batch, seq, in_features, device="meta", dtype=dtype, requires_grad=input_requires_grad)
    out, saved = saved_tensor_bytes(lambda: module(x),
                                    exclude=[*module.parameters(), *module.buffers(), *model_state])
    key = _storage_key(x)
    return ModuleSaves(saves_input=key in saved, extra_bytes=sum(v for k, v in saved.items() if k != key))


def _in_features(module) -> int:
    from torch import nn

    for m in module.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    raise ValueError(f"{type(module).__name__} holds no nn.Linear to take the input size from")


def projection_saves(model, batch: int, seq: int, dtype, names: Sequence[str] = PROJECTIONS,
                     input_requires_grad: bool = True) -> dict[str, ModuleSaves]:
    """``probe_module`` for the projections ``names`` of one decoder layer (all layers are alike)."""
    layer = min(1, model.config.num_hidden_layers - 1)
    found = {}
    for name, module in model.named_modules():
        parts = name.split(".")
        if len(parts) >= 3 and parts[-1] in names and parts[-3] == str(layer) and "layers" in parts:
            found.setdefault(parts[-1], module)
    missing = sorted(set(names) - set(found))
    if missing:
        raise ValueError(f"decoder layer {layer} has no module(s) {missing}")
    state = [*model.parameters(), *model.buffers()]
    return {name: probe_module(m, batch, seq, dtype, input_requires_grad, state) for name, m in found.items()}


def activation_bytes(dims: DecoderDims, batch: int, seq: int, act_bytes: int, saves: dict[str, ModuleSaves],
                     norms_train: bool, embeddings_train: bool, lm_head_trains: bool, checkpointing: bool,
                     first_layer_saves: dict[str, ModuleSaves] | None = None) -> Activations:
    """The per-GPU activation memory of one micro-batch, by the formula of the module docstring.

    ``saves``: what each projection keeps when its input requires grad; ``first_layer_saves``: what q, k
    and v keep in the first layer, whose input does not require grad when the embeddings are frozen
    (needed only then, and without checkpointing)."""
    p, b, s = act_bytes, batch, seq
    t = b * s
    h, i, d, v = dims.hidden, dims.intermediate, dims.head_dim, dims.vocab
    nq, nkv = dims.heads, dims.kv_heads
    kv = nq if nkv < nq else nkv      # k and v repeated to the query heads (padding mask passed)

    def rms_norm(width: int, rows: int) -> int:
        return 4 * rows * width + 4 * rows + (p * rows * width if norms_train else 0)

    layer = {
        "norms": 2 * rms_norm(h, t),
        "attention_input": p * t * h if any(saves[m].saves_input for m in ATTENTION_INPUT) else 0,
        "qk_norms": rms_norm(d, t * nq) + rms_norm(d, t * nkv) if dims.qk_norm else 0,
        "sdpa": p * t * d * (2 * nq + 2 * kv) + 4 * b * nq * s + p * b * s * s,
        "mlp_input": p * t * h if saves["gate_proj"].saves_input or saves["up_proj"].saves_input else 0,
        "swiglu": 3 * p * t * i,
        "mlp_product": p * t * i if saves["down_proj"].saves_input else 0,
        "adapters": sum(m.extra_bytes for m in saves.values()),
    }
    per_layer = sum(layer.values())
    outside = {
        "final_norm": rms_norm(h, t),
        "lm_head_input": p * t * h if lm_head_trains else 0,
        "loss": 4 * t * v + 8 * t + 4,
        "rope": 2 * s * d * p,
        "token_ids": 8 * t if embeddings_train else 0,
    }
    if checkpointing:
        terms = {"layer_inputs": dims.layers * p * t * h, "mask": b * s * s, "position_ids": 8 * s, **outside}
        working = max(8 * t * v, per_layer)     # the loss's backward comes before any recomputation
    else:
        terms = {**{f"layers.{k}": dims.layers * x for k, x in layer.items()}, **outside}
        if not embeddings_train:
            # no gradient reaches the first layer's input: its norm keeps nothing, and q, k, v keep
            # what a module keeps for a constant input
            def attention_input(m: dict[str, ModuleSaves]) -> int:
                return (p * t * h if any(m[n].saves_input for n in ATTENTION_INPUT) else 0) + \
                    sum(m[n].extra_bytes for n in ATTENTION_INPUT)

            terms["first_layer"] = attention_input(first_layer_saves) - attention_input(saves) - rms_norm(h, t)
        working = 8 * t * v
    return Activations(saved=sum(terms.values()), working=working, terms=terms)


def activations_for(model, dims: DecoderDims, batch: int, seq: int, dtype, checkpointing: bool) -> Activations:
    """``activation_bytes`` for ``model`` (on meta, its method applied): what trains and what each
    projection keeps are read off the model itself."""
    norm = next(m for n, m in model.named_modules() if n.endswith("layers.0.input_layernorm"))
    embeddings_train = model.get_input_embeddings().weight.requires_grad
    first = None if embeddings_train or checkpointing else \
        projection_saves(model, batch, seq, dtype, ATTENTION_INPUT, input_requires_grad=False)
    return activation_bytes(
        dims, batch, seq, dtype.itemsize, projection_saves(model, batch, seq, dtype),
        norms_train=norm.weight.requires_grad, embeddings_train=embeddings_train,
        lm_head_trains=model.get_output_embeddings().weight.requires_grad,
        checkpointing=checkpointing, first_layer_saves=first)


# --------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class Layout:
    nodes: int
    gpus_per_node: int
    assumed: str | None = None        # why the layout was assumed rather than known (no GPU visible here)

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class RunPlan:
    """Everything the planner needs to know about one run."""

    model: str                        # "tiny", a hub id with stored dimensions, or a local directory
    method: MethodSpec
    dtype: str                        # bfloat16 | float16 | float32: the dtype the trainer loads the model in
    deepspeed: dict | None            # the DeepSpeed config (None: plain PyTorch)
    layout: Layout
    per_device_batch: int
    seq_len: int
    gradient_checkpointing: bool
    optimizer: bool = True            # False for a forward/backward-only run (gradient norms)


@dataclass
class MemoryEstimate:
    params: ParamStats
    states: ModelStates
    activations: Activations | None   # None: not modelled for this architecture
    note: str = ""

    @property
    def peak(self) -> int:
        resident = self.states.weights + self.states.gradients + self.states.optimizer + self.states.buffers
        acts = self.activations.peak if self.activations else 0
        return resident + max(acts, self.states.gradients_fp32_at_step)


_BUILT: dict[str, tuple] = {}


def _built(model: str, spec: MethodSpec, dtype, cast_all: bool):
    """``(hf_config, meta model)``, built once per model, method and dtype (a plan's seeds and tasks share it)."""
    key = json.dumps([model, asdict(spec), str(dtype), cast_all], sort_keys=True, default=str)
    if key not in _BUILT:
        hf_config = hf_config_for(model)
        _BUILT[key] = hf_config, meta_model_with_method(hf_config, spec, dtype, cast_all)
    return _BUILT[key]


def estimate(plan: RunPlan) -> MemoryEstimate:
    import torch

    dtype = getattr(torch, plan.dtype)
    hf_config, model = _built(plan.model, plan.method, dtype, cast_all=plan.deepspeed is not None)
    stats = param_stats(model)
    zero = zero_settings(plan.deepspeed, hf_config.hidden_size)
    states = model_states(stats, zero, plan.layout.world_size, plan.optimizer)
    dims = decoder_dims(model)
    if dims is None:
        return MemoryEstimate(stats, states, None, note=f"activations of {hf_config.model_type} models are not "
                              "modelled; the fit is checked on the model states alone")
    acts = activations_for(model, dims, plan.per_device_batch, plan.seq_len, dtype, plan.gradient_checkpointing)
    return MemoryEstimate(stats, states, acts)


# --------------------------------------------------------------------------- the report
def add_dry_run_arguments(p) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="print each planned run's parameters, per-GPU memory and launch command, train nothing; "
                        "exits non-zero if a run does not fit --gpu-mem")
    p.add_argument("--gpu-mem", type=float, default=80.0, metavar="GIB",
                   help="memory per GPU in GiB for --dry-run (default 80)")


def _gib(x: int) -> float:
    return round(x / GIB, 2)


def report_row(name: str, plan: RunPlan, est: MemoryEstimate | None, gpu_mem_gib: float, command: str,
               error: str | None = None) -> dict[str, Any]:
    """One run's numbers as the JSON line carries them (bytes and GiB); ``fits`` is None when unknown."""
    from .sft_trainer import zero_stage

    row: dict[str, Any] = {"run": name, "model": plan.model, "method": plan.method.method, "r": plan.method.r,
                           "dtype": plan.dtype,
                           "zero_stage": zero_stage(plan.deepspeed) if plan.deepspeed is not None else None,
                           "nodes": plan.layout.nodes, "gpus_per_node": plan.layout.gpus_per_node,
                           "world_size": plan.layout.world_size, "layout_assumed": plan.layout.assumed,
                           "per_device_batch": plan.per_device_batch, "seq_len": plan.seq_len,
                           "gradient_checkpointing": plan.gradient_checkpointing, "gpu_mem_gib": gpu_mem_gib,
                           "command": command}
    if error is not None or est is None:
        return {**row, "error": error, "fits": False}
    s, a = est.states, est.activations
    parts = {"weights": s.weights, "gradients": s.gradients, "gradients_fp32_at_step": s.gradients_fp32_at_step,
             "optimizer": s.optimizer, "buffers": s.buffers,
             "activations": a.saved if a else None, "activations_working": a.working if a else None,
             "model_states": s.model_states, "peak": est.peak}
    fits = est.peak <= gpu_mem_gib * GIB
    if a is None and fits:      # without the activations only a "does not fit" is certain
        fits = None
    return {**row, "params_total": est.params.total, "params_trainable": est.params.trainable,
            "bytes": parts, "gib": {k: (_gib(v) if v is not None else None) for k, v in parts.items()},
            "fits": fits, "note": est.note or None}


def print_report(experiment: str, rows: list[dict[str, Any]], describe: Callable[[dict], str]) -> int:
    """Print each run, then one JSON line with every run; returns the exit code (1 if any run does not fit
    or could not be planned)."""
    for row in rows:
        print(f"[{experiment}] {row['run']}: {describe(row)}")
        if row.get("error"):
            print(f"  cannot plan: {row['error']}")
        else:
            g = row["gib"]
            share = row["params_trainable"] / row["params_total"]
            print(f"  parameters: {row['params_trainable']:,} trainable of {row['params_total']:,} ({share:.2%})")
            acts = "not modelled" if g["activations"] is None else \
                f"{g['activations']} (+{g['activations_working']} during backward)"
            step = f" (+{g['gradients_fp32_at_step']} in fp32 at the step)" \
                if row["bytes"]["gradients_fp32_at_step"] else ""
            print(f"  per GPU, GiB: weights {g['weights']} | gradients {g['gradients']}{step} | "
                  f"optimizer {g['optimizer']} | buffers {g['buffers']} | activations {acts}")
            verdict = {True: "fits", False: "DOES NOT FIT", None: "fit unknown (activations not modelled)"}[row["fits"]]
            print(f"  peak {g['peak']} GiB of {row['gpu_mem_gib']:g} GiB: {verdict}")
            if row.get("note"):
                print(f"  note: {row['note']}")
        if row.get("layout_assumed"):
            print(f"  layout assumed: {row['layout_assumed']}")
        print(f"  launch: {row['command']}")
    bad = [r["run"] for r in rows if r["fits"] is False]
    if bad:
        print(f"[{experiment}] {len(bad)} of {len(rows)} runs do not fit or cannot be planned: {', '.join(bad)}")
    print(json.dumps(rows))
    return 1 if bad else 0
