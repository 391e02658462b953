"""``iis-eval --devices N`` on CPU: exact sharding and gather (same records as one device on real GrabCut),
resume after ``kill -9`` of the process group, refused rank logs, bad input in one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iis.cli.eval import main
from iis.core.protocol import get_protocol
from iis.eval.distributed import WorkerError, cpu_cores, merge_shards, rank_log_path
from iis.eval.runner import DatasetResult

ROOT = Path(__file__).resolve().parents[2]
DATA = os.environ.get("IIS_DATA_ROOT")
HAS_GRABCUT = bool(DATA) and (Path(DATA) / "GrabCut").is_dir()
needs_grabcut = pytest.mark.skipif(not HAS_GRABCUT, reason="real GrabCut not found under $IIS_DATA_ROOT")
needs_2_cores = pytest.mark.skipif(cpu_cores() < 2, reason="--devices 2 on CPU needs 2 cores")

LIMIT = 9  # odd: the ranks' shares differ in size (5 and 4), nothing may be padded
ARGS = ["--method", "simpleclick_vit_test", "--datasets", "grabcut", "--limit", str(LIMIT), "--max-clicks", "3",
        "--iou-analysis", "--quiet"]
TIMING = {"time", "spc", "latency", "latency_per_click", "run_seconds", "timings"}


def _eval(*argv):
    """``main`` with 1 torch thread, as each of 2 workers on 2 cores has (a kernel may round differently
    with another thread count)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(list(argv))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread_per_worker(monkeypatch):
    import iis.eval.distributed as dist

    monkeypatch.setattr(dist, "threads_per_worker", lambda devices: 1)


def _results(out):
    return json.loads((Path(out) / "results.json").read_text())


def _numbers(out):
    """results.json of grabcut without what timings change."""
    d = _results(out)["datasets"]["grabcut"]
    return {k: v for k, v in d.items() if k not in TIMING}


def _log(path):
    lines = Path(path).read_text().splitlines()
    return json.loads(lines[0])["header"], [json.loads(x) for x in lines[1:]]


def _err_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iis-eval: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One device, the numbers every multi-device run must reproduce. Saved weights: a randomly initialised
    model depends on the global RNG's state, which differs between this process and a fresh one."""
    if not HAS_GRABCUT:
        pytest.skip("real GrabCut not found under $IIS_DATA_ROOT")
    import torch

    from iis.models.registry import create_model

    tmp = tmp_path_factory.mktemp("one")
    torch.manual_seed(0)
    torch.save(create_model("simpleclick_vit_test").state_dict(), tmp / "w.pth")
    args = [*ARGS, "--weights", str(tmp / "w.pth")]
    assert _eval(*args, "--out", str(tmp / "out")) == 0
    return tmp / "out", args


@needs_grabcut
@needs_2_cores
def test_two_devices_give_the_records_of_one(reference, tmp_path):
    reference, args = reference
    out = tmp_path / "out"
    assert _eval(*args, "--out", str(out), "--devices", "2", "--vis", "3") == 0
    one, two = _numbers(reference), _numbers(out)
    assert json.dumps(two["instances"]) == json.dumps(one["instances"])  # byte-identical records, same order
    assert two == one  # and every number, the identity and the selection
    assert two["num_instances"] == LIMIT and two["log_records"] == LIMIT
    assert _results(out)["devices"] == 2 and _results(reference)["devices"] == 1
    ids = [r["id"] for r in one["instances"]]
    for rank in (0, 1):  # rank r holds exactly the instances i % 2 == r, each once, with its shard in the header
        header, recs = _log(rank_log_path(out / "instances" / "grabcut.jsonl", rank))
        assert [r["id"] for r in recs] == ids[rank::2]
        assert header["info"]["shard"] == {"rank": rank, "world_size": 2}
        assert header["identity"] == two["identity"]
    assert not (out / "instances" / "grabcut.jsonl").exists()
    assert len(list((out / "vis" / "grabcut").glob("*.png"))) == 3  # overlays written by both ranks


