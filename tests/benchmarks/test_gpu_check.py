"""`make gpu-check`'s pieces that run without a GPU: the script parses, and its report lands between the markers."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_report  # noqa: E402


def test_gpu_check_script_parses():
    result = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_docs_hold_the_markers_the_report_replaces():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    assert text.count(gpu_report.BEGIN) == 1 and text.count(gpu_report.END) == 1
    assert text.index(gpu_report.BEGIN) > text.index("## GPU results")


def test_report_replaces_only_the_marked_text_and_reports_missing_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    facts = {"device": "NVIDIA H100 80GB HBM3", "date": "2027-01-02", "torch": "2.14.1", "physicsnemo": "2.2.2"}
    record = {"size": 448, "batch": 1, "steps": 8, "ratio_fast_over_reference": 0.4,
              "ratio_fast_over_reference_fast": 0.75}
    for name in ("corrdiff", "corrdiff fast", "reference", "reference fast"):
        record[name] = {"per_member_s": 1.5, "ran_compiled": None}
    record["corrdiff fast"]["ran_compiled"] = False
    (results / "sampling.json").write_text(json.dumps({**facts, "records": [record]}))
    log = results / "steps.tsv"
    log.write_text("ok\tGPU visible\tNVIDIA H100\nfailed\ttraining throughput (bench_training.py)\ttimed out after 90 s\n")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# B\n\n## GPU results\n\nintro\n\n{gpu_report.BEGIN}\nold\n{gpu_report.END}\n\n## After\n")
    gpu_report.write(doc, gpu_report.report(results, log))
    text = doc.read_text()
    assert text.startswith("# B\n\n## GPU results\n\nintro\n\n") and text.endswith(f"{gpu_report.END}\n\n## After\n")
    assert "old" not in text and "**NVIDIA H100 80GB HBM3**, 2027-01-02" in text
    assert "- failed: training throughput (bench_training.py) — timed out after 90 s" in text
    assert "| 448² ×1 | 1.50 s | 1.50 s | 1.50 s | 1.50 s | 0.40 | 0.75 | corrdiff fast: NO (eager fallback) |" in text
    assert "No `unet` results" in text and "No `training` results" in text


def test_fused_norm_results_are_tabled_with_their_ratio_and_whether_each_really_compiled(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    record = {"case": "448² ×4 sampling forward", "plain_norm_s": 0.02, "fused_norm_s": 0.015,
              "plain_norm_ran_compiled": True, "fused_norm_ran_compiled": False}
    (results / "fused_norm.json").write_text(json.dumps({"device": "GPU", "date": "2027-01-02", "records": [record],
                                                         "recommendation": "keep it off"}))
    log = results / "steps.tsv"
    log.write_text("ok\tfused GroupNorm+SiLU\t\n")
    text = "\n".join(gpu_report.report(results, log))
    assert "FUSED_NORM_AUTO[\"cuda\"]`): keep it off" in text
    assert ("| 448² ×4 sampling forward | 20.0 ms | 15.0 ms | 0.75 | plain_norm: yes; fused_norm: NO (eager fallback) |"
            in text)
