"""The fine-tuning recipe on your own folder (iis/methods/custom): wiring on tiny inputs, seconds.

The real-data learning check (ImageNet encoder, real images, improves validation mIoU@1) is
tests/slow/test_custom_learning.py; the measured results are benchmarks/custom_data.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from iis.cli.data import main as data_main
from iis.cli.train import main as train_main
from iis.core.errors import IISError
from iis.eval.loading import build_method
from iis.methods.custom.callbacks import FolderEvaluation
from iis.methods.custom.model import effnet_lite0_weights
from iis.methods.custom.module import Custom

ROOT = Path(__file__).resolve().parents[2]


def _folder(d: Path, n: int = 5, size: int = 48, ignore: bool = False) -> Path:
    """n images with one bright square object each; masks 0/255 (optionally a 128 ignore band)."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(4, size // 2, 2)
        m[y:y + 16, x:x + 16] = 255
        img[m > 0] += 150
        if ignore:
            m[y - 1, x:x + 16] = 128
        cv2.imwrite(str(d / "images" / f"im{i}.png"), img)
        cv2.imwrite(str(d / "masks" / f"im{i}.png"), m)
    return d


def test_freeze_backbone_and_backbone_lr():
    m = Custom(model="ritm_effnet_test", freeze_backbone=True, backbone_lr_mult=0.25)
    assert m.hparams.lr_mult == {"backbone.": 0.25}
    assert not any(p.requires_grad for p in m.model.backbone.parameters())
    assert all(p.requires_grad for n, p in m.model.named_parameters() if not n.startswith("backbone."))
    m.train()
    assert not m.model.backbone.training and m.model.classifier.training  # frozen BN keeps its statistics
    opt = m.configure_optimizers()
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(
        1 for p in m.model.parameters() if p.requires_grad)
    free = Custom(model="ritm_effnet_test", lr=1e-3)
    lrs = sorted(g["lr"] for g in free.configure_optimizers().param_groups)
    assert lrs == pytest.approx([1e-4, 1e-3])  # backbone x0.1 (the default rule), the rest x1
    with pytest.raises(IISError, match="no parameter of 'ritm_effnet_test' starts with it"):
        Custom(model="ritm_effnet_test", freeze_backbone=True, backbone_prefix="encoder")


def test_other_models_and_weights(tmp_path):
    # any registered model: SimpleClick's encoder is `encoder`
    sc = Custom(model="simpleclick_vit_test", backbone_prefix="encoder", pretrained="none")
    assert sc.hparams.lr_mult == {"encoder.": 0.1}
    src = Custom(model="ritm_effnet_test")
    with torch.no_grad():
        for p in src.model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ckpt = {"state_dict": src.state_dict()}
    src.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "last.ckpt")
    dst = Custom(model="ritm_effnet_test", weights=str(tmp_path / "last.ckpt"))
    for (n, a), b in zip(src.model.state_dict().items(), dst.model.state_dict().values()):
        assert torch.equal(a, b), n
    with pytest.raises(IISError, match="does not fit model 'ritm_effnet_test'"):
        Custom(model="ritm_effnet_test", model_kwargs={"fpn_dim": 16}, weights=str(tmp_path / "last.ckpt"))


def test_imagenet_weights_come_from_the_package():
    from iis.models.registry import create_model

    sd = torch.load(effnet_lite0_weights(), map_location="cpu", weights_only=True)
    first = next(iter(sd.values()))
    assert torch.equal(create_model("ritm_effnet_lite0").backbone.conv_stem.weight, first)
    assert not torch.equal(create_model("ritm_effnet_lite0", imagenet=False).backbone.conv_stem.weight, first)


class _DM:
    def __init__(self, root, **source_kwargs):
        self.hparams = {"source": "folder", "root": str(root), "source_kwargs": source_kwargs}


class _Trainer:
    def __init__(self, dm):
        self.datamodule = dm


def test_folder_evaluation_takes_the_training_folder(tmp_path):
    d = _folder(tmp_path / "d")
    cb = FolderEvaluation()
    cb._resolve(_Trainer(_DM(d, val_fraction=0.4, split_seed=3, ignore_value=128)))
    assert cb.data_root == str(d)
    assert cb.dataset_kwargs == {"folder": {"ignore_value": 128, "split": "val", "val_fraction": 0.4, "split_seed": 3}}
    v = FolderEvaluation(val_root=str(tmp_path / "val"))
    v._resolve(_Trainer(_DM(d, mode="instances")))
    assert v.data_root == str(tmp_path / "val") and v.dataset_kwargs == {"folder": {"mode": "instances"}}
    with pytest.raises(IISError, match="val_fraction"):
        FolderEvaluation()._resolve(_Trainer(_DM(d)))


