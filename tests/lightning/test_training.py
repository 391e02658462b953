"""Training engine: iterative click simulation, fit + callback + W&B offline, resume, checkpoint round trip."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from iis.cli.eval import main as eval_main
from iis.cli.train import main as train_main
from iis.core.errors import IISError
from iis.data.train import MultiPointSampler
from iis.lightning.module import IISModule


def _batch(b=2, s=64, max_num_points=24):
    img = torch.rand(b, 3, s, s)
    mask = torch.zeros(b, 1, s, s)
    mask[:, :, 16:48, 16:48] = 1
    pts = torch.full((b, MultiPointSampler(max_num_points=max_num_points).num_rows, 3), -1.0)
    pts[:, 0] = torch.tensor([32.0, 32.0, 1.0])
    return {"image": img, "points": pts, "mask": mask}


@pytest.mark.parametrize("slots", [24, 12])
def test_simulated_clicks_fill_tail_slots(slots):
    torch.manual_seed(0)
    m = IISModule(model="simpleclick_vit_test")
    b = _batch(max_num_points=slots)
    pts, prev = m.simulate_clicks(b["image"], b["points"], b["mask"], 3, np.random.default_rng(0))
    assert prev.shape == (2, 1, 64, 64) and 0 <= prev.min() and prev.max() <= 1
    changed = (pts != b["points"]).any(-1)
    # only slots N-i (positive) or 2N-i (negative), i = 1..3, may be written (N = the sampler's max_num_points)
    allowed = torch.zeros(2 * slots, dtype=torch.bool)
    allowed[[slots - 1, slots - 2, slots - 3, 2 * slots - 1, 2 * slots - 2, 2 * slots - 3]] = True
    assert changed.any() and not (changed & ~allowed).any()
    for row in pts[changed]:
        x, y, lab = row.tolist()
        assert b["mask"][0, 0, int(y), int(x)].item() == lab  # a click agrees with the GT at its pixel
    assert m.model.training  # restored to train mode
    assert torch.equal(m.simulate_clicks(b["image"], b["points"], b["mask"], 0, np.random.default_rng(0))[0],
                       b["points"])


def test_more_simulated_clicks_than_slots_is_one_clear_error():
    m = IISModule(model="simpleclick_vit_test", max_num_next_clicks=3)
    with pytest.raises(IISError, match=r"max_num_next_clicks=3 .* 2 click slots per sign"):
        m.training_step(_batch(max_num_points=2), 0)  # refused whatever the step's random draw


def test_protocol_and_pretrained_resolution(tmp_path):
    m = IISModule(model="gpcis_test")
    assert m.hparams.protocol == m.model.default_protocol == "gpcis"
    assert IISModule(model="gpcis_test", protocol="plain").hparams.protocol == "plain"
    with pytest.raises(IISError, match="unknown preset 'plian'"):
        IISModule(model="gpcis_test", protocol="plian")
    with pytest.raises(IISError, match="model 'simpleclick_vit_test': unknown option 'head_dropuot'"):
        IISModule(model="simpleclick_vit_test", model_kwargs={"head_dropuot": 0.1})
    assert "pretrained" not in IISModule(model="simpleclick_vit_test", pretrained="none").model.iis_spec["kwargs"]
    with pytest.raises(FileNotFoundError):  # a given path reaches the builder, which loads it
        IISModule(model="gpcis_test", pretrained=str(tmp_path / "missing.pth"))


def test_training_step_and_lr_groups():
    m = IISModule(model="simpleclick_vit_test", lr=1e-3, lr_mult={"encoder": 0.1}, milestones=[2])
    opt = m.configure_optimizers()["optimizer"]
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([1e-4, 1e-3])
    loss = m.training_step(_batch(), 0)
    loss.backward()
    assert torch.isfinite(loss)


def _tiny_args(root: Path, epochs: int, extra=()):
    return ["fit", "--config", "experiments/quickstart.yaml",
            f"--trainer.default_root_dir={root}", f"--trainer.max_epochs={epochs}",
            "--trainer.limit_train_batches=2", "--trainer.logger.init_args.save_dir=null", "--trainer.log_every_n_steps=1",
            "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
            "--data.batch_size=4", "--data.num_workers=0", "--data.epoch_len=8",
            "--model.init_args.model_kwargs={'head_dropout': 0.1}", *extra]


def _callbacks_args(root):
    return ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.save_last=true", "--trainer.callbacks.save_top_k=0",
            "--trainer.callbacks+=iis.lightning.callbacks.InteractiveEvaluation",
            "--trainer.callbacks.datasets=[synthetic]", "--trainer.callbacks.protocol=plain",
            "--trainer.callbacks.limit=3", "--trainer.callbacks.max_clicks=3", "--trainer.callbacks.every_n_epochs=1"]


@pytest.fixture
def chdir_repo(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_fit_logs_to_wandb_offline_and_ckpt_evaluates(tmp_path, chdir_repo, capsys, monkeypatch):
    from iis.lightning.loggers import IISWandbLogger

    logged: set[str] = set()
    log_metrics = IISWandbLogger.log_metrics

    def spy(self, metrics, step=None):
        logged.update(metrics)
        return log_metrics(self, metrics, step)

    monkeypatch.setattr(IISWandbLogger, "log_metrics", spy)
    root = tmp_path / "run"
    train_main(_tiny_args(root, 1, _callbacks_args(root)))
    ckpt = root / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (root / "config.yaml").is_file()
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))  # an offline run, syncable later
    # what reached the W&B logger (the offline record file itself is written by wandb-core, which under load
    # may close before the last rows are on disk, so its bytes are not a reliable check)
    for key in ("train/loss_step", "train/iou", "val/synthetic/noc85", "val/synthetic/noc90", "val/synthetic/miou@1",
                "val/synthetic/overlays"):
        assert key in logged, (key, sorted(logged))
    # ... and the offline record file gets them too (W&B's service process may still be flushing when
    # finish() returns on a loaded machine, so wait, bounded)
    keys = (b"train/loss", b"train/iou", b"val/synthetic/noc85", b"val/synthetic/noc90", b"val/synthetic/miou@1")
    deadline = time.monotonic() + 60
    while True:
        data = b"".join(p.read_bytes() for p in runs[0].glob("run-*.wandb"))
        missing = [k for k in keys if k not in data]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, missing
    final = json.loads((root / "noc_final.json").read_text())["after"]["synthetic"]
    # the checkpoint alone is enough for iis-eval, and gives the callback's numbers exactly
    out = tmp_path / "eval"
    assert eval_main(["--ckpt", str(ckpt), "--datasets", "synthetic", "--limit", "3", "--max-clicks", "3",
                      "--iou-analysis", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())["datasets"]["synthetic"]
    assert res["protocol"]["name"] == "plain"
    assert res["noc"] == final["noc"] and res["miou"] == pytest.approx(final["miou"])


@pytest.mark.parametrize("callback", [
    ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.save_last=true",
     "--trainer.callbacks.save_top_k=0"],  # last.ckpt at the end of training only
    ["--trainer.callbacks+=iis.lightning.callbacks.RunCheckpoint",  # every epoch end (and step 1): loader state
     "--trainer.callbacks.last_every_n_train_steps=1"],
], ids=["model-checkpoint", "run-checkpoint"])
def test_resume_continues_identically(tmp_path, chdir_repo, callback):
    """From an end-of-epoch checkpoint (the mid-epoch case: tests/lightning/test_resume.py)."""
    a, b = tmp_path / "a", tmp_path / "b"
    ck = [*callback, "--trainer.logger=false"]
    train_main(_tiny_args(a, 2, ck))
    train_main(_tiny_args(b, 1, ck))
    train_main(_tiny_args(b, 2, ck) + ["--ckpt_path", "last"])
    sa = torch.load(a / "checkpoints" / "last.ckpt", weights_only=False)
    sb = torch.load(b / "checkpoints" / "last.ckpt", weights_only=False)
    assert sa["epoch"] == sb["epoch"] and sa["global_step"] == sb["global_step"] == 4
    for k, v in sa["state_dict"].items():
        assert torch.equal(v, sb["state_dict"][k]), k
    ga, gb = sa["optimizer_states"][0]["state"], sb["optimizer_states"][0]["state"]
    assert all(torch.equal(ga[i]["exp_avg"], gb[i]["exp_avg"]) for i in ga)
