"""experiments/common/classification.py through GLUE on the real MiniLM encoder: a run interrupted after an epoch
checkpoint resumes and ends where an uninterrupted run ends, a CUDA request on a machine without CUDA is refused,
and the saved adapter + head rebuild the trained model with identical logits."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from experiments import glue, vtab
from experiments.common.classification import ADAPTER_FILE, TRAINED_DIR, TRAINED_FILE

# 40 MRPC rows, 3 epochs of 5 steps, texts cut at 24 tokens: seconds per run on the real MiniLM
TINY = dataclasses.replace(glue.SCALE["cpu"], max_train=40, max_eval=24, epochs=3, batch_size=8,
                           max_seq_length=24, threads=1)
MRPC = glue.TASK_BY_NAME["mrpc"]


class Crash(RuntimeError):
    pass


class CrashAfterCheckpoint(TrainerCallback):
    """Stands in for a killed job: raises right after the checkpoint of epoch ``epoch`` is written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_save(self, args, state, control, **kwargs):
        if round(state.epoch) == self.epoch:
            raise Crash(f"killed after the epoch-{self.epoch} checkpoint")


class KeepModel(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


def _trained_tensors(out_dir):
    folder = out_dir / TRAINED_DIR
    tensors = load_file(str(folder / TRAINED_FILE))
    if (folder / ADAPTER_FILE).exists():
        tensors.update(load_file(str(folder / ADAPTER_FILE)))
    return tensors


@pytest.mark.parametrize("method", ["miss", "pissa"])
def test_run_killed_after_an_epoch_checkpoint_resumes_to_the_same_end(tmp_path, data_dir, method):
    spec = glue.METHOD_BY_NAME[method]
    whole = glue.run_glue(TINY, MRPC, spec, 3, data_dir, False, tmp_path / "whole")
    with pytest.raises(Crash):
        glue.run_glue(TINY, MRPC, spec, 3, data_dir, False, tmp_path / "cut", callbacks=[CrashAfterCheckpoint(1)])
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["checkpoint-5"]
    resumed = glue.run_glue(TINY, MRPC, spec, 3, data_dir, False, tmp_path / "cut")

    assert resumed["runtime"]["resumed_from"] == "checkpoint-5" and whole["runtime"]["resumed_from"] is None
    assert resumed["steps"] == whole["steps"] == 15
    assert resumed["epoch_evals"] == whole["epoch_evals"] and len(whole["epoch_evals"]) == 3
    assert resumed["loss_curve"] == whole["loss_curve"]
    a, b = _trained_tensors(tmp_path / "whole"), _trained_tensors(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "cut" / "checkpoints").exists()        # a finished run keeps its trained tensors only


@pytest.mark.parametrize("method", ["lora", "pissa", "miss", "full"])
def test_saved_adapter_and_head_rebuild_identical_logits(tmp_path, data_dir, method):
    keep = KeepModel()
    cfg = dataclasses.replace(TINY, epochs=1)
    glue.run_glue(cfg, MRPC, glue.METHOD_BY_NAME[method], 0, data_dir, False, tmp_path, callbacks=[keep])
    tokenizer, reloaded = glue.load_trained_run(tmp_path / TRAINED_DIR)
    _, dev = glue.load_task(MRPC, cfg, data_dir)
    batch = glue.Collator(tokenizer)(glue.encode(tokenizer, dev, cfg.max_seq_length, separate=True))
    trained = keep.model.eval()
    with torch.no_grad():
        expected, got = trained(**batch).logits, reloaded(**batch).logits
    assert torch.equal(expected, got)
    fresh = glue.build_model(cfg, MRPC, glue.METHOD_BY_NAME[method], False)[1].eval()
    with torch.no_grad():
        assert not torch.equal(fresh(**batch).logits, expected)    # the loaded tensors are what made the difference
    files = {p.name for p in (tmp_path / TRAINED_DIR).iterdir()}
    assert files == ({TRAINED_FILE, "classifier.json"} | (set() if method == "full" else {ADAPTER_FILE}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("module", [glue, vtab])
def test_cuda_profile_without_cuda_is_an_error_naming_it(tmp_path, capsys, module):
    args = ["--profile", "small", "--results-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as exit_info:
        module.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--profile small: device" in err and "device='cuda'" in err and "--set device=cpu" in err
    assert not (tmp_path / module.EXPERIMENT).exists()            # nothing ran, no failed records
    assert module.main([*args, "--plan"]) == 0                    # listing the runs needs no GPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_run_asked_for_cuda_without_cuda_does_not_fall_back(tmp_path, data_dir):
    with pytest.raises(ValueError, match=r"mrpc-run: device: device='cuda' but this machine has no CUDA"):
        glue.run_glue(dataclasses.replace(TINY, device="cuda"), MRPC, glue.METHOD_BY_NAME["lora"], 0, data_dir,
                      False, tmp_path, label="mrpc-run")