def test_recipe_trains_on_a_folder_and_its_checkpoint_evaluates(tmp_path, monkeypatch, capsys):
    """`make train METHOD=custom EXP=finetune ARGS="--data.root DIR"` at toy scale (tiny model, 2 steps)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("IIS_CACHE_DIR", str(tmp_path / "cache"))
    d = _folder(tmp_path / "mine", ignore=True)
    assert data_main(["check", "--datasets", "folder", "--data-root", str(d), "--dataset-arg", "ignore_value=128"]) == 0
    assert data_main(["check", "--train-source", "folder", "--root", str(d), "--dataset-arg", "ignore_value=128",
                      "--dataset-arg", "val_fraction=0.4"]) == 0
    out = tmp_path / "out"
    train_main(["fit", "--config", "experiments/custom/finetune.yaml", "--data.root", str(d),
                "--data.source_kwargs", "{val_fraction: 0.4, ignore_value: 128}",
                f"--trainer.default_root_dir={out}", "--trainer.max_steps=2", "--trainer.logger=false",
                "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                "--model.init_args.model=ritm_effnet_test", "--model.init_args.freeze_backbone=true",
                "--data.crop_size=[32,32]", "--data.batch_size=2", "--data.epoch_len=4",
                "--trainer.callbacks.init_args.max_clicks=2"])
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    res = json.loads((out / "noc_final.json").read_text())
    assert res["before"]["folder"]["num_instances"] == res["after"]["folder"]["num_instances"] == 2  # 40% of 5
    built = build_method(ckpt=ckpt)
    assert built.default_protocol == "ritm"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["iis"]["method"] == "Custom" and saved["iis"]["model"]["name"] == "ritm_effnet_test"
    # the click-response diagnostic the README cites reads the same checkpoint
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from click_response import main as probe_main

    capsys.readouterr()
    assert probe_main([str(ckpt), "--datasets", "folder", "--data-root", str(d), "--limit", "2", "--clicks", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("probability under positive clicks") == 2 and "im" in printed
    # a mistake in the folder is one line at startup
    (d / "masks" / "im0.png").unlink()
    with pytest.raises(SystemExit) as e:
        train_main(["fit", "--config", "experiments/custom/finetune.yaml", "--data.root", str(d),
                    f"--trainer.default_root_dir={tmp_path / 'out2'}", "--model.init_args.model=ritm_effnet_test"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("iis-train: error: ") and "im0" in err


def test_click_similarity_maps():
    """Each pixel's best cosine similarity to the positive / negative clicks' embeddings; -1 without clicks of a
    sign; padding rows change nothing; a click reads its own cell (similarity 1 there)."""
    from iis.methods.custom.model import click_similarity

    torch.manual_seed(0)
    emb = torch.randn(2, 8, 6, 5)  # stride 4 over a 24 x 20 input
    x, y = 4 * 3 + 1.5, 4 * 2 + 1.5  # the centre of cell (row 2, col 3)
    clicks = torch.tensor([[[x, y, 1.0]], [[x, y, 0.0]]])
    sim = click_similarity(emb, clicks, (24, 20))
    assert sim.shape == (2, 2, 6, 5)
    assert torch.allclose(sim[0, 0, 2, 3], torch.tensor(1.0)) and torch.allclose(sim[1, 1, 2, 3], torch.tensor(1.0))
    assert (sim[0, 1] == -1).all() and (sim[1, 0] == -1).all()
    assert sim[0, 0].max() <= 1 + 1e-6 and sim[0, 0].min() >= -1 - 1e-6
    padded = torch.cat([clicks, torch.full((2, 3, 3), -1.0)], 1)
    assert torch.equal(click_similarity(emb, padded, (24, 20)), sim)
    assert (click_similarity(emb, clicks[:, :0], (24, 20)) == -1).all()
    # a second positive click can only raise the positive map
    two = torch.tensor([[[x, y, 1.0], [1.5, 1.5, 1.0]]] * 2)
    assert (click_similarity(emb, two, (24, 20))[0, 0] >= sim[0, 0] - 1e-6).all()
