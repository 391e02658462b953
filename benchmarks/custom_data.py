"""The real-data result of the fine-tuning recipe (iis/methods/custom/README.md): build, train, evaluate, tabulate.

Steps (each can be run alone; every output goes under ``--work``, the data is only read or symlinked):

* ``build``: the training folders. **Berkeley minus GrabCut**: every Berkeley image whose content matches a
  GrabCut image (grey 32x32 thumbnails, after trying both orientations, mean absolute difference < 8 of 255;
  the name is never used) is left out; the rest are symlinked into ``berkeley_train/{images,masks}`` (masks
  {0,255}, used as they are). **ssTEM 00-09**: sections 00-09 as ``sstem_train/{images,masks}``, masks
  rewritten as 16-bit instance ids (4-connected components of value != 0, as the ssTEM reader counts them;
  components under 10 pixels set to 0); sections 10-19 are symlinked into ``sstem_test/ssTEM/{raw,mitochondria}``
  so the standard ``sstem`` reader evaluates exactly them.
* ``train``: ``iis-train fit --config experiments/custom/finetune.yaml --data.root ...`` for
  {natural, microscopy} x {ImageNet, random init}; same recipe, same steps.
* ``eval``: ``iis-eval`` (20 clicks, early stop at IoU 0.90) of the checkpoints and of the baselines on
  GrabCut (``plain`` and ``ritm`` presets) and on ssTEM 10-19 (all 199 and the first 20; see :func:`eval_jobs`).
* ``table``: NoC85/NoC90/mIoU@1,5 of every ``results.json`` found, and the mIoU-vs-clicks plots.

Examples::

    python benchmarks/custom_data.py build --work /tmp/iis_custom
    python benchmarks/custom_data.py train --work /tmp/iis_custom --runs natural,natural_scratch
    python benchmarks/custom_data.py eval --work /tmp/iis_custom --what natural
    python benchmarks/custom_data.py table --work /tmp/iis_custom --plot docs/custom_data.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MATCH_MAD = 8.0  # mean absolute grey difference (0-255) of 32x32 thumbnails below which two images are one
MIN_AREA = 10  # the folder reader's default min_area (iis/data/folder.py)


def _thumb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return img


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest thumbnail difference over the orientations of ``b`` (as is, transposed, flipped)."""
    ta = cv2.resize(a, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    best = np.inf
    for v in (b, b.T, b[::-1], b[:, ::-1]):
        tb = cv2.resize(np.ascontiguousarray(v), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        best = min(best, float(np.abs(ta - tb).mean()))
    return best


def overlap(data: Path) -> tuple[list[str], list[tuple[str, str, float]]]:
    """(Berkeley stems, [(berkeley stem, grabcut stem, difference)] of the content matches)."""
    bk = sorted((data / "Berkeley" / "images").iterdir())
    gc = sorted((data / "GrabCut" / "data_GT").iterdir())
    gthumbs = {g.stem: _thumb(g) for g in gc}
    matches = []
    for b in bk:
        tb = _thumb(b)
        d, g = min((_mad(tb, t), s) for s, t in gthumbs.items())
        if d < MATCH_MAD:
            matches.append((b.stem, g, round(d, 2)))
    return [b.stem for b in bk], matches


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src.resolve())


def build(data: Path, work: Path) -> dict:
    stems, matches = overlap(data)
    drop = {b for b, _, _ in matches}
    train = work / "berkeley_train"
    for sub in ("images", "masks"):
        if (train / sub).is_dir():
            for f in (train / sub).iterdir():
                f.unlink()
    for s in stems:
        if s in drop:
            continue
        _link(data / "Berkeley" / "images" / f"{s}.jpg", train / "images" / f"{s}.jpg")
        _link(data / "Berkeley" / "masks" / f"{s}.png", train / "masks" / f"{s}.png")
    # ssTEM: 00-09 train (instance-id masks), 10-19 test (the standard layout, symlinked)
    st = work / "sstem_train"
    n_inst = {}
    for i in range(20):
        raw = data / "ssTEM" / "raw" / f"{i:02d}.tif"
        mask = data / "ssTEM" / "mitochondria" / f"{i:02d}.png"
        if i >= 10:
            _link(raw, work / "sstem_test" / "ssTEM" / "raw" / raw.name)
            _link(mask, work / "sstem_test" / "ssTEM" / "mitochondria" / mask.name)
            continue
        _link(raw, st / "images" / raw.name)
        m = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        _, lab, stats, _ = cv2.connectedComponentsWithStats((m != 0).astype(np.uint8), connectivity=4)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < MIN_AREA)
        lab[np.isin(lab, small[small > 0])] = 0
        keep = np.unique(lab[lab > 0])
        remap = np.zeros(lab.max() + 1, np.uint16)
        remap[keep] = np.arange(1, len(keep) + 1)
        (st / "masks").mkdir(parents=True, exist_ok=True)
        tmp = st / "masks" / f".{i:02d}.tmp.png"
        cv2.imwrite(str(tmp), remap[lab])
        os.replace(tmp, st / "masks" / f"{i:02d}.png")
        n_inst[f"{i:02d}"] = int(len(keep))
    info = {"berkeley": len(stems), "overlap": matches, "berkeley_train": len(stems) - len(drop),
            "sstem_train_instances": n_inst}
    (work / "build.json").write_text(json.dumps(info, indent=1))
    return info


