"""benchmarks/gpu_suite.py --smoke on CPU: the prepared GPU run cannot rot (structure, positive figures)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _smoke(tmp_path, sections: str) -> dict:
    out = tmp_path / "suite.json"
    proc = subprocess.run([sys.executable, str(SUITE), "--smoke", "--sections", sections, "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["smoke"] is True and res["env"]["torch"] and list(res["sections"]) == sections.split(",")
    for name, sec in res["sections"].items():
        assert "error" not in sec, (name, sec.get("error"), sec.get("traceback"))
    return res["sections"]


def test_smoke_sections_structure_and_positive_figures(tmp_path):
    s = _smoke(tmp_path, "latency,batched_eval,train_step")
    methods = s["latency"]["methods"]
    assert set(methods) == {"simpleclick_vit_test", "adaptiveclick_test", "cplot_test", "gpcis_test",
                            "ritm_hrnet_test", "m2n2"}
    for name, m in methods.items():
        assert "error" not in m, (name, m)
        key = "ms_per_click" if name == "m2n2" else "model_ms_per_click"
        assert _positive(m[key]) and m["clicks"] >= 2, (name, m)
    runs = s["batched_eval"]["runs"]
    assert {(r["precision"], r["batch_size"]) for r in runs} == {(p, b) for p in ("fp32", "bf16") for b in (1, 2, 4)}
    for r in runs:
        assert _positive(r["instances_per_s"]) and _positive(r["speedup_vs_b1"]), r
    t = s["train_step"]
    assert t["precision"] == "bf16" and t["steps"] >= 1
    for k in ("images_per_s", "forward_gflops_per_image", "achieved_tflops", "mfu"):
        assert _positive(t[k]), (k, t[k])


@pytest.mark.slow
def test_smoke_ddp_fit(tmp_path):
    d = _smoke(tmp_path, "ddp_fit")["ddp_fit"]
    assert d["steps"] == 2 and d["backend"] == "gloo" and _positive(d["wall_s"])


def test_a_failing_section_is_recorded_and_the_rest_run(tmp_path, monkeypatch):
    sys.path.insert(0, str(SUITE.parent))
    import gpu_suite

    def boom(a, left):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(gpu_suite, "section_train_step", boom)
    import argparse

    a = argparse.Namespace(smoke=True, budget=10.0, section="train_step", part=str(tmp_path / "p.json"), threads=1)
    assert gpu_suite._child(a) == 0
    rec = json.loads((tmp_path / "p.json").read_text())
    assert rec["error"] == "RuntimeError: simulated failure"
    assert gpu_suite.main(["--sections", "nope", "--out", str(tmp_path / "x.json")]) == 2
    import torch

    if not torch.cuda.is_available():  # the full suite refuses a machine without a GPU, in one line
        assert gpu_suite.main(["--out", str(tmp_path / "x.json")]) == 2 and not (tmp_path / "x.json").exists()
