"""experiments/gradient_norm.py on the real MiniLM-L6 encoder (Fig. 1 on a pretrained model): per-batch norms that
pair across methods (same rows, same head at init), and the method's own parameters measured."""

from __future__ import annotations

from experiments import gradient_norm
from experiments.common.records import load_records


def test_encoder_norms_pair_across_methods(tmp_path, data_dir):
    argv = ["--profile", "cpu", "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "res"),
            "--runs-dir", str(tmp_path / "runs"), "--task", "sst2", "--set", "encoder.ranks=8",
            "--set", "encoder.seeds=5", "--set", "encoder.n_batches=2", "--set", "encoder.batch_size=4"]
    assert gradient_norm.main(argv) == 0
    recs = {r["config"]["method"]: r for r in load_records(tmp_path / "res", "gradient_norm")}
    assert set(recs) == {"full", "lora", "pissa", "miss"}               # --task sst2 leaves out the LLM runs
    m = {k: r["metrics"] for k, r in recs.items()}
    for method, r in recs.items():
        assert r["run"] == f"minilm-l6-sst2-{method}" + ("" if method == "full" else "-r8") + "-s5"
        assert r["config"]["model_label"] == m[method]["model_label"] == "MiniLM-L6" and r["seed"] == 5
        assert len(m[method]["grad_norms"]) == 2 and all(x > 0 for x in m[method]["grad_norms"])
        assert m[method]["batch_rows_sha"] == m["lora"]["batch_rows_sha"]
        # every method computes the pretrained function at init, so the head sees the same gradient
        assert all(abs(a - b) < 1e-6 * b for a, b in zip(m[method]["head_grad_norms"], m["lora"]["head_grad_norms"]))
    # own parameters: the adapters on the 36 Linear layers of the 6 blocks, or the whole encoder
    assert m["lora"]["method_params"] == m["pissa"]["method_params"] == 6 * 8 * (4 * (384 + 384) + 2 * (384 + 1536))
    assert m["miss"]["method_params"] == 6 * 8 * (5 * 384 + 1536)
    assert m["full"]["method_params"] == recs["full"]["trainable_params"] - (384 + 1) * 2 > 22_000_000
