"""``iis-train``'s check of a recipe against the machine, before anything heavy starts.

One line names everything that is missing (GPUs, the training set, pretrained weights), how to get it,
and the command that runs here instead. :func:`check` reads the parsed config only; whether ``data.root``
holds a prepared dataset is checked by opening the training set (:func:`open_training_set`), still before
the model is built.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Any

from ..core.errors import IISError

__all__ = ["check", "check_checkpoint", "open_training_set", "data_error", "PREPARE", "count_gpus"]

# how to obtain each training source (iis/data/prepare/README.md)
PREPARE = {
    "sbd": ("SBD (an SBD download's benchmark_RELEASE/dataset folder, checked with "
            "`iis-data prepare sbd --root DIR`)"),
    "cocolvis": ("COCO+LVIS (built with `iis-data prepare cocolvis --lvis DIR --coco-panoptic DIR --images "
                 "DIR/train2017 --out ROOT`; pass ROOT)"),
    "folder": "a folder with images/ and masks/ (masks named like the images)",
}
NO_ROOT = ("synthetic", "synthetic_multi", "coco_json")  # sources configured by source_kwargs alone


def count_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _requested_gpus(trainer: Any) -> int | None:
    """GPUs a trainer config asks for on this node, or None when it asks for none (or says "auto")."""
    acc = str(trainer.get("accelerator") or "auto").lower()
    if acc not in ("gpu", "cuda"):
        return None
    devices = trainer.get("devices", "auto")
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        devices = devices.strip()
        if devices in ("auto", "-1"):
            return 1  # at least one
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        devices = int(devices) if devices.lstrip("-").isdigit() else 1
    return 1 if devices == -1 else int(devices)


def _single_process(trainer: Any) -> bool:
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    return nodes == 1 and (devices == 1 or devices in ("1", [0], (0,)))


def _how_to_run_here(recipe: Path | None) -> str:
    """The command that trains something on this machine: the method's tiny recipe, else the quickstart."""
    by_make = "MAKELEVEL" in os.environ
    if recipe is not None:
        tiny = recipe.parent / "tiny.yaml"
        if tiny.is_file() and tiny.resolve() != recipe.resolve():
            method = recipe.parent.name
            return (f"make train METHOD={method} EXP=tiny" if by_make
                    else f"iis-train fit --config {tiny}") + " (a tiny model on synthetic data, CPU, minutes)"
    quick = Path("experiments/quickstart.yaml")
    return "make train" if by_make else f"iis-train fit --config {quick}"


def check(cfg: Any, recipe: Path | None = None, presets: list[Path] | None = None) -> None:
    """Raise one :class:`IISError` line listing what this machine lacks for ``cfg`` (the parsed fit config).

    Also switches a single-device run off DDP/sync-BN (no other process to talk to), so
    ``--trainer.accelerator cpu --trainer.devices 1`` runs any recipe.
    """
    from ..lightning.datamodule import SOURCES
    from ..lightning.module import NO_PRETRAINED
    from ..models.registry import model_entry

    trainer, data, model = cfg.trainer, cfg.get("data"), cfg.get("model")
    missing: list[str] = []
    want = _requested_gpus(trainer)
    if want:
        have = count_gpus()
        if have < want:
            instead = (f"--trainer.devices {have} uses them; data.batch_size is per device" if have else
                       "--trainer.accelerator cpu --trainer.devices 1 runs it on CPU")
            missing.append(f"{want} GPU{'s' if want > 1 else ''} (found {have or 'none'}; {instead})")
    if data is not None:
        source = data.get("source")
        if source not in SOURCES:
            raise IISError(f"data.source: {source!r} is not one of {', '.join(sorted(SOURCES))}")
        root = data.get("root")
        if source not in NO_ROOT:
            what = PREPARE.get(source, f"the {source} training set")
            if not root:
                missing.append(f"data.root: {what}")
            elif not Path(root).is_dir():
                missing.append(f"data.root {root}: no such folder; expected {what}")
    init = model.get("init_args") if model is not None else None
    if init is not None and init.get("model"):
        entry = model_entry(init.model)
        pretrained = init.get("pretrained")
        if pretrained is None and entry.pretrained:
            missing.append(f"model.init_args.pretrained: {entry.pretrained} (a local file; or `none` to train "
                           f"{init.model} from scratch)")
        elif pretrained and pretrained.lower() != NO_PRETRAINED and not Path(pretrained).is_file():
            missing.append(f"model.init_args.pretrained {pretrained}: no such file")
    if missing:
        name = str(recipe) if recipe is not None else "this config"
        if presets:
            name += " + " + " + ".join(str(p) for p in presets)
        raise IISError(f"{name} needs {'; '.join(missing)}. Runs here: {_how_to_run_here(recipe)}")
    if _single_process(trainer):
        changed = []
        if str(trainer.get("strategy") or "auto").startswith("ddp"):
            trainer.strategy = "auto"
            changed.append("strategy auto")
        if trainer.get("sync_batchnorm"):
            trainer.sync_batchnorm = False
            changed.append("sync_batchnorm false")
        if changed:
            print(f"iis-train: note: one device, so {' and '.join(changed)} (no other process to synchronise)",
                  file=sys.stderr)


def open_training_set(data: dict[str, Any]):
    """Build the ``IISDataModule`` of ``data`` (the config's data section) and open its training set, so a
    missing or unprepared dataset is one line before the model is built. Returns the datamodule."""
    from ..lightning.datamodule import IISDataModule

    try:
        dm = IISDataModule(**data)
        dm.setup("fit")
    except (IISError, ValueError, TypeError, FileNotFoundError, OSError) as e:
        raise IISError(data_error(data, e)) from e
    return dm


def data_error(data: dict[str, Any], err: Exception) -> str:
    """One line for a training set that could not be opened, with how to prepare it."""
    source, root = data.get("source"), data.get("root")
    what = PREPARE.get(source)
    hint = f"; data.root must be {what}" if what else ""
    where = f"data.root {root}" if root else f"data.source {source}"
    return f"{where}: {' '.join(str(err).split())}{hint}"


_TRAINING_KEYS = ("state_dict", "optimizer_states", "loops")  # what Lightning needs to resume a fit


def check_checkpoint(path: str, model: str | None = None, what: str = "--ckpt_path") -> None:
    """One line unless ``path`` is a training checkpoint Lightning can resume ``model`` (a registered model
    name) from. Read with ``weights_only=True`` (no code from the file runs) and memory-mapped (no full read)."""
    import torch

    p = Path(path)
    name = f"{what} {path}" if what == "--ckpt_path" else f"{what} ({path})"
    if not p.is_file():
        raise IISError(f"{name}: no such file")
    if not zipfile.is_zipfile(p):  # torch.save's format (every Lightning checkpoint) is a zip archive
        raise IISError(f"{name}: not a training checkpoint of iis-train (not a torch checkpoint file)")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - whatever the reason, it is not a checkpoint we can resume
        detail = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise IISError(f"{name}: not a training checkpoint of iis-train ({detail})") from None
    missing = [k for k in _TRAINING_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise IISError(f"{name}: not a training checkpoint of iis-train (no {', '.join(missing)}; weights alone "
                       f"go to model.init_args.pretrained, or evaluate them with iis-eval)")
    trained = (ck.get("hyper_parameters") or {}).get("model")
    if model and trained and trained != model:
        raise IISError(f"{name}: trained model {trained!r}, but this config builds {model!r}")