@needs_grabcut
@needs_2_cores
def test_a_killed_two_device_run_resumes(reference, tmp_path, capsys):
    reference, args = reference
    out = tmp_path / "out"
    logs = [rank_log_path(out / "instances" / "grabcut.jsonl", r) for r in (0, 1)]
    script = Path(sys.executable).parent / "iis-eval"  # the real console script (PYTHONPATH: this tree wins)
    cmd = [str(script) if script.exists() else sys.executable, *([] if script.exists() else ["-m", "iis.cli.eval"]),
           *args, "--out", str(out), "--devices", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # 1 thread per worker, as the reference
    p = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def logged():
        return sum(max(0, len(f.read_text().splitlines()) - 1) for f in logs if f.exists())

    try:
        deadline = time.monotonic() + 120
        while logged() < 3 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGKILL)  # the launcher and both workers at once
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert not (out / "results.json").exists(), "the run finished before it was killed; raise LIMIT"
    assert (out / ".iis-eval.lock").read_text().strip() == str(p.pid)  # the launcher held the --out lock
    before = {}
    for f in logs:
        lines = f.read_text().splitlines() if f.exists() else []
        for ln in lines[1:]:
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError:
                continue  # a torn last line: that instance is redone
            before[rec["id"]] = rec["timing"]
    assert 3 <= len(before) < LIMIT

    assert _eval(*args, "--out", str(out), "--devices", "2") == 0
    assert _numbers(out) == _numbers(reference)  # the same results as an uninterrupted run
    after = {}
    for f in logs:
        _, recs = _log(f)
        assert len({r["id"] for r in recs}) == len(recs)  # nothing logged twice
        after.update({r["id"]: r["timing"] for r in recs})
    assert len(after) == LIMIT
    assert all(after[i] == t for i, t in before.items())  # logged instances were not recomputed

    # a rank log of another world size is refused, naming the field; so is another protocol (by the runner)
    header, recs = _log(logs[1])
    header["info"]["shard"]["world_size"] = 3
    logs[1].write_text("\n".join(json.dumps(x) for x in [{"header": header}, *recs]) + "\n")
    capsys.readouterr()
    assert _eval(*args, "--out", str(out), "--devices", "2") == 2
    line = _err_line(capsys)
    assert "grabcut.rank1.jsonl: resume refused, shard.world_size: stored 3, now 2" in line and "--overwrite" in line
    logs[1].unlink()
    assert _eval(*args, "--max-clicks", "2", "--out", str(out), "--devices", "2") == 2
    assert "resume refused, protocol.max_clicks: stored 3, now 2" in _err_line(capsys)


def _args(tmp_path, *extra):
    return ["--method", "simpleclick_vit_test", "--datasets", "synthetic", "--limit", "2", "--max-clicks", "2",
            "--quiet", "--out", str(tmp_path / "out"), *extra]


@pytest.mark.parametrize("extra, expect", [
    (["--devices", "0"], "argument --devices: expected an integer >= 1, got 0"),
    (["--devices", "-2"], "argument --devices: expected an integer >= 1, got -2"),
    (["--devices", "two"], "argument --devices: expected an integer >= 1, got 'two'"),
    (["--devices", str(cpu_cores() + 1)], f"CPU core(s) available to this process; use --devices {cpu_cores()}"),
    (["--devices", "2", "--device", "mps"], "--device mps"),
])
def test_bad_devices_give_one_line(tmp_path, capsys, extra, expect):
    assert main(_args(tmp_path, *extra)) == 2
    assert expect in _err_line(capsys)
    assert not (tmp_path / "out").exists()


def test_more_gpus_than_present(tmp_path, capsys):
    import torch

    n = torch.cuda.device_count() + 1
    assert main(_args(tmp_path, "--device", "cuda", "--devices", str(n))) == 2
    line = _err_line(capsys)
    assert ("CUDA device(s) visible" in line) if torch.cuda.is_available() else ("no CUDA GPU" in line)
    assert main(_args(tmp_path, "--device", "cuda:0", "--devices", "2")) == 2
    line = _err_line(capsys)
    assert ("pass --device cuda (rank r uses cuda:r)" in line) if torch.cuda.is_available() else ("no CUDA" in line)


@needs_2_cores
def test_a_method_that_cannot_be_sent_is_refused(tmp_path, capsys, monkeypatch):
    import iis.cli.eval as cli
    from iis.eval.loading import build_method

    def build(args):
        built = build_method("random_walker", kwargs={})
        built.obj.hook = lambda: None  # a lambda cannot be pickled
        return built

    monkeypatch.setattr(cli, "_build", build)
    assert main(["--method", "random_walker", "--datasets", "synthetic", "--limit", "2", "--quiet",
                 "--out", str(tmp_path / "out"), "--devices", "2"]) == 2
    line = _err_line(capsys)
    assert "--devices 2: the method RandomWalkerPredictor cannot be sent to worker processes" in line, line
    assert not (tmp_path / "out" / "results.json").exists()


