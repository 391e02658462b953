"""``iis-data``: prepare training sets from the official downloads, check datasets, SHA-256 manifests.

Examples::

    iis-data prepare cocolvis --lvis lvis/ --coco-panoptic coco/ --images coco/train2017 --out data/cocolvis
    iis-data prepare sbd --root data/SBD/benchmark_RELEASE/dataset
    iis-data checksum data/cocolvis/train              # writes data/cocolvis/train/MANIFEST.sha256
    iis-data checksum data/cocolvis/train --verify     # exit 1 when a file changed
    iis-data check --datasets grabcut,berkeley --data-root data/
    iis-data check --datasets folder --data-root my_data/ --dataset-arg mode=instances --dataset-arg ignore_value=255
    iis-data check --train-source folder --root my_data/ --dataset-arg val_fraction=0.2
    iis-data check --train-source sbd --root data/SBD/benchmark_RELEASE/dataset

`check` decodes every image and mask strictly and checks each mask against its dataset's declared
encoding (iis/data/README.md): everything iis-eval or training would refuse is listed, one line each.
Exit codes: 0 fine, 1 problems found, 2 bad arguments or missing folders.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    head, examples = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(prog="iis-data", description=head, epilog=examples,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="build or check a training set").add_subparsers(dest="dataset", required=True)
    cl = prep.add_parser("cocolvis", help="LVIS v1 + COCO panoptic 2017 -> RITM packed COCO+LVIS (protocol.md §C.3)")
    cl.add_argument("--lvis", required=True, help="folder with lvis_v1_{train,val}.json")
    cl.add_argument("--coco-panoptic", required=True,
                    help="folder with annotations/panoptic_{split}2017.json and panoptic_{split}2017/*.png")
    cl.add_argument("--images", required=True, help="COCO {split}2017 image folder (or its parent)")
    cl.add_argument("--out", required=True, help="output root; the split goes to OUT/{split}")
    cl.add_argument("--split", choices=["train", "val"], default="train")
    cl.add_argument("--copy-images", action="store_true", help="copy the JPEGs (default: symlink them)")
    cl.add_argument("--rasterizer", choices=["ritm", "coco"], default="ritm",
                    help="polygon filling: ritm = cv2.fillPoly on rounded vertices (reference), coco = pycocotools")
    cl.add_argument("--workers", type=int, help="processes (default: CPU count, at most 8)")
    cl.add_argument("--limit", type=int, help="process at most N more images now (rerun to continue)")
    cl.add_argument("--force", action="store_true", help="discard this split's earlier outputs and start over")
    cl.add_argument("--no-manifest", action="store_true", help="do not write OUT/{split}/MANIFEST.sha256")
    cl.add_argument("--quiet", action="store_true", help="no progress bars")

    sb = prep.add_parser("sbd", help="check an SBD download (benchmark_RELEASE/dataset); writes nothing into it")
    sb.add_argument("--root", required=True, help="benchmark_RELEASE/dataset (or benchmark_RELEASE, or its parent)")
    sb.add_argument("--no-checksum", action="store_true", help="skip the SHA-256 manifest (stored in the user cache)")
    sb.add_argument("--workers", type=int, help="processes (default: CPU count, at most 8)")
    sb.add_argument("--quiet", action="store_true", help="no progress bars")

    ck = sub.add_parser("checksum", help="write (or --verify) DIR/MANIFEST.sha256 (sha256sum format)")
    ck.add_argument("dir", help="dataset folder")
    ck.add_argument("--verify", action="store_true", help="check DIR against the manifest instead of writing it")
    ck.add_argument("--manifest", help="manifest file (default DIR/MANIFEST.sha256; use another for read-only data)")
    ck.add_argument("--workers", type=int, help="hashing threads (default: CPU count, at most 8)")
    ck.add_argument("--quiet", action="store_true", help="no progress bar")

    ch = sub.add_parser("check", help="decode every file of evaluation datasets (or a training source) strictly and "
                                      "list everything iis-eval / training would refuse; verify MANIFEST.sha256")
    ch.add_argument("--datasets", help="comma-separated names (default: every dataset found under --data-root, "
                                       "unless --train-source is given); `folder` takes --data-root as the folder itself")
    ch.add_argument("--data-root", default=os.environ.get("IIS_DATA_ROOT"),
                    help="folder holding GrabCut/, Berkeley/, SBD/, ... (default: $IIS_DATA_ROOT)")
    ch.add_argument("--train-source", metavar="NAME",
                    help="check a training source (the data.source values: folder, sbd, cocolvis, coco_json, ...)")
    ch.add_argument("--root", help="the training source's data.root (default: --data-root)")
    ch.add_argument("--dataset-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="reader / source option, repeatable, e.g. mode=instances, ignore_value=255, min_area=0, "
                         "val_fraction=0.2 (iis/data/README.md lists them)")
    ch.add_argument("--workers", type=int, help="decoding threads for a training source (default: min(8, CPUs))")
    return p


def _error(msg: str) -> int:
    print(f"iis-data: error: {msg}", file=sys.stderr)
    return 2


def _problems(lines: Sequence[str], limit: int = 50) -> None:
    for ln in lines[:limit]:
        print(f"  problem: {ln}")
    if len(lines) > limit:
        print(f"  ... and {len(lines) - limit} more problem(s)")


def _cocolvis(a: argparse.Namespace) -> int:
    from iis.data.prepare import prepare_cocolvis

    r = prepare_cocolvis(a.lvis, a.coco_panoptic, a.images, a.out, a.split, workers=a.workers,
                         copy_images=a.copy_images, rasterizer=a.rasterizer, limit=a.limit, force=a.force,
                         manifest=not a.no_manifest, progress=not a.quiet)
    stuff = "" if r.stuff is None else f", {r.stuff} stuff masks"
    print(f"cocolvis {a.split}: {r.images} images, {r.instances} instances{stuff} -> {r.split_dir}")
    if r.stuff is None:
        print("  already complete (use --force to rebuild)")
    if r.empty or r.unmatched:
        print(f"  left out: {r.empty} image(s) without instances, {r.unmatched} LVIS image(s) without a COCO "
              "panoptic counterpart")
    if r.remaining:
        print(f"  {r.remaining} image(s) still to do: rerun the same command to continue")
    if r.manifest:
        print(f"  manifest: {r.manifest}")
    _problems(r.problems)
    if r.problems:
        print(f"  {len(r.problems)} image(s) failed; hannotation.pickle lists the others; rerun to retry them")
    return 1 if r.problems else 0


def _sbd(a: argparse.Namespace) -> int:
    from iis.data.prepare import prepare_sbd
    from iis.data.prepare.sbd import SBD_IMAGES

    r = prepare_sbd(a.root, checksum=not a.no_checksum, workers=a.workers, progress=not a.quiet)
    print(f"SBD {r.root}")
    for split in ("train", "val"):
        if split in r.instances:
            print(f"  {split}: {r.images[split]} images (standard {SBD_IMAGES[split]}), {r.instances[split]} "
                  f"instances, {r.buggy[split]} below the buggy-mask ratio 0.08 (dropped in training)")
    if r.digest:
        print(f"  sha256 of the manifest: {r.digest}\n  manifest: {r.manifest}")
    _problems(r.problems)
    print("  OK" if not r.problems else f"  {len(r.problems)} problem(s)")
    return 1 if r.problems else 0


def _checksum(a: argparse.Namespace) -> int:
    from iis.data.prepare import manifest_digest, verify_manifest, write_manifest

    if not Path(a.dir).is_dir():
        return _error(f"checksum: folder not found: {a.dir}")
    if a.verify:
        problems = verify_manifest(a.dir, a.manifest, workers=a.workers, progress=not a.quiet)
        _problems(problems)
        print(f"{a.dir}: " + ("matches its manifest" if not problems else f"{len(problems)} problem(s)"))
        return 1 if problems else 0
    out = write_manifest(a.dir, a.manifest, workers=a.workers, progress=not a.quiet)
    print(f"wrote {out} (sha256 {manifest_digest(out)})")
    return 0


def _check(a: argparse.Namespace) -> int:
    from iis.data import parse_dataset_args

    opts = parse_dataset_args(a.dataset_arg)
    if a.train_source and not a.datasets:
        return _check_train(a, opts)
    code = _check_eval(a, opts)
    if a.train_source and code != 2:
        code = max(code, _check_train(a, opts))
    return code


def _check_eval(a: argparse.Namespace, opts: dict) -> int:
    from iis.data import available_datasets, check_dataset, dataset_options, get_dataset, list_datasets
    from iis.data.prepare import MANIFEST_NAME, verify_manifest

    if not a.data_root:
        return _error("check: --data-root is required (or set $IIS_DATA_ROOT)")
    root = Path(a.data_root)
    if not root.is_dir():
        return _error(f"check: --data-root folder not found: {root}")
    found = available_datasets(root)
    names = [n.strip().lower().replace("-", "_") for n in a.datasets.split(",") if n.strip()] if a.datasets else \
        [n for n in found if n not in ("synthetic", "sbd_train")]
    unknown = [n for n in names if n not in list_datasets()]
    if unknown:
        return _error(f"check: unknown dataset(s) {', '.join(unknown)}; valid: {', '.join(list_datasets())}")
    missing = [n for n in names if n not in found and n not in ("synthetic", "folder")]
    if missing:
        return _error(f"check: no folder for {', '.join(missing)} under {root} (see `iis-eval --list` for the layout)")
    if not names:
        return _error(f"check: no dataset folder found under {root}")
    for n in names:
        bad = sorted(set(opts) - set(dataset_options(n)) - {"strict"})
        if bad:
            return _error(f"check: --dataset-arg {', '.join(bad)} not taken by dataset {n!r} "
                          f"(it takes: {', '.join(o for o in dataset_options(n) if o != 'strict') or 'nothing'})")
    datasets = []
    for n in names:  # open all first: a missing folder or a bad option value is an argument error
        datasets.append(get_dataset(n, root, **opts, **({} if n == "synthetic" else {"strict": False})))
    bad_sets = 0
    for ds in datasets:
        rep = check_dataset(ds)
        problems = list(rep["problems"])
        if ds.name != "synthetic" and (Path(rep["root"]) / MANIFEST_NAME).is_file():
            problems += verify_manifest(rep["root"])
        invalid = f", {rep['invalid']} invalid" if rep["invalid"] else ""
        print(f"{ds.name}: {rep['images']} images, {rep['instances']} instances{invalid} ({rep['root']})")
        _problems(problems)
        bad_sets += bool(problems)
    print("all datasets OK" if not bad_sets else f"{bad_sets} dataset(s) with problems")
    return 1 if bad_sets else 0


def _check_train(a: argparse.Namespace, opts: dict) -> int:
    import inspect

    from iis.data.train import TRAIN_SOURCES, build_train_source, check_train_source

    name = a.train_source
    if name not in TRAIN_SOURCES:
        return _error(f"check: --train-source {name!r} is not one of {', '.join(sorted(TRAIN_SOURCES))}")
    takes = [p for p in inspect.signature(TRAIN_SOURCES[name].__init__).parameters if p not in ("self", "root")]
    bad = sorted(set(opts) - set(takes))
    if bad:
        return _error(f"check: --dataset-arg {', '.join(bad)} not taken by training source {name!r} "
                      f"(it takes: {', '.join(takes)})")
    root = a.root or a.data_root
    src = build_train_source(name, root, **opts)  # missing folders / files: exit 2 through main()
    problems = check_train_source(src, workers=a.workers, cache=False)
    where = f" ({root})" if root and name not in ("synthetic", "synthetic_multi", "coco_json") else ""
    print(f"training source {name}: {len(src)} items{where}")
    _problems(problems)
    print("training data OK" if not problems else f"{len(problems)} unusable training item(s)")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``iis-data``; returns the exit code."""
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        if a.command == "prepare":
            return _cocolvis(a) if a.dataset == "cocolvis" else _sbd(a)
        if a.command == "checksum":
            return _checksum(a)
        return _check(a)
    except (FileNotFoundError, ValueError, OSError) as e:
        return _error(str(e))
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
