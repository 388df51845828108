"""The two generation backends of ``eval.generate``: the vLLM offline engine and transformers ``generate``.

Both take a list of ``Request`` (prompt + sampling settings) and yield lists of ``(Request, Completion)``
as batches finish, so the caller writes them to disk batch by batch. Both:

* tokenize the prompt with the model's tokenizer as is (BOS added, no chat template: the PiSSA prompts
  are raw Alpaca text);
* decode greedily for ``temperature == 0`` and stop at EOS (the tokenizer's and the model's
  ``generation_config`` EOS ids), at a stop string (cut before it, as vLLM does), or at
  ``max_new_tokens``; ``finish_reason`` is ``"stop"`` for the first two and ``"length"`` for the last;
* decode the new tokens with ``skip_special_tokens=True`` (a trailing incomplete UTF-8 character is
  dropped, as vLLM does).

vLLM serves adapters as LoRA on top of the base model (one engine for every adapter); transformers loads
them with PEFT onto one copy of the base model and switches between them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from eval.generate_adapters import Adapter, vllm_max_lora_rank


@dataclasses.dataclass(frozen=True)
class Request:
    key: tuple[str, str]  # (task, id)
    prompt: str
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    n_prompt_tokens: int
    n_output_tokens: int


CPU_KV_CACHE_GB = 4  # vLLM CPU: KV cache size when neither --kv-cache-gb nor VLLM_CPU_KVCACHE_SPACE is set


def cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA set-up means: no GPU
        return 0


def default_tensor_parallel_size(model: str, n_gpus: int | None = None) -> int:
    """All visible GPUs, lowered to the largest count that divides the model's attention heads."""
    n_gpus = cuda_device_count() if n_gpus is None else n_gpus
    if n_gpus <= 1:
        return 1
    heads = None
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model)
        config = getattr(config, "text_config", None) or config
        heads = getattr(config, "num_attention_heads", None)
    except Exception:  # noqa: BLE001 - no readable config: let vLLM decide with every GPU
        return n_gpus
    if not heads:
        return n_gpus
    return max(d for d in range(1, n_gpus + 1) if heads % d == 0)


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------- vLLM
class VLLMBackend:
    """vLLM's offline ``LLM`` engine: tensor parallel over the GPUs, the CPU build where there are none.

    Requests go to ``LLM.generate`` in chunks of ``chunk_size`` (the engine batches continuously within a
    chunk); each finished chunk is handed back for writing, so a crash loses at most one chunk.
    """

    name = "vllm"

    def __init__(self, model: str, *, tokenizer: str | None = None, adapters: Sequence[Adapter] = (),
                 tensor_parallel_size: int | None = None, dtype: str = "auto", max_model_len: int | None = None,
                 gpu_memory_utilization: float | None = None, enforce_eager: bool = False,
                 max_num_seqs: int | None = None, kv_cache_gb: float | None = None, chunk_size: int = 512,
                 seed: int = 0) -> None:
        n_gpus = cuda_device_count()
        if n_gpus == 0:
            # the CPU build: run the engine core in this process (no spawned engine process to set up), and
            # give the KV cache a fixed size instead of reserving a fraction of the machine's memory
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            if kv_cache_gb is None and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                kv_cache_gb = CPU_KV_CACHE_GB
        from vllm import LLM

        self.adapters = {a.name: a for a in adapters}
        self.chunk_size = max(1, int(chunk_size))
        tp = tensor_parallel_size or (default_tensor_parallel_size(model, n_gpus) if n_gpus else 1)
        kwargs: dict[str, Any] = dict(model=model, tokenizer=tokenizer or model, tensor_parallel_size=tp,
                                      dtype=dtype, seed=seed, enforce_eager=enforce_eager)
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if gpu_memory_utilization:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
        if kv_cache_gb:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
        if adapters:
            kwargs.update(enable_lora=True, max_loras=1,
                          max_lora_rank=vllm_max_lora_rank(max(a.rank for a in adapters)))
        self.engine_args = {k: v for k, v in kwargs.items()}
        self.engine_args["n_gpus_visible"] = n_gpus
        started = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.load_seconds = round(time.perf_counter() - started, 2)
        self._lora_ids = {name: i + 1 for i, name in enumerate(self.adapters)}
        self._params: dict[tuple, Any] = {}

    def describe(self) -> dict[str, Any]:
        import vllm

        device = "cuda" if self.engine_args["n_gpus_visible"] else "cpu"
        return {"backend": "vllm", "vllm_version": vllm.__version__,
                "vllm_distribution": "vllm-cpu" if _version("vllm-cpu") else "vllm", "device": device,
                "engine_args": self.engine_args, "chunk_size": self.chunk_size, "load_seconds": self.load_seconds,
                "max_model_len": self.llm.llm_engine.model_config.max_model_len}

    def _sampling_params(self, req: Request):
        from vllm import SamplingParams

        key = (req.max_new_tokens, req.temperature, req.top_p, req.stop, req.seed)
        if key not in self._params:
            self._params[key] = SamplingParams(
                n=1, temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_new_tokens,
                stop=list(req.stop) or None, seed=req.seed if req.temperature > 0 else None,
                skip_special_tokens=True)
        return self._params[key]

    def generate(self, requests: Sequence[Request], adapter: str | None = None,
                 progress: bool = True) -> Iterator[list[tuple[Request, Completion]]]:
        from tqdm.auto import tqdm
        from vllm.lora.request import LoRARequest

        lora = None
        if adapter is not None:
            a = self.adapters[adapter]
            lora = LoRARequest(a.name, self._lora_ids[a.name], str(a.served_path))
        bar = functools.partial(tqdm, leave=False, position=1, desc="  vllm chunk") if progress else False
        for start in range(0, len(requests), self.chunk_size):
            chunk = list(requests[start:start + self.chunk_size])
            outputs = self.llm.generate([r.prompt for r in chunk], [self._sampling_params(r) for r in chunk],
                                        lora_request=lora, use_tqdm=bar)
            batch = []
            for req, out in zip(chunk, outputs):
                o = out.outputs[0]
                batch.append((req, Completion(text=o.text, finish_reason=o.finish_reason,
                                              n_prompt_tokens=len(out.prompt_token_ids or ()),
                                              n_output_tokens=len(o.token_ids))))
            yield batch

    def close(self) -> None:
        self.llm = None


