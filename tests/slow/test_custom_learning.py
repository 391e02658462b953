"""Slow: the fine-tuning recipe learns real segmentation on a few real images (CPU, minutes).

`make train METHOD=custom EXP=finetune` on 16 Berkeley images that are not in GrabCut (picked by content, as
benchmarks/custom_data.py does), 60 steps of ritm_effnet_lite0 from its ImageNet encoder, at small crops; its
validation split (4 held-out images, the recipe's FolderEvaluation, plain protocol) must gain mIoU@1.
"""

import json
import os
from pathlib import Path

import pytest

from iis.cli.train import main as train_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_finetune_recipe_improves_validation_miou_on_real_images(data_root, tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from custom_data import overlap

    stems, matches = overlap(data_root)
    keep = [s for s in stems if s not in {b for b, _, _ in matches}][:16]
    d = tmp_path / "mine"
    for sub, ext in (("images", "jpg"), ("masks", "png")):
        (d / sub).mkdir(parents=True)
        for s in keep:
            os.symlink(data_root / "Berkeley" / sub / f"{s}.{ext}", d / sub / f"{s}.{ext}")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("IIS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    train_main(["fit", "--config", "experiments/custom/finetune.yaml", "--data.root", str(d),
                "--data.source_kwargs", "{val_fraction: 0.25}", f"--trainer.default_root_dir={out}",
                "--trainer.max_steps=60", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                "--data.crop_size=[160,160]", "--data.batch_size=4", "--data.epoch_len=80",
                "--trainer.callbacks.init_args.max_clicks=3"])
    res = json.loads((out / "noc_final.json").read_text())
    before, after = res["before"]["folder"], res["after"]["folder"]
    assert before["num_instances"] == after["num_instances"] == 4
    assert after["miou"][0] >= before["miou"][0] + 0.1, (before["miou"], after["miou"])
    assert (out / "checkpoints" / "last.ckpt").is_file()