def _part(name, ids):
    return DatasetResult(name, get_protocol("plain"), [{"id": i, "ious": [0.5], "clicks": [[1, 1, 1]], "noic": 1}
                                                       for i in ids], {"selection": {"instances": 5}}, None, len(ids))


class _DS:
    name = "toy"

    def __len__(self):
        return 7

    def ids(self):
        return [f"s{i}" for i in range(7)]


def test_merge_restores_selection_order_and_refuses_gaps():
    r = merge_shards([_part("toy", ["s0", "s2", "s4"]), _part("toy", ["s1", "s3"])], _DS(), limit=5)
    assert [x["id"] for x in r.instances] == ["s0", "s1", "s2", "s3", "s4"]
    assert r.summary["num_instances"] == 5 and r.log_records == 5 and r.summary["selection"] == {"instances": 5}
    with pytest.raises(WorkerError, match="rank 1 returned 1 instance"):  # a dropped instance
        merge_shards([_part("toy", ["s0", "s2", "s4"]), _part("toy", ["s1"])], _DS(), limit=5)
    with pytest.raises(WorkerError, match="instance 3 came back as 's1'"):  # a duplicated one
        merge_shards([_part("toy", ["s0", "s2", "s4"]), _part("toy", ["s1", "s1"])], _DS(), limit=5)


def test_threads_per_worker_share_the_cores(monkeypatch):
    import iis.eval.distributed as dist

    monkeypatch.undo()  # the autouse fixture pinned it to 1
    monkeypatch.setattr(dist, "cpu_cores", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [dist.threads_per_worker(n) for n in (1, 2, 3, 16)] == [16, 8, 5, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # a budget the user set is honoured
    assert [dist.threads_per_worker(n) for n in (1, 2, 3, 8)] == [4, 2, 1, 1]
    assert dist.rank_device("cuda", 3) == "cuda:3" and dist.rank_device("cpu", 3) == "cpu"


@needs_2_cores
def test_a_dead_worker_is_reported_and_its_log_kept(tmp_path):
    from iis.data import get_dataset
    from iis.eval.distributed import DevicePool
    from iis.eval.loading import build_method

    log = tmp_path / "instances" / "synthetic.jsonl"
    with pytest.raises(WorkerError, match=r"rank 1 \(cpu\) died with exit code -9 while evaluating synthetic; .*rerun"):
        with DevicePool(build_method("random_walker", kwargs={}).obj, 2, "cpu") as pool:
            def kill_rank1(done):
                if pool._procs[1].is_alive():
                    os.kill(pool._procs[1].pid, signal.SIGKILL)

            pool.evaluate_step(get_dataset("synthetic"), get_protocol("plain").with_options(max_clicks=3), limit=20,
                               log_path=log, progress=kill_rank1)
    assert rank_log_path(log, 1).exists() and not pool._procs  # workers stopped, the rank log left in place


@needs_grabcut
def test_logs_of_the_other_layout_are_refused_not_ignored(reference, tmp_path, capsys):
    """A one-device log under --devices 2 (or rank logs under one device) would be recomputed beside."""
    import shutil

    reference, args = reference
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    capsys.readouterr()
    assert _eval(*args, "--out", str(out), "--devices", "2") == 2
    assert "shard.world_size: stored 1 (one log), now 2" in _err_line(capsys)
    log = out / "instances" / "grabcut.jsonl"
    log.rename(rank_log_path(log, 0))
    assert _eval(*args, "--out", str(out)) == 2
    assert "shard.world_size: stored a sharded run (rank logs), now 1" in _err_line(capsys)


def test_random_init_is_a_function_of_name_and_kwargs():
    """Two builds without weights (in one process, whatever the global RNG did) are the same model."""
    import torch

    from iis.eval.loading import build_method

    a = build_method("simpleclick_vit_test").obj.state_dict()
    torch.rand(7)
    b = build_method("simpleclick_vit_test").obj.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert build_method("simpleclick_vit_test").desc["init_seed"] == 0


@needs_grabcut
@needs_2_cores
def test_devices_and_batches_compose(reference, tmp_path):
    """Each rank batches its share: still the records of one device, one instance at a time."""
    reference, args = reference
    out = tmp_path / "out"
    assert _eval(*args, "--out", str(out), "--devices", "2", "--batch-size", "3") == 0
    assert json.dumps(_numbers(out)["instances"]) == json.dumps(_numbers(reference)["instances"])
    assert _results(out)["inference"]["batch_size"] == 3
