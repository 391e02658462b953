"""``iis-train fit`` on bad input: exit 2, one stderr line ``iis-train: error: ...`` naming the argument, no
traceback, and nothing left behind (no run directory is created for a command that is refused).

The table runs through ``main()`` in the default suite (seconds) and through the real console script in a
subprocess in the slow suite (each start imports Lightning: ~15 s)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iis.cli import preflight
from iis.cli.train import main

ROOT = Path(__file__).resolve().parents[2]
EXP = ROOT / "experiments"
Q = ["--config", str(EXP / "quickstart.yaml")]
SBD = ["--config", str(EXP / "data" / "sbd.yaml"), "--data.source_kwargs={}"]
FOLDER = ["--config", str(EXP / "data" / "folder.yaml"), "--data.source_kwargs={}"]


def _files(tmp: Path) -> None:
    (tmp / "empty_sbd").mkdir()
    for sub in ("images", "masks"):
        (tmp / "empty_folder" / sub).mkdir(parents=True)
    (tmp / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"weight": torch.zeros(2)}, tmp / "weights.pth")
    torch.save({"state_dict": {}, "optimizer_states": [], "loops": {}, "hyper_parameters": {"model": "ritm_hrnet_test"}},
               tmp / "other_model.ckpt")
    (tmp / "used").mkdir()
    (tmp / "used" / "config.yaml").write_text("seed_everything: 0\n")


# (case id, arguments after `fit`, expected part of the one line); paths are relative to the test's folder
CASES = [
    ("missing-config", ["--config", "nope.yaml"], "--config nope.yaml: no such file"),
    ("unknown-source", [*Q, "--data.source", "sbdd"], "data.source: 'sbdd' is not one of coco_json, cocolvis"),
    ("no-data-root", [*Q, *SBD], "needs data.root: SBD (an SBD download's benchmark_RELEASE/dataset folder"),
    ("missing-data-root", [*Q, *SBD, "--data.root", "no_such_dir"], "data.root no_such_dir: no such folder"),
    ("empty-sbd", [*Q, *SBD, "--data.root", "empty_sbd"], "data.root empty_sbd: SBDTrain: split file not found"),
    ("empty-folder", [*Q, *FOLDER, "--data.root", "empty_folder"],
     "data.root empty_folder: FolderTrain: no image/mask pairs"),
    ("unknown-model-option", [*Q, "--model.init_args.model_kwargs={bogus: 1}"],
     "model.init_args.model_kwargs: unknown option 'bogus'; accepted: head_dropout, img_size, with_prev_mask"),
    ("unknown-trainer-option", [*Q, "--trainer.bogus=1"], "trainer.bogus"),
    ("ckpt-last-without-run", [*Q, "--ckpt_path", "last"],
     "--ckpt_path last: no checkpoint to resume in runs/quickstart (no run yet)"),
    ("ckpt-missing", [*Q, "--ckpt_path", "nope.ckpt"], "--ckpt_path nope.ckpt: no such file"),
    ("ckpt-text-file", [*Q, "--ckpt_path", "notes.txt"],
     "--ckpt_path notes.txt: not a training checkpoint of iis-train (not a torch checkpoint file)"),
    ("ckpt-weights-only", [*Q, "--ckpt_path", "weights.pth"],
     "--ckpt_path weights.pth: not a training checkpoint of iis-train (no state_dict, optimizer_states, loops"),
    ("ckpt-of-another-model", [*Q, "--ckpt_path", "other_model.ckpt"],
     "--ckpt_path other_model.ckpt: trained model 'ritm_hrnet_test', but this config builds 'simpleclick_vit_nano'"),
    ("fresh-run-into-used-dir", [*Q, "--trainer.default_root_dir", "used"],
     "trainer.default_root_dir used holds a run already; resume it with --ckpt_path last"),
]


def _check(tmp: Path, rc: int, stderr: str, expected: str) -> None:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert rc == 2, (rc, stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("iis-train: error: "), lines
    assert expected in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not (tmp / "runs").exists() or not any((tmp / "runs").rglob("version_*")), "a refused run left a folder"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(preflight, "count_gpus", lambda: 0)
    return tmp_path


@pytest.mark.parametrize("case, args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(folder, capfd, case, args, expected):
    with pytest.raises(SystemExit) as e:
        main(["fit", *args])
    _check(folder, e.value.code, capfd.readouterr().err, expected)


@pytest.mark.slow
@pytest.mark.parametrize("case, args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_through_the_console_script(folder, case, args, expected):
    exe = Path(sys.executable).with_name("iis-train")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "iis.cli.train"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([*cmd, "fit", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    _check(folder, proc.returncode, proc.stderr, expected)
