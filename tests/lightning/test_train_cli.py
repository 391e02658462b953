"""``iis-train`` before anything heavy: the machine check, one-line data errors, CPU runs of any recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

import iis.lightning.module
from iis.cli import preflight
from iis.cli.train import _cli_class, build_cli, main

ROOT = Path(__file__).resolve().parents[2]
CPU = ["--config", "experiments/trainer/cpu.yaml"]


@pytest.fixture
def repo(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(preflight, "count_gpus", lambda: 0)  # a CPU-only machine, also where GPUs exist
    monkeypatch.delenv("MAKELEVEL", raising=False)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model gets built: the checks must come first."""
    def refuse(*a, **k):
        raise AssertionError("a model was built before the recipe was checked")
    monkeypatch.setattr(iis.lightning.module, "create_model", refuse)


def _fails(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iis-train: error: "), err
    return err[0]


def test_paper_recipe_on_a_cpu_machine_without_data_says_what_is_missing(repo, no_model, capsys, monkeypatch):
    monkeypatch.setenv("MAKELEVEL", "1")  # as started by `make train METHOD=adaptiveclick`
    err = _fails(capsys, ["fit", "--config", "experiments/adaptiveclick/default.yaml"])
    assert "experiments/adaptiveclick/default.yaml needs 4 GPUs (found none" in err
    assert "--trainer.accelerator cpu --trainer.devices 1" in err
    assert "data.root: COCO+LVIS" in err and "iis-data prepare cocolvis" in err
    assert "model.init_args.pretrained: MAE ViT-B/16 weights (mae_pretrain_vit_base.pth" in err and "`none`" in err
    assert err.endswith("Runs here: make train METHOD=adaptiveclick EXP=tiny (a tiny model on synthetic data, CPU, "
                        "minutes)")


def test_fewer_gpus_than_the_recipe(repo, no_model, capsys, monkeypatch):
    monkeypatch.setattr(preflight, "count_gpus", lambda: 1)
    err = _fails(capsys, ["fit", "--config", "experiments/cplot/default.yaml"])
    assert "needs 4 GPUs (found 1; --trainer.devices 1 uses them; data.batch_size is per device)" in err


def test_direct_call_suggests_the_direct_command(repo, no_model, capsys):
    err = _fails(capsys, ["fit", "--config", "experiments/simpleclick/vit_base_sbd.yaml"])
    assert "Runs here: iis-train fit --config experiments/simpleclick/tiny.yaml" in err


@pytest.mark.parametrize("extra, expected", [
    ([], "needs data.root: SBD (an SBD download's benchmark_RELEASE/dataset folder, checked with "
         "`iis-data prepare sbd --root DIR`)"),
    (["--data.root", "/no/such/folder"], "needs data.root /no/such/folder: no such folder; expected SBD"),
    (["--data.source", "sbdd"], "data.source: 'sbdd' is not one of coco_json, cocolvis, folder, sbd, synthetic"),
])
def test_data_errors_are_one_line(repo, no_model, capsys, extra, expected):
    err = _fails(capsys, ["fit", "--config", "experiments/gpcis/default.yaml", *CPU,
                          "--model.init_args.pretrained", "none", *extra])
    assert expected in err
    if "source" not in " ".join(extra):
        assert err.endswith("Runs here: iis-train fit --config experiments/gpcis/tiny.yaml (a tiny model on synthetic "
                            "data, CPU, minutes)")


def test_unprepared_data_folder_is_one_line_before_the_model_is_built(repo, no_model, capsys, tmp_path):
    err = _fails(capsys, ["fit", "--config", "experiments/gpcis/default.yaml", *CPU, "--model.init_args.pretrained",
                          "none", "--data.root", str(tmp_path), f"--trainer.default_root_dir={tmp_path / 'run'}"])
    assert f"data.root {tmp_path}: SBDTrain: split file not found: {tmp_path}/train.txt" in err
    assert "iis-data prepare sbd --root DIR" in err
    assert not (tmp_path / "run").exists()


def test_missing_pretrained_file(repo, no_model, capsys, tmp_path):
    err = _fails(capsys, ["fit", "--config", "experiments/cplot/vit_base_sbd.yaml", *CPU, "--data.root",
                          str(tmp_path), "--model.init_args.pretrained", str(tmp_path / "mae.pth")])
    assert f"model.init_args.pretrained {tmp_path / 'mae.pth'}: no such file" in err


def test_any_recipe_runs_on_one_cpu(repo, tmp_path, capsys):
    """--trainer.accelerator cpu --trainer.devices 1 on a DDP + sync-BN recipe: single-process settings."""
    cls = _cli_class()

    class Parse(cls):
        def instantiate_classes(self):
            pass

    cli = build_cli(["--config", "experiments/gpcis/hrnet18s_sbd.yaml", "--trainer.accelerator", "cpu",
                     "--trainer.devices", "1", "--model.init_args.pretrained", "none", "--data.root", str(tmp_path)],
                    cli_class=Parse, run=False, save_config_callback=None)
    assert cli.config.trainer.strategy == "auto" and cli.config.trainer.sync_batchnorm is False
    assert "one device, so strategy auto and sync_batchnorm false" in capsys.readouterr().err
    assert cli.config.trainer.default_root_dir == "runs/gpcis/hrnet18s_sbd"


def test_explicit_none_trains_from_scratch(repo, tmp_path):
    cls = _cli_class()

    class Parse(cls):
        def instantiate_classes(self):
            pass

    cli = build_cli(["--config", "experiments/simpleclick/default.yaml", *CPU, "--data.root", str(tmp_path),
                     "--model.init_args.pretrained", "none"], cli_class=Parse, run=False, save_config_callback=None)
    assert cli.config.model.init_args.pretrained == "none"
    assert cli.config.trainer.default_root_dir == "runs/simpleclick/default+cpu"
