"""Multi-device evaluation (``iis-eval --devices N``): N worker processes, one per CPU share or GPU.

Instance ``i`` of the selection (the first ``--limit`` instances) is evaluated by rank ``i % N``
through :func:`iis.eval.runner.evaluate_step`, exactly as one device would evaluate it; each rank
appends to its own resumable log ``<out>/instances/<dataset>.rank<r>.jsonl`` (the same header identity
as the single-device log, plus ``info.shard = {rank, world_size}``). The launcher then merges the
ranks' records back into selection order (rank ``i % N``, position ``i // N``), checks that every
selected instance is there exactly once, and summarises them with the same code as one device, so
``results.json`` holds the same records and numbers. Nothing is ever padded: a rank whose share is
shorter simply has fewer instances (unlike ``DistributedSampler``, which repeats instances to even the
shares out, Lightning issue #12862).

Why plain ``torch.multiprocessing`` (spawn) and pipes, not a ``torch.distributed`` process group,
Lightning Fabric or torchrun: evaluation has no collective operation but the final gather, and the
per-rank logs already hold every record durably. Without a process group there is no rendezvous port to
collide with on a shared machine, no NCCL needed on GPUs (rank ``r`` simply uses ``cuda:r``), and a
rank that dies cannot leave the others blocked in a collective: the launcher watches every worker's
process sentinel and reports the death at once. ``iis-eval`` stays one ordinary command (no launcher
to wrap it in), and its ``--out`` lock is held by that command alone.

Resume: a rerun after a kill finds each rank's log and skips the instances it holds (the runner's usual
resume). A rank log written with another world size is refused, naming ``shard.world_size``; another
identity is refused by the runner, naming the field. Workers die with the launcher (Linux
``PR_SET_PDEATHSIG``, and a watchdog thread elsewhere), and each holds a lock on its own log, so an
orphan can never write next to a rerun.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
import traceback
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from ..core.errors import IISError, InvalidSampleError
from .io import exclusive_lock
from .runner import DatasetResult, evaluate_step, summarize_instances

__all__ = ["DevicePool", "WorkerError", "check_devices", "check_log_layout", "cpu_cores", "rank_device", "rank_log_path",
           "threads_per_worker"]


class WorkerError(RuntimeError):
    """A worker crashed (a bug, or killed from outside); its log keeps what it finished."""


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def threads_per_worker(devices: int) -> int:
    """Torch/OpenCV threads for each of ``devices`` workers, so that together they use at most the cores
    (or the ``OMP_NUM_THREADS`` budget the user set, if smaller); at least 1 each."""
    budget = cpu_cores()
    try:
        budget = min(budget, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        pass
    return max(1, budget // devices)


def check_devices(devices: int, device: str) -> None:
    """Refuse a ``--devices``/``--device`` pair that cannot run, in one line (before anything is built)."""
    import torch

    if devices < 1:
        raise IISError(f"--devices {devices}: expected an integer >= 1")
    if devices == 1:
        return
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is not None:
            raise IISError(f"--device {device} --devices {devices}: pass --device cuda (rank r uses cuda:r)")
        if not torch.cuda.is_available():
            raise IISError(f"--devices {devices} --device cuda: no CUDA GPU is visible to torch here")
        have = torch.cuda.device_count()
        if devices > have:
            raise IISError(f"--devices {devices}: only {have} CUDA device(s) visible")
    elif dev.type == "cpu":
        cores = cpu_cores()
        if devices > cores:
            raise IISError(f"--devices {devices} --device cpu: only {cores} CPU core(s) available to this process; "
                           f"use --devices {cores} or fewer")
    else:
        raise IISError(f"--devices {devices}: multi-device evaluation runs on cpu or cuda, not {device}")


def rank_device(device: str, rank: int) -> str:
    """The device of rank ``rank``: ``cuda:r`` under ``--device cuda``, else ``cpu``."""
    return f"cuda:{rank}" if device.startswith("cuda") else "cpu"


def rank_log_path(log_path: str | Path, rank: int) -> Path:
    """``<dir>/<dataset>.jsonl`` -> ``<dir>/<dataset>.rank<r>.jsonl``."""
    p = Path(log_path)
    return p.with_name(f"{p.stem}.rank{rank}{p.suffix}")


def _rank_logs(log_path: Path) -> list[Path]:
    return sorted(log_path.parent.glob(f"{log_path.stem}.rank*{log_path.suffix}"))


def check_log_layout(log_path: str | Path, devices: int, overwrite: bool = False) -> None:
    """Refuse to resume from the other layout's logs (a one-device ``<dataset>.jsonl`` under ``--devices N``,
    rank logs under one device), which would otherwise be ignored and recomputed beside them; with
    ``overwrite`` they are removed instead."""
    log_path = Path(log_path)
    others = [log_path] if devices > 1 and log_path.exists() else _rank_logs(log_path) if devices == 1 else []
    for p in others:
        if overwrite:
            p.unlink()
            continue
        with open(p, encoding="utf-8", errors="replace") as f:
            n = max(sum(1 for _ in f) - 1, 0)
        stored = "1 (one log)" if p == log_path else "a sharded run (rank logs)"
        raise IISError(f"{p}: resume refused, shard.world_size: stored {stored}, now {devices}; pass --overwrite "
                       f"to discard its {n} stored instance(s), run with the same --devices, or choose another --out")


def _check_world_size(log_path: Path, world: int) -> None:
    """Refuse rank logs written by a run with another number of devices, naming the field."""
    for p in _rank_logs(log_path):
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                head = json.loads(f.readline())
            shard = head["header"]["info"]["shard"]
            stored, rank = shard["world_size"], shard["rank"]
        except (ValueError, KeyError, TypeError):
            continue  # not readable as a rank log: the runner refuses it with its own message
        if stored != world or p != rank_log_path(log_path, rank):
            with open(p, encoding="utf-8", errors="replace") as f:
                n = sum(1 for ln in f) - 1
            raise IISError(f"{p}: resume refused, shard.world_size: stored {stored}, now {world}; pass --overwrite "
                           f"to discard its {n} stored instance(s), run with --devices {stored}, "
                           "or choose another --out")


def _die_with_parent(parent: int) -> None:
    try:  # Linux: the kernel kills this worker when the launcher dies, even by SIGKILL
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker(rank: int, world: int, device: str, threads: int, method: Any, conn: Any, parent: int) -> None:
    """One rank: evaluate its share of each dataset it is sent, reply with the DatasetResult."""
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover
        pass
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            key, dataset, base, kw = task
            kw["info"] = {**(kw.get("info") or {}), "device": device, "shard": {"rank": rank, "world_size": world}}
            log = kw.get("log_path")
            try:
                if log is not None:
                    kw["log_path"] = rank_log_path(log, rank)
                    lock = exclusive_lock(kw["log_path"].parent / f".{kw['log_path'].name}.lock", "rank log")
                else:
                    import contextlib

                    lock = contextlib.nullcontext()
                with lock:
                    r = evaluate_step(method, dataset, base, device=device, rank=rank, world_size=world,
                                      progress=lambda k: conn.send(("progress", key, rank, k)), **kw)
                conn.send(("done", key, rank, r))
            except InvalidSampleError as e:
                conn.send(("invalid", key, rank, (e.sample_id, e.reason)))
            except (ValueError, OSError) as e:  # IISError and files: one line, as on one device
                conn.send(("error", key, rank, str(e)))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return  # the launcher is stopping (Ctrl-C reaches the whole process group)
    except BaseException:
        try:
            conn.send(("crash", None, rank, traceback.format_exc()))
        except (OSError, EOFError):
            pass
        raise


class DevicePool:
    """N worker processes holding ``method``; :meth:`evaluate_step` shards a dataset across them.

    Args:
        method: an interactive model or a training-free predictor; sent once to every worker (CPU
            tensors through shared memory). It must be picklable.
        devices: number of workers (ranks), >= 2 for any benefit.
        device: ``cpu`` or ``cuda`` (rank ``r`` on ``cuda:r``).
        threads: torch/OpenCV threads per worker (default: the cores divided by ``devices``).

    Use as a context manager; the caller holds the ``--out`` lock, workers lock only their own logs.
    """

    def __init__(self, method: Any, devices: int, device: str = "cpu", threads: int | None = None):
        check_devices(devices, device)
        self.method, self.devices, self.device = method, devices, device
        self.threads = threads or threads_per_worker(devices)
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._key = 0
        self._open = False

    def __enter__(self) -> "DevicePool":
        import torch

        if not isinstance(self.method, torch.nn.Module):  # modules travel as shared tensors; others as a pickle
            try:
                pickle.dumps(self.method)
            except Exception as e:  # noqa: BLE001 - any pickling failure means the same thing here
                raise IISError(f"--devices {self.devices}: the method {type(self.method).__name__} cannot be sent to "
                               f"worker processes ({type(e).__name__}: {e}); use --devices 1") from None
        self._open = True
        return self

    def _start(self) -> None:
        """Spawn the workers (at the first dataset, after its logs were checked: a refusal costs no start-up)."""
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")  # fork would copy a CUDA context and the launcher's threads
        env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update({k: str(self.threads) for k in env})  # threads at the workers' import of torch
        try:
            for rank in range(self.devices):
                ours, theirs = ctx.Pipe()
                p = ctx.Process(target=_worker, daemon=True, name=f"iis-eval-rank{rank}",
                                args=(rank, self.devices, rank_device(self.device, rank), self.threads, self.method,
                                      theirs, os.getpid()))
                try:
                    p.start()
                except (pickle.PicklingError, TypeError, AttributeError) as e:
                    raise IISError(f"--devices {self.devices}: the method cannot be sent to worker processes "
                                   f"({type(e).__name__}: {e}); use --devices 1") from None
                theirs.close()
                self._procs.append(p)
                self._conns.append(ours)
        except BaseException:
            self._stop(kill=True)
            raise
        finally:
            for k, v in env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def __exit__(self, *exc: Any) -> None:
        self._open = False
        self._stop(kill=exc[0] is not None)

    def _stop(self, kill: bool) -> None:
        for conn, p in zip(self._conns, self._procs):
            if not kill and p.is_alive():
                try:
                    conn.send(None)
                except OSError:
                    pass
        for p in self._procs:
            p.join(timeout=None if not kill else 0)
            if p.is_alive():
                p.terminate()  # SIGTERM: its log keeps every fsync'ed instance; a torn line is redone
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

    def evaluate_step(self, dataset: Any, base: Any, *, limit: int | None = None,
                      log_path: str | Path | None = None, overwrite: bool = False,
                      progress: Callable[[int], None] | None = None, device: str | None = None,
                      **kwargs: Any) -> DatasetResult:
        """:func:`iis.eval.runner.evaluate_step` of ``dataset`` sharded over the workers, merged exactly.

        ``kwargs`` go to every rank's ``evaluate_step`` and must be picklable (module-level functions
        or ``functools.partial`` of them for ``on_instance``/``keep_preds``). ``log_path`` names the
        single-device log; ranks write ``rank_log_path(log_path, r)``. ``progress`` gets the number of
        instances finished over all ranks. ``device`` is ignored (each rank has its own).
        """
        if not self._open:
            raise RuntimeError("DevicePool.evaluate_step outside its `with` block")
        world = self.devices
        if log_path is not None:
            log_path = Path(log_path)
            if overwrite:
                for p in _rank_logs(log_path):
                    p.unlink()
            _check_world_size(log_path, world)
        if not self._procs:
            self._start()
        self._key += 1
        key = self._key
        for conn in self._conns:
            try:
                conn.send((key, dataset, base, {**kwargs, "limit": limit, "log_path": log_path}))
            except (pickle.PicklingError, TypeError, AttributeError) as e:
                raise IISError(f"--devices {world}: an evaluation option cannot be sent to worker processes "
                               f"({type(e).__name__}: {e})") from None
        parts: dict[int, DatasetResult] = {}
        counts = [0] * world
        by_conn = {c: r for r, c in enumerate(self._conns)}
        by_sentinel = {p.sentinel: r for r, p in enumerate(self._procs)}
        name = getattr(dataset, "name", "dataset")
        while len(parts) < world:
            for ready in wait([*by_conn, *by_sentinel]):
                if ready in by_sentinel:
                    rank = by_sentinel[ready]
                    if self._conns[rank] in by_conn and self._conns[rank].poll():
                        continue  # its last message is still to be read
                    if rank in parts:
                        del by_sentinel[ready]
                        continue
                    self._procs[rank].join(timeout=5)
                    code = self._procs[rank].exitcode
                    raise WorkerError(f"rank {rank} ({rank_device(self.device, rank)}) died with exit code {code} "
                                      f"while evaluating {name}; its log keeps the instances it finished: rerun to "
                                      "resume")
                try:
                    kind, k, rank, payload = ready.recv()
                except EOFError:
                    del by_conn[ready]
                    continue  # the sentinel reports the death
                if kind == "crash":
                    raise WorkerError(f"rank {rank} crashed:\n{payload}")
                if k != key:
                    continue
                if kind == "progress":
                    counts[rank] = payload
                    if progress:
                        progress(sum(counts))
                elif kind == "done":
                    parts[rank] = payload
                elif kind == "invalid":
                    raise InvalidSampleError(*payload)
                else:
                    raise IISError(payload)
        return merge_shards([parts[r] for r in range(world)], dataset, limit)


def merge_shards(parts: list[DatasetResult], dataset: Any, limit: int | None) -> DatasetResult:
    """Rank results -> the single-device result: selection order, each selected instance exactly once.

    ``parts[r]`` holds the instances ``i`` of the selection with ``i % len(parts) == r``, in order.
    """
    world = len(parts)
    total = len(dataset)
    n = min(total, limit) if limit else total
    for r, part in enumerate(parts):
        want = len(range(r, n, world))
        if len(part.instances) != want:
            raise WorkerError(f"rank {r} returned {len(part.instances)} instance(s) of {part.name}, expected {want}")
    records = [parts[i % world].instances[i // world] for i in range(n)]
    ids = dataset.ids() if hasattr(dataset, "ids") else None
    if ids is not None:
        wrong = [i for i, rec in enumerate(records) if rec["id"] != ids[i]]
        if wrong:
            raise WorkerError(f"{parts[0].name}: instance {wrong[0]} came back as {records[wrong[0]]['id']!r}, "
                              f"expected {ids[wrong[0]]!r}")
    if len({rec["id"] for rec in records}) != n:
        raise WorkerError(f"{parts[0].name}: an instance id came back twice")
    head = parts[0]
    summary = summarize_instances(records, head.protocol)
    for k, v in head.summary.items():  # what evaluate_step adds after summarising (max_clicks, selection...)
        summary.setdefault(k, v)
    logs = [p.log_records for p in parts]
    return DatasetResult(head.name, head.protocol, records, summary, head.identity,
                         sum(logs) if all(x is not None for x in logs) else None)
