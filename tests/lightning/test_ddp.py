"""DDP on 2 CPU processes (gloo): exact metric aggregation and a short fit with the eval callback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from iis.core.predictor import ModelPredictor
from iis.core.protocol import get_protocol
from iis.data import get_dataset
from iis.eval.runner import evaluate_dataset, summarize_instances
from iis.lightning.callbacks import gather_records
from iis.models.registry import create_model

ROOT = Path(__file__).resolve().parents[2]
N = 5  # odd on purpose: ranks get 3 and 2 instances, with no padding duplicates allowed


def _evaluate(indices):
    torch.manual_seed(0)
    model = create_model("simpleclick_vit_test")
    proto = get_protocol("plain").with_options(max_clicks=3, target_iou=1.01)
    ds = get_dataset("synthetic")
    return evaluate_dataset(ModelPredictor(model, proto), ds, proto, indices=indices).instances, proto


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        records, proto = _evaluate(range(rank, N, world))
        gathered = gather_records(records)
        if rank == 0:
            Path(out).write_text(json.dumps({"records": gathered, "summary": summarize_instances(gathered, proto)}))
    finally:
        dist.destroy_process_group()


def test_gather_counts_each_instance_once_and_matches_single_process(tmp_path):
    out = tmp_path / "ddp.json"
    mp.spawn(_worker, args=(2, 29517, str(out)), nprocs=2, join=True)
    got = json.loads(out.read_text())
    single, proto = _evaluate(range(N))
    assert sorted(r["id"] for r in got["records"]) == sorted(r["id"] for r in single)
    expected = summarize_instances(sorted(single, key=lambda r: r["id"]), proto)
    for key in ("num_instances", "noc", "nof", "miou", "noic"):
        assert got["summary"][key] == pytest.approx(expected[key]), key


def test_ddp_fit_two_cpu_processes(tmp_path):
    root = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "iis.cli.train", "fit", "--config", "experiments/quickstart.yaml",
           f"--trainer.default_root_dir={root}", "--trainer.strategy=ddp", "--trainer.devices=2",
           "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.logger=false",
           "--trainer.enable_progress_bar=false", "--data.batch_size=2", "--data.num_workers=0",
           "--data.epoch_len=8", "--trainer.callbacks=[]",
           "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.save_last=true",
           "--trainer.callbacks.save_top_k=0",
           "--trainer.callbacks+=iis.lightning.callbacks.InteractiveEvaluation",
           "--trainer.callbacks.datasets=[synthetic]", "--trainer.callbacks.protocol=plain",
           f"--trainer.callbacks.limit={N}", "--trainer.callbacks.max_clicks=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((root / "noc_final.json").read_text())["after"]["synthetic"]
    assert final["num_instances"] == N
    # the DDP-aggregated numbers equal a single-process evaluation of the saved weights
    from iis.cli.eval import main as eval_main

    out = tmp_path / "eval"
    # same intra-op thread count as the ranks (OMP_NUM_THREADS=1): a different CPU reduction order can
    # flip a pixel sitting at the threshold, which is float rounding, not an aggregation error
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert eval_main(["--ckpt", str(root / "checkpoints" / "last.ckpt"), "--datasets", "synthetic", "--limit",
                          str(N), "--max-clicks", "3", "--iou-analysis", "--out", str(out), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads((out / "results.json").read_text())["datasets"]["synthetic"]
    assert res["noc"] == final["noc"] and res["miou"] == pytest.approx(final["miou"])