# -- training ------------------------------------------------------------------------------------------------
RUNS = {  # name -> (training folder, extra iis-train args)
    "natural": ("berkeley_train", []),
    "natural_scratch": ("berkeley_train", ["--model.init_args.model_kwargs", "{imagenet: false}"]),
    # one held-out section of ~20 mitochondria at 1024x1024: validate on 8 of them, 5 clicks (CPU time)
    "microscopy": ("sstem_train", ["--data.source_kwargs", "{mode: instances, val_fraction: 0.1}",
                                   "--trainer.callbacks.init_args.limit", "8",
                                   "--trainer.callbacks.init_args.max_clicks", "5"]),
    "microscopy_scratch": ("sstem_train", ["--data.source_kwargs", "{mode: instances, val_fraction: 0.1}",
                                           "--trainer.callbacks.init_args.limit", "8",
                                           "--trainer.callbacks.init_args.max_clicks", "5",
                                           "--model.init_args.model_kwargs", "{imagenet: false}"]),
}


def train_cmd(name: str, work: Path, steps: int | None) -> list[str]:
    folder, extra = RUNS[name]
    cmd = [str(BIN / "iis-train"), "fit", "--config", str(REPO / "experiments/custom/finetune.yaml"),
           "--data.root", str(work / folder), "--trainer.default_root_dir", str(work / "runs" / name), *extra]
    if steps:
        cmd += ["--trainer.max_steps", str(steps)]
    return cmd


def run_logged(cmd: list[str], log: Path, env: dict) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.time()
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    dt = time.time() - t
    with open(log, "a") as f:
        f.write(f"\nexit {rc}, wall {dt:.0f} s\n")
    if rc:
        raise SystemExit(f"{cmd[0]} failed (exit {rc}); see {log}")
    return dt


def _env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="offline")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def train(work: Path, names: list[str], steps: int | None, threads: int) -> None:
    """Start the runs concurrently (each ``threads`` threads) and wait for all."""
    procs = []
    (work / "logs").mkdir(parents=True, exist_ok=True)
    for n in names:
        log = work / "logs" / f"train_{n}.log"
        cmd = train_cmd(n, work, steps)
        f = open(log, "w")
        f.write(" ".join(cmd) + "\n")
        f.flush()
        procs.append((n, log, f, time.time(), subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                                               env=_env(threads), cwd=REPO)))
    for n, log, f, t0, p in procs:
        _, status, usage = os.wait4(p.pid, 0)  # the child's own CPU time: the wall time depends on the load
        rc = p.returncode = os.waitstatus_to_exitcode(status)
        line = f"exit {rc}, wall {time.time() - t0:.0f} s, CPU {usage.ru_utime + usage.ru_stime:.0f} s"
        f.write(f"\n{line}\n")
        f.close()
        print(f"train {n}: {line} ({log})")


# -- evaluation ----------------------------------------------------------------------------------------------
SSTEM_LIMIT = 20  # ssTEM 10-19 holds 199 mitochondria at 1024x1024: its first 20 (all in section 10) for the baselines, CPU time


def eval_jobs(what: str, work: Path, data: Path) -> list[tuple[str, list[str]]]:
    """(output name, iis-eval args) of the comparison ``what`` (natural: GrabCut 50; microscopy: ssTEM 10-19).

    Early stop at IoU 0.90 (the standard NoC runs; the mIoU curves are then held at the last IoU).
    GrabCut: both checkpoints under ``plain`` and ``ritm``, the baselines under ``plain`` (job names
    ``grabcut_<baseline>_plain``; the README's training-free table has the same runs). ssTEM: the first
    ``SSTEM_LIMIT`` instances, checkpoints under ``ritm`` (their default preset), baselines under ``plain``; the
    checkpoints also on all 199 under ``ritm`` (``sstem199_*``).
    """
    if what == "natural":
        root, ds, protocols, limit = data, "grabcut", ("plain", "ritm"), []
        runs = ("natural", "natural_scratch")
    else:
        root, ds, protocols, limit = work / "sstem_test", "sstem", ("ritm",), ["--limit", str(SSTEM_LIMIT)]
        runs = ("microscopy", "microscopy_scratch")
    jobs = []
    for proto in protocols:
        for r in runs:
            jobs.append((f"{ds}_{r}_{proto}", ["--ckpt", str(work / "runs" / r / "checkpoints" / "last.ckpt"),
                                               "--protocol", proto, *limit]))
    if what == "microscopy":  # the checkpoints also on all 199 instances of sections 10-19 (ritm preset)
        for r in runs:
            jobs.append((f"sstem199_{r}_ritm", ["--ckpt", str(work / "runs" / r / "checkpoints" / "last.ckpt"),
                                                "--protocol", "ritm"]))
    for m in ("random_walker", "geodesic", "grabcut", "m2n2_effnet"):
        jobs.append((f"{ds}_{m}_plain", ["--method", m, "--protocol", "plain", *limit]))
    return [(name, ["--datasets", ds, "--data-root", str(root), "--quiet", *a]) for name, a in jobs]


