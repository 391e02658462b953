"""Slow: the tiny variants learn (the quickstart and `make train METHOD=<m> EXP=tiny`).

Each run trains on the synthetic training set with the method's full pipeline and evaluates the
synthetic eval set before and after training (InteractiveEvaluation(eval_at_start=True)); NoC@85
must drop clearly and mIoU@1 must rise. Minutes each on 2 CPU cores: `make test-all`.
"""

import json
from pathlib import Path

import pytest

from iis.cli.train import main as train_main

ROOT = Path(__file__).resolve().parents[2]
RUNS = {
    "quickstart": ["experiments/quickstart.yaml"],
    "simpleclick": ["experiments/simpleclick/_base.yaml", "experiments/simpleclick/tiny.yaml"],
    "adaptiveclick": ["experiments/adaptiveclick/_base.yaml", "experiments/adaptiveclick/tiny.yaml"],
    "gpcis": ["experiments/gpcis/_base.yaml", "experiments/gpcis/tiny.yaml"],
    "cplot": ["experiments/cplot/_base.yaml", "experiments/cplot/tiny.yaml"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_tiny_model_learns(name, tmp_path, monkeypatch):
    if not all((ROOT / c).exists() for c in RUNS[name]):
        pytest.skip(f"no tiny config for {name}")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "offline")
    root = tmp_path / name
    args = ["fit", *[a for c in RUNS[name] for a in ("--config", c)], f"--trainer.default_root_dir={root}",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    train_main(args)
    res = json.loads((root / "noc_final.json").read_text())
    before, after = res["before"]["synthetic"], res["after"]["synthetic"]
    assert after["noc"]["85"] <= before["noc"]["85"] - 1.0, (before["noc"], after["noc"])
    assert after["miou"][0] >= before["miou"][0] + 0.1, (before["miou"][0], after["miou"][0])
    assert (root / "checkpoints" / "last.ckpt").is_file()
