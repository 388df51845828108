"""scripts/fetch_data.py without the network: ``datasets.load_dataset`` is replaced by in-memory datasets in the
hub's schemas, built from the repository's own copies, so rebuilding must reproduce every copy row for row;
and the offline path is run for real (an unreachable hub endpoint), which must stop before writing anything."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from eval import gsm8k, math_task, mbpp
from eval.data_files import MANIFEST, REPO_DATA_DIR, read_manifest, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "fetch_data.py"
_spec = importlib.util.spec_from_file_location("fetch_data", SCRIPT)
fd = sys.modules["fetch_data"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fd)

SUBJECT_CONFIG = {"Algebra": "algebra", "Counting & Probability": "counting_and_probability", "Geometry": "geometry",
                  "Intermediate Algebra": "intermediate_algebra", "Number Theory": "number_theory",
                  "Prealgebra": "prealgebra", "Precalculus": "precalculus"}
MBPP_SPLIT_IDS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601),
                  "train": range(601, 975)}
GLUE_CONFIG = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "qnli": "QNLI", "rte": "RTE", "stsb": "STS-B"}


def _repo(relative: str, layout=None) -> list[dict]:
    return fd.read_rows(REPO_DATA_DIR / relative, layout)


def _glue_as_hub(config: str, split: str) -> list[dict]:
    """A repository GLUE TSV as ``nyu-mll/glue`` rows (integer labels, ``idx``)."""
    folder = GLUE_CONFIG[config]
    file = {"validation": "dev.tsv", "train": "train.tsv.gz" if folder == "SST-2" else "train.tsv"}[split]
    rows = _repo(f"glue/{folder}/{file}", fd.GLUE_LAYOUTS[folder])
    out = []
    for i, r in enumerate(rows):
        if config in ("sst2", "cola"):
            out.append({"sentence": r["sentence"], "label": int(r["label"]), "idx": i})
        elif config == "mrpc":
            out.append({"sentence1": r["#1 String"], "sentence2": r["#2 String"], "label": int(r["Quality"]), "idx": i})
        elif config == "qnli":
            out.append({"question": r["question"], "sentence": r["sentence"],
                        "label": fd.ENTAILMENT2.index(r["label"]), "idx": int(r["index"])})
        elif config == "rte":
            out.append({"sentence1": r["sentence1"], "sentence2": r["sentence2"],
                        "label": fd.ENTAILMENT2.index(r["label"]), "idx": int(r["index"])})
        else:   # stsb: the hub stores the score as float32
            import numpy as np

            out.append({"sentence1": r["sentence1"], "sentence2": r["sentence2"],
                        "label": float(np.float32(r["score"])), "idx": int(r["index"])})
    return out


def _gsm8k_train() -> list[dict]:
    """7473 train rows whose sampled positions hold the repository's sample (the rest: filler)."""
    rows = [{"question": f"filler {i}?", "answer": "x\n#### 0"} for i in range(fd.GSM8K_TRAIN_ROWS)]
    keep = sorted(random.Random(0).sample(range(fd.GSM8K_TRAIN_ROWS), fd.GSM8K_SAMPLE))
    for i, row in zip(keep, _repo("gsm8k/train_sample.jsonl")):
        rows[i] = row
    return rows


MNLI = [{"premise": "A man is eating.", "hypothesis": "Someone eats.", "label": 0, "idx": 0},
        {"premise": "A dog runs.", "hypothesis": "A cat sleeps.", "label": 2, "idx": 1},
        {"premise": "Kids play.", "hypothesis": "Kids play outside.", "label": 1, "idx": 2}]
QNLI_TRAIN = [{"question": "Who?", "sentence": "Nobody knows who.", "label": 1, "idx": 0},
              {"question": "What is 2+2?", "sentence": "2+2 is 4.", "label": 0, "idx": 1}]