def evaluate(work: Path, data: Path, what: str, only: list[str] | None, threads: int) -> None:
    for name, args in eval_jobs(what, work, data):
        if only and not any(o in name for o in only):
            continue
        out = work / "eval" / name
        if (out / "results.json").is_file():
            print(f"{name}: done already ({out})")
            continue
        dt = run_logged([str(BIN / "iis-eval"), *args, "--out", str(out), "--overwrite"],
                        work / "logs" / f"eval_{name}.log", _env(threads))
        print(f"{name}: {dt:.0f} s")


# -- table and plot ------------------------------------------------------------------------------------------
def _curve(s: dict) -> list[float]:
    return s.get("miou") or s.get("miou_early_stopped") or []


def load_results(work: Path) -> dict[str, dict]:
    out = {}
    for f in sorted((work / "eval").glob("*/results.json")):
        out[f.parent.name] = json.loads(f.read_text())
    return out


def summary_of(res: dict) -> dict:
    ds = res.get("datasets") or res.get("results") or {}
    if isinstance(ds, dict) and ds:
        return next(iter(ds.values()))
    return res


def table(work: Path, plot: Path | None) -> None:
    results = load_results(work)
    print("| run | instances | NoC85 | NoC90 | NoF90 | mIoU@1 | mIoU@5 | eval wall s |")
    print("|---|---|---|---|---|---|---|---|")
    curves = {}
    for name, res in results.items():
        s = summary_of(res)
        c = _curve(s)
        curves[name] = c
        pick = lambda k: f"{c[k - 1]:.3f}" if len(c) >= k else "-"  # noqa: E731
        print(f"| {name} | {s.get('num_instances', '?')} | {s['noc']['85']:.2f} | {s['noc']['90']:.2f} | "
              f"{s['nof']['90']} | {pick(1)} | {pick(5)} | {s.get('run_seconds', float('nan')):.0f} |")
    print("(mIoU@k of early-stopped runs: each instance held at its last IoU after reaching 0.90)")
    if plot is None:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    groups = {}
    for name, c in curves.items():
        groups.setdefault(name.split("_", 1)[0], []).append((name.split("_", 1)[1], c))
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, (ds, items) in zip(axes[0], sorted(groups.items())):
        for label, c in items:
            ax.plot(range(1, len(c) + 1), c, marker="o", ms=3, label=label)
        ax.set_title({"grabcut": "GrabCut (50)", "sstem": f"ssTEM sections 10-19, first {SSTEM_LIMIT}",
                      "sstem199": "ssTEM sections 10-19, all 199"}.get(ds, ds))
        ax.set_xlabel("clicks")
        ax.set_ylabel("mIoU (early stop at 0.90: held at last IoU)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    tmp = plot.with_name("." + plot.name)
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, plot)
    print(f"wrote {plot}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=["build", "train", "eval", "table", "all"])
    p.add_argument("--work", type=Path, default=Path("/tmp/iis_custom"), help="output folder (never the data)")
    p.add_argument("--data-root", type=Path, default=os.environ.get("IIS_DATA_ROOT"), help="default $IIS_DATA_ROOT")
    p.add_argument("--runs", default="natural,natural_scratch", help="training runs: " + ",".join(RUNS))
    p.add_argument("--steps", type=int, default=None, help="override trainer.max_steps (recipe: 900)")
    p.add_argument("--threads", type=int, default=1, help="threads per process (two runs at once on 2 cores)")
    p.add_argument("--what", default="natural", choices=["natural", "microscopy"])
    p.add_argument("--only", default=None, help="comma-separated substrings of the eval jobs to run")
    p.add_argument("--plot", type=Path, default=None)
    a = p.parse_args(argv)
    if a.step in ("build", "eval", "all") and a.data_root is None:
        p.error("--data-root (or $IIS_DATA_ROOT) is required")
    if a.step in ("build", "all"):
        info = build(Path(a.data_root), a.work)
        print(f"Berkeley {info['berkeley']} instances; {len(info['overlap'])} also in GrabCut by content: "
              + ", ".join(f"{b}~{g} ({d})" for b, g, d in info["overlap"]))
        print(f"training folder: {info['berkeley_train']} instances; ssTEM 00-09 instances: "
              f"{sum(info['sstem_train_instances'].values())}")
    if a.step in ("train", "all"):
        train(a.work, a.runs.split(","), a.steps, a.threads)
    if a.step in ("eval", "all"):
        evaluate(a.work, Path(a.data_root), a.what, a.only.split(",") if a.only else None, a.threads)
    if a.step in ("table", "all"):
        table(a.work, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
