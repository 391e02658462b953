"""A quickstart run killed mid-epoch (``kill -9``) and resumed with ``--ckpt_path last`` ends with the weights of
an uninterrupted run, bit for bit; fresh runs get their own ``version_N`` directory.

The runs are the real console script on ``experiments/quickstart.yaml``, shrunk by flags to seconds of CPU
(a 3-epoch run of 8 batches of 4 synthetic 96-px items, ``last.ckpt`` every 3 steps, no W&B, no evaluation).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
EPOCHS, BATCHES, EVERY = 3, 8, 3  # 24 steps; last.ckpt at steps 3, 6, 8, 9, 12, ...


def _script() -> list[str]:
    exe = Path(sys.executable).with_name("iis-train")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "iis.cli.train"]


def _cmd(*extra: str, workers: int = 0) -> list[str]:
    return [*_script(), "fit", "--config", str(QUICKSTART), f"--trainer.max_epochs={EPOCHS}",
            f"--data.epoch_len={4 * BATCHES}", "--data.batch_size=4", f"--data.num_workers={workers}",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.callbacks=[]", "--trainer.callbacks+=iis.lightning.callbacks.RunCheckpoint",
            f"--trainer.callbacks.last_every_n_train_steps={EVERY}", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def _run(cwd: Path, *extra: str, workers: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(*extra, workers=workers), cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _kill_mid_epoch(cwd: Path, last: Path, workers: int) -> dict:
    """Start a run, ``kill -9`` it as soon as a mid-epoch last.ckpt exists; returns that checkpoint."""
    proc = subprocess.Popen(_cmd(workers=workers), cwd=cwd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file():
                try:
                    ck = _load(last)  # replaced atomically: never a partial file
                except Exception as e:  # pragma: no cover - a torn checkpoint is exactly the failure
                    pytest.fail(f"last.ckpt unreadable while the run writes it: {e}")
                if ck["global_step"] % BATCHES:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    return _load(last)
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    pytest.fail(f"the run ended (rc {proc.returncode}) before a mid-epoch checkpoint was seen: "
                f"{(proc.stderr.read() if proc.stderr else '')[-2000:]}")


def _same_training_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == EPOCHS * BATCHES and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k, v in a["state_dict"].items() if not torch.equal(v, b["state_dict"][k])]
    assert not differ, f"{len(differ)}/{len(a['state_dict'])} tensors differ, e.g. {differ[:3]}"
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[i][k], sb[i][k]), (i, k)


def _check_kill_and_resume(tmp_path: Path, workers: int) -> None:
    runs = tmp_path / "runs" / "quickstart"
    _run(tmp_path, workers=workers)  # uninterrupted: version_0
    full = _load(runs / "version_0" / "checkpoints" / "last.ckpt")

    killed = _kill_mid_epoch(tmp_path, runs / "version_1" / "checkpoints" / "last.ckpt", workers)
    assert killed["global_step"] % BATCHES and killed["global_step"] < EPOCHS * BATCHES  # really mid-epoch
    state = killed["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert state == {"epoch": killed["global_step"] // BATCHES, "batches": killed["global_step"] % BATCHES}
    assert (runs / "latest").resolve() == (runs / "version_1").resolve()

    proc = _run(tmp_path, "--ckpt_path", "last", workers=workers)  # resumes version_1 in place
    assert "dataloader is not resumable" not in proc.stderr
    assert sorted(p.name for p in runs.iterdir()) == ["latest", "version_0", "version_1"]
    assert sorted(p.name for p in (runs / "version_1" / "checkpoints").iterdir()) == ["last.ckpt"]
    config = (runs / "version_1" / "config.yaml").read_text()  # the resumed run's, beside its last.ckpt
    assert "weights_only: true" in config and "ckpt_path: runs/quickstart/version_1/checkpoints/last.ckpt" in config
    _same_training_state(full, _load(runs / "latest" / "checkpoints" / "last.ckpt"))


def test_kill_9_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    _check_kill_and_resume(tmp_path, workers=0)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_with_loader_workers(tmp_path):
    _check_kill_and_resume(tmp_path, workers=2)


def test_ckpt_path_last_without_a_checkpoint_is_one_line(tmp_path):
    proc = subprocess.run(_cmd("--ckpt_path", "last"), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-2000:]
    assert err[0].startswith("iis-train: error: --ckpt_path last: no checkpoint to resume in runs/quickstart")
    assert not (tmp_path / "runs" / "quickstart").exists()  # nothing created by a refused command


# -- run directories and atomic checkpoints, without training -------------------------------------------------
def test_fresh_runs_get_versions_and_latest_follows(tmp_path, monkeypatch):
    from iis.cli import runs

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    root = tmp_path / "runs" / "quickstart"
    for n in range(2):
        run, ckpt, fresh = runs.resolve_run(str(root), None, versioned=True)
        assert (run, ckpt, fresh) == (str(root / f"version_{n}"), None, True)
        runs.claim(Path(run))
        (Path(run) / "config.yaml").write_text("x\n")
        assert (root / "latest").resolve() == Path(run).resolve()
    with pytest.raises(runs.IISError, match="no checkpoints/last.ckpt there"):
        runs.resolve_run(str(root), "last", versioned=True)
    (root / "version_1" / "checkpoints").mkdir()
    (root / "version_1" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert runs.resolve_run(str(root), "last", versioned=True) == (
        str(root / "version_1"), str(root / "version_1" / "checkpoints" / "last.ckpt"), False)
    # an explicit directory is the run itself: resumable in place, a fresh run into it is refused
    assert runs.resolve_run(str(root / "version_1"), "last", versioned=False)[0] == str(root / "version_1")
    with pytest.raises(runs.IISError, match="holds a run already; resume it with --ckpt_path last"):
        runs.resolve_run(str(root / "version_0"), None, versioned=False)
    # a DDP rank started by Lightning takes the directory the first process chose
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(root / "version_0"))
    assert runs.resolve_run(str(root), None, versioned=True) == (str(root / "version_0"), None, False)


def test_a_kill_during_a_checkpoint_save_keeps_the_previous_last_ckpt(tmp_path):
    from types import SimpleNamespace

    from iis.lightning.callbacks import RunCheckpoint

    last = tmp_path / "last.ckpt"
    last.write_bytes(b"complete previous checkpoint")

    def dies_while_writing(path, weights_only=False):
        Path(path).write_bytes(b"half of a chec")
        raise KeyboardInterrupt  # as a kill would stop it: mid-write

    trainer = SimpleNamespace(save_checkpoint=dies_while_writing, is_global_zero=True, global_step=7, loggers=[],
                              strategy=SimpleNamespace(barrier=lambda *a: None))
    cb = RunCheckpoint(last_every_n_train_steps=1, dirpath=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        cb._save_checkpoint(trainer, str(last))
    assert last.read_bytes() == b"complete previous checkpoint"

    trainer.save_checkpoint = lambda path, weights_only=False: Path(path).write_bytes(b"new checkpoint")
    cb._save_checkpoint(trainer, str(last))
    assert last.read_bytes() == b"new checkpoint" and not list(tmp_path.glob("*.tmp"))