def hub_table() -> dict[tuple, list[dict]]:
    """(path, config or data file, split) -> rows, in each hub dataset's own schema and field order."""
    table: dict[tuple, list[dict]] = {
        ("openai/gsm8k", "main", "test"): _repo("gsm8k/test.jsonl"),
        ("openai/gsm8k", "main", "train"): _gsm8k_train(),
        ("HuggingFaceH4/MATH-500", None, "test"): _repo("math/math500.jsonl"),
        ("openai/openai_humaneval", None, "test"): [
            {k: r[k] for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")}
            for r in _repo("humaneval/HumanEval.jsonl.gz")],
        ("fxmeng/pissa-dataset", "metamath/test.json", "test"): _repo("pissa_eval/metamath_test.json.gz"),
        ("fxmeng/pissa-dataset", "python/test.json", "test"): _repo("pissa_eval/python_test.json"),
        ("nyu-mll/glue", "mnli", "train"): MNLI, ("nyu-mll/glue", "mnli", "validation_matched"): MNLI,
        ("nyu-mll/glue", "qnli", "train"): QNLI_TRAIN,
    }
    for subject, config in SUBJECT_CONFIG.items():
        table["EleutherAI/hendrycks_math", config, "test"] = [r for r in _repo("math/test.jsonl.gz")
                                                               if r["type"] == subject]
    for config, file in (("full", "mbpp/mbpp.jsonl"), ("sanitized", "mbpp/sanitized-mbpp.json")):
        rows = _repo(file)
        for split, ids in MBPP_SPLIT_IDS.items():
            table["google-research-datasets/mbpp", config, split] = [r for r in rows if r["task_id"] in ids][::-1]
    for config in GLUE_CONFIG:
        for split in ("validation", "train") if config != "qnli" else ("validation",):   # QNLI train: not in data/
            table["nyu-mll/glue", config, split] = _glue_as_hub(config, split)
    return table


@pytest.fixture(scope="module")
def hub() -> dict[tuple, list[dict]]:
    return hub_table()


@pytest.fixture
def fake_hub(hub, monkeypatch):
    """``datasets.load_dataset`` answering from ``hub`` (a copy the test may edit) with real in-memory datasets."""
    table = dict(hub)

    def load_dataset(path, name=None, *, split, data_files=None, **kwargs):
        key = (path, data_files[split] if data_files else name, split)
        if key not in table:
            raise AssertionError(f"unexpected hub request {key}")
        return datasets.Dataset.from_list(table[key])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(fd, "probe_hub", lambda timeout=10.0: None)
    return table


def test_rebuilds_every_repository_file_row_for_row(fake_hub, tmp_path, capsys):
    out = tmp_path / "fetched"
    assert fd.main(["--out", str(out), "--check"]) == 0, capsys.readouterr()
    log = capsys.readouterr()
    expected = {t.path for t in fd.TARGETS if not t.full_glue}
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {MANIFEST}
    assert written == expected
    stored = set(read_manifest(REPO_DATA_DIR / MANIFEST))
    assert stored - written == set(fd.NOT_ON_HUB)              # every other file of data/ is rebuilt
    assert log.out.count("same rows as the repository's copy") == len(expected)
    assert "dev_matched_textfooler_sample1000.tsv" in log.err  # said not to be on the hub
    manifest = read_manifest(out / MANIFEST)
    assert set(manifest) == written and all(sha256_file(out / f) == d for f, d in manifest.items())

    # the loaders read the rebuilt folder (it is searched first) and see the same benchmarks
    assert gsm8k.load_examples(out, hub=False) == gsm8k.load_examples(hub=False)
    assert math_task.load_examples(out, hub=False) == math_task.load_examples(hub=False)
    assert mbpp.load_examples(out, "test500", hub=False) == mbpp.load_examples(task_set="test500", hub=False)


def test_glue_files_have_glues_layout():
    row = {"premise": "P", "hypothesis": "H", "label": 1, "idx": 7}
    assert fd.tsv_text([row], fd.MNLI_TRAIN, "x").splitlines() == [
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
        "7\t\t\t\t\t\t\t\tP\tH\t\tneutral"]
    assert fd.tsv_text([{"sentence": "Good.", "label": 1, "idx": 0}], fd.GLUE_LAYOUTS["CoLA"], "x") == "\t1\t\tGood.\n"
    assert fd.tsv_text([{"sentence1": "a", "sentence2": "b", "label": 3.799999952316284, "idx": 4}],
                       fd.GLUE_LAYOUTS["STS-B"], "x").splitlines()[1] == "4\t\t\t\t\t\t\ta\tb\t3.8"
    with pytest.raises(fd.HubSchemaError, match=r"nyu-mll/glue sst2 train row 0: column 'sentence'"):
        fd.tsv_text([{"sentence": "tab\there", "label": 0, "idx": 0}], fd.GLUE_LAYOUTS["SST-2"],
                    "nyu-mll/glue sst2 train")
    with pytest.raises(fd.HubSchemaError, match="row 0: cannot fill"):
        fd.tsv_text([{"text": "no sentence field", "label": 0}], fd.GLUE_LAYOUTS["SST-2"], "x")


def test_full_glue_is_read_by_the_glue_loader(fake_hub, tmp_path):
    from experiments import glue

    out = tmp_path / "fetched"
    assert fd.main(["--out", str(out), "--only", "glue", "--full-glue"]) == 0
    cfg = glue.GlueConfig(source="local")
    train, dev = glue.load_task(glue.TASK_BY_NAME["mnli"], cfg, out)
    assert dev.source == str(out.resolve() / "glue/MNLI/dev_matched.tsv")   # the real dev set, not the sample
    assert [t for t in dev.texts] == [(r["premise"], r["hypothesis"]) for r in MNLI]
    assert dev.labels == train.labels == [0, 2, 1]
    train, _ = glue.load_task(glue.TASK_BY_NAME["qnli"], cfg, out)
    assert train.texts == [("Who?", "Nobody knows who."), ("What is 2+2?", "2+2 is 4.")] and train.labels == [1, 0]


def test_check_names_the_file_row_and_field_that_differ(hub, fake_hub, tmp_path, capsys):
    rows = [dict(r) for r in fake_hub["openai/gsm8k", "main", "test"]]
    rows[5]["answer"] = rows[5]["answer"].replace("####", "#### 1")
    fake_hub["openai/gsm8k", "main", "test"] = rows
    assert fd.main(["--out", str(tmp_path / "a"), "--only", "gsm8k", "--check"]) == 1
    out = capsys.readouterr().out
    assert "gsm8k/test.jsonl: 1319 rows; DIFFERS" in out and "row 5 field 'answer'" in out
    assert "gsm8k/train_sample.jsonl: 2000 rows; same rows" in out

    fake_hub["openai/gsm8k", "main", "test"] = hub["openai/gsm8k", "main", "test"][::-1]
    assert fd.main(["--out", str(tmp_path / "b"), "--only", "gsm8k", "--check"]) == 1
    assert "the same 1319 rows in another order" in capsys.readouterr().out


def test_a_hub_schema_change_is_a_clear_error(fake_hub, tmp_path, capsys):
    fake_hub["openai/gsm8k", "main", "test"] = [{"question": "q"}]
    assert fd.main(["--out", str(tmp_path), "--only", "gsm8k"]) == 2
    assert "openai/gsm8k main test row 0: no field(s) ['answer']" in capsys.readouterr().err


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))}
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, env={**environ, **env}, timeout=120)


@pytest.mark.parametrize("env, says", [({"HF_ENDPOINT": "http://127.0.0.1:9"}, "cannot reach the Hugging Face hub"),
                                       ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set")])
def test_without_the_hub_it_stops_before_writing(tmp_path, env, says):
    res = _run(tmp_path, **env)
    assert res.returncode == 2 and says in res.stderr and "Nothing was written" in res.stderr
    assert not (tmp_path / "out").exists()


def test_refuses_to_write_over_the_repository_data(capsys):
    assert fd.main(["--out", str(REPO_DATA_DIR)]) == 2
    assert "--replace-repo-data" in capsys.readouterr().err
