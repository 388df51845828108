"""eval.data_files: where each benchmark file is read from, the manifest check, and missing inputs as clear
errors before any run (never a TypeError mid-run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval import data_files as df
from eval import gsm8k
from eval.common import data_source
from experiments.common.runner import Run, experiment_main

REPO_ROOT = Path(__file__).resolve().parents[1]
GSM8K = "gsm8k/test.jsonl"


def _gsm8k_copy(folder: Path, n: int, marker: str) -> Path:
    """``folder`` holding the first ``n`` GSM8K test rows, each question tagged with ``marker``."""
    import json

    rows = [json.loads(line) for line in (df.REPO_DATA_DIR / GSM8K).read_text().splitlines()[:n]]
    (folder / "gsm8k").mkdir(parents=True)
    (folder / GSM8K).write_text("".join(json.dumps({**r, "question": f"{marker} {r['question']}"}) + "\n"
                                        for r in rows))
    return folder


def test_resolution_order_is_explicit_then_env_then_repository(tmp_path, monkeypatch):
    explicit = _gsm8k_copy(tmp_path / "explicit", 3, "[explicit]")
    env = _gsm8k_copy(tmp_path / "env", 4, "[env]")
    monkeypatch.setenv(df.ENV_VAR, str(env))
    assert [d.origin for d in df.search_dirs(explicit)] == ["--data-dir", "$MISS_DATA_DIR", "the repository's data/"]
    assert df.locate(GSM8K, explicit) == explicit.resolve() / GSM8K
    assert df.locate(GSM8K) == env.resolve() / GSM8K
    examples = gsm8k.load_examples(explicit)
    assert len(examples) == 3 and examples[0]["question"].startswith("[explicit]")
    assert len(gsm8k.load_examples()) == 4
    # each file separately: what the explicit folder lacks comes from the next one that has it
    assert df.locate("math/test.jsonl.gz", explicit) == df.REPO_DATA_DIR / "math/test.jsonl.gz"
    monkeypatch.setenv(df.ENV_VAR, "")                   # empty counts as unset
    assert df.locate(GSM8K) == df.REPO_DATA_DIR / GSM8K
    assert len(gsm8k.load_examples()) == 1319


def test_a_mistyped_data_directory_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(df.DataFileError, match=r"--data-dir .*nowhere: no such directory"):
        df.locate(GSM8K, tmp_path / "nowhere")
    monkeypatch.setenv(df.ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(df.DataFileError, match=r"\$MISS_DATA_DIR .*gone: no such directory"):
        df.locate(GSM8K)


def test_a_changed_or_truncated_file_is_an_error_naming_it(tmp_path):
    folder = _gsm8k_copy(tmp_path / "d", 5, "q")
    df.write_manifest(folder, [GSM8K])
    path = folder / GSM8K
    expected = df.sha256_file(path)
    assert df.locate(GSM8K, folder) == path.resolve()
    path.write_bytes(path.read_bytes()[:-40])            # truncated after it was checked once
    with pytest.raises(df.DataChecksumError) as err:
        df.locate(GSM8K, folder)
    message = str(err.value)
    assert str(path.resolve()) in message and expected in message and df.sha256_file(path) in message
    assert isinstance(err.value, ValueError)
    (folder / df.MANIFEST).unlink()                      # a folder without a manifest is read as it is
    assert df.locate(GSM8K, folder) == path.resolve()


def test_a_missing_file_names_itself_every_folder_searched_and_how_to_get_it(tmp_path, monkeypatch):
    env = _gsm8k_copy(tmp_path / "env", 1, "e")
    monkeypatch.setenv(df.ENV_VAR, str(env))
    with pytest.raises(df.MissingDataError) as err:
        df.require(["gsm8k/other.jsonl", "glue/QNLI/train.tsv"], tmp_path)
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert err.value.files == ["gsm8k/other.jsonl", "glue/QNLI/train.tsv"]
    for folder in (tmp_path, env, df.REPO_DATA_DIR):
        assert str(folder.resolve()) in message
    assert "python scripts/fetch_data.py --out DIR --only glue gsm8k --full-glue" in message
    assert "--data-dir DIR" in message
    # a file the repository stores: restoring it is the first advice
    assert "git checkout -- data/" in str(df.MissingDataError([GSM8K], df.search_dirs()))
    assert df.locate("gsm8k/other.jsonl", hub=True) is None          # a caller with a hub route goes there


def test_records_name_the_repository_file_and_its_digest(data_dir):
    source = data_source(gsm8k.SPEC, hub=False)
    manifest = df.read_manifest(data_dir / df.MANIFEST)
    assert source == {"source": "local", "files": {GSM8K: {"path": "data/gsm8k/test.jsonl", "sha256": manifest[GSM8K]}}}


def test_manifest_covers_every_file_of_data(data_dir):
    files = {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file()}
    manifest = df.read_manifest(data_dir / df.MANIFEST)
    assert set(manifest) == files - {"README.md", df.MANIFEST}
    assert {f: df.sha256_file(data_dir / f) for f in manifest} == manifest


def test_the_runner_stops_before_any_run_when_an_input_is_missing(tmp_path, capsys):
    ran: list[str] = []

    def check_inputs(ctx, runs):
        df.require(["gsm8k/absent.jsonl"], ctx.data_dir)

    rc = experiment_main("toy", "toy", lambda ctx: [Run("a", {})], lambda run, rec, ctx: ran.append(run.name),
                         argv=["--results-dir", str(tmp_path)], check_inputs=check_inputs)
    err = capsys.readouterr().err
    assert rc == 2 and ran == [] and not (tmp_path / "toy").exists()
    assert "gsm8k/absent.jsonl" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, names", [
    (["experiments/glue.py", "--set", "tasks=qnli", "--set", "split_dev_when_no_train=false"],
     ["glue/QNLI/train.tsv", "--full-glue", "split_dev_when_no_train=true"]),
    # device=cpu: the small profile asks for CUDA, which stops the script first on a machine without it
    (["experiments/vtab.py", "--profile", "small", "--set", "tasks=eurosat", "--set", "device=cpu"],
     ["vtab-1k/eurosat/train800val200.txt", "VPT/NOAH"]),
])
def test_an_experiment_with_a_missing_input_exits_2_before_running(tmp_path, argv, names):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop(df.ENV_VAR, None)
    res = subprocess.run([sys.executable, *argv, "--results-dir", str(tmp_path / "results")], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and all(n in res.stderr for n in names), res.stderr
    assert not (tmp_path / "results").exists()


def test_no_code_reads_a_data_folder_beside_the_checkout():
    # a clone must run with nothing beside it (the pattern is assembled so that this file does not match it)
    beside = "shared"
    pattern = "|".join([r"\.\./" + beside, f'parent / "{beside}"', beside + "/data"])
    hits = subprocess.run(["git", "grep", "-nE", pattern, "--", "*.py", "*.sh"], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False)
    assert hits.returncode == 1 and hits.stdout == ""        # 1: no match (2 would be an error)