# ---------------------------------------------------------------------------------------------- transformers
def _torch_dtype(dtype: str, device: str, config_dtype: Any):
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if isinstance(config_dtype, str):
        config_dtype = getattr(torch, config_dtype, None)
    if config_dtype is None:
        return torch.float32
    if device == "cpu" and config_dtype == torch.float16:
        return torch.float32  # half-precision matmuls on CPU are slow or missing
    return config_dtype


class HFBackend:
    """transformers ``generate`` with left-padded batches (prompts sorted by length to limit padding).

    One GPU or CPU; with several GPUs the model is split over them by ``device_map="auto"`` (layer by layer,
    not tensor parallel). Adapters are PEFT LoRA directories loaded onto the one base model.
    """

    name = "hf"

    def __init__(self, model: str, *, tokenizer: str | None = None, adapters: Sequence[Adapter] = (),
                 dtype: str = "auto", batch_size: int = 16, device: str | None = None, seed: int = 0) -> None:
        import torch
        import transformers

        n_gpus = cuda_device_count()
        self.device = device or ("cuda" if n_gpus else "cpu")
        config = transformers.AutoConfig.from_pretrained(model)
        self.dtype = _torch_dtype(dtype, self.device, getattr(config, "dtype", None))
        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if self.device == "cuda" and n_gpus > 1:
            kwargs["device_map"] = "auto"
        started = time.perf_counter()
        net = transformers.AutoModelForCausalLM.from_pretrained(model, **kwargs)
        if "device_map" not in kwargs:
            net = net.to(self.device)
        self.adapters = {a.name: a for a in adapters}
        if adapters:
            import peft

            first, *rest = adapters
            net = peft.PeftModel.from_pretrained(net, str(first.served_path), adapter_name=first.name)
            for a in rest:
                net.load_adapter(str(a.served_path), adapter_name=a.name)
        self.model = net.eval()
        self.load_seconds = round(time.perf_counter() - started, 2)
        tok = transformers.AutoTokenizer.from_pretrained(tokenizer or model)
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tok.eos_token_id is not None and tok.eos_token_id not in eos:
            eos.append(tok.eos_token_id)
        self.eos_ids = eos
        # vLLM ends a sequence at the context length (finish "length"); so does this backend (see _completion)
        self.context_len = getattr(self.model.config, "max_position_embeddings", None)
        self.batch_size = max(1, int(batch_size))
        self.seed = seed
        self.model_name = model
        torch.manual_seed(seed)

    def describe(self) -> dict[str, Any]:
        import torch

        return {"backend": "hf", "transformers_version": _version("transformers"), "device": self.device,
                "dtype": str(self.dtype).removeprefix("torch."), "batch_size": self.batch_size,
                "torch_threads": torch.get_num_threads(), "eos_token_ids": self.eos_ids,
                "context_len": self.context_len,
                "load_seconds": self.load_seconds,
                "device_map": getattr(self.model, "hf_device_map", None) and "auto"}

    def _generation_config(self, req: Request):
        from transformers import GenerationConfig

        sample = req.temperature > 0
        return GenerationConfig(
            max_new_tokens=req.max_new_tokens, do_sample=sample, num_beams=1,
            temperature=req.temperature if sample else None, top_p=req.top_p if sample else None, top_k=None,
            eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id)

    def _adapter_context(self, adapter: str | None):
        import contextlib

        if not self.adapters:
            if adapter is not None:
                raise KeyError(f"adapter {adapter!r} was not loaded")
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def generate(self, requests: Sequence[Request], adapter: str | None = None,
                 progress: bool = True) -> Iterator[list[tuple[Request, Completion]]]:
        import torch

        encoded = [self.tokenizer(r.prompt).input_ids for r in requests]
        order = sorted(range(len(requests)), key=lambda i: (-len(encoded[i]), requests[i].max_new_tokens))
        groups: list[list[int]] = []  # batches of equal sampling settings, longest prompts first
        for i in order:
            if (groups and len(groups[-1]) < self.batch_size
                    and self._cfg(requests[i]) == self._cfg(requests[groups[-1][0]])):
                groups[-1].append(i)
            else:
                groups.append([i])
        device = self.model.device if hasattr(self.model, "device") else self.device
        with self._adapter_context(adapter), torch.inference_mode():
            for group in groups:
                reqs = [requests[i] for i in group]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in group]}, return_tensors="pt")
                extra = {"stop_strings": list(reqs[0].stop), "tokenizer": self.tokenizer} if reqs[0].stop else {}
                if reqs[0].temperature > 0:
                    torch.manual_seed(reqs[0].seed)
                out = self.model.generate(input_ids=batch["input_ids"].to(device),
                                          attention_mask=batch["attention_mask"].to(device),
                                          generation_config=self._generation_config(reqs[0]), **extra)
                new = out[:, batch["input_ids"].shape[1]:].tolist()
                yield [(req, self._completion(req, tokens, len(encoded[i])))
                       for req, tokens, i in zip(reqs, new, group)]

    @staticmethod
    def _cfg(req: Request) -> tuple:
        return (req.max_new_tokens, req.temperature, req.top_p, req.stop)

    def _completion(self, req: Request, tokens: list[int], n_prompt: int) -> Completion:
        finish = "length"
        context_len = getattr(self, "context_len", None)
        if context_len:
            tokens = tokens[:max(0, context_len - n_prompt)]
        for j, t in enumerate(tokens):
            if t in self.eos_ids:
                tokens, finish = tokens[:j + 1], "stop"  # vLLM counts the EOS token among the output tokens
                break
        # vLLM's incremental detokenizer holds back a trailing incomplete UTF-8 sequence (shown as U+FFFD by a
        # full decode) and never emits it; do the same so both backends write the same text
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).rstrip("\ufffd")
        if req.stop:
            cut = min((p for p in (text.find(s) for s in req.stop) if p >= 0), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return Completion(text=text, finish_reason=finish, n_prompt_tokens=n_prompt, n_output_tokens=len(tokens))

    def close(self) -> None:
        self.model = None


def make_backend(name: str, model: str, **kwargs: Any):
    """``"vllm"`` or ``"hf"`` -> a backend; options the chosen backend does not take are dropped."""
    import inspect

    cls = {"vllm": VLLMBackend, "hf": HFBackend}[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(model, **{k: v for k, v in kwargs.items() if k in accepted and v is not None})
