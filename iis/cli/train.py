"""``iis-train``: LightningCLI over :class:`iis.lightning.IISModule` subclasses and ``IISDataModule``.

Examples::

    iis-train fit --config experiments/quickstart.yaml
    iis-train fit --config experiments/simpleclick/default.yaml --data.root /data/cocolvis \\
        --model.init_args.pretrained /weights/mae_pretrain_vit_base.pth
    iis-train fit --config experiments/cplot/tiny.yaml --config experiments/trainer/cpu.yaml
    iis-train fit --config experiments/quickstart.yaml --ckpt_path last     # resume a killed run

Config files compose: a file's top-level ``defaults: [a.yaml, ../data/sbd.yaml]`` lists the files applied
before it (paths relative to it, each once), as lightning-hydra-template's defaults lists do; later
values override earlier ones, lists are replaced. ``experiments/trainer/`` and ``experiments/data/`` hold
the shared presets.

Every run has its own directory (:mod:`iis.cli.runs`). Left unset, ``trainer.default_root_dir`` is derived
from the experiment file, ``experiments/<method>/<exp>.yaml`` -> ``runs/<method>/<exp>`` (``+<preset>`` for
each preset file given after it), a run root: each fresh run gets ``version_N/`` in it and ``latest`` points
at the newest. A directory given explicitly is the run directory itself. It holds ``config.yaml`` (resolved),
``checkpoints/`` (``last.ckpt`` for resuming), the W&B run and ``noc_final.json``. Checkpoint and logger
folders left unset in a config are placed there; ``--ckpt_path last`` resumes the latest run in place and is
an error when it has no ``last.ckpt``.

Before anything is built the recipe is checked against the machine (:mod:`iis.cli.preflight`): GPUs,
``data.root``, pretrained weights. Bad input ends with one line ``iis-train: error: ...`` and exit 2.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn, Sequence

import yaml

from ..core.errors import IISError

__all__ = ["main", "build_cli", "expand_argv", "derive_run_dir", "PRESET_GROUPS", "DEFAULTS_KEY"]

PROG = "iis-train"
DEFAULTS_KEY = "defaults"  # top-level key of a config file: the files applied before it
PRESET_GROUPS = ("trainer", "data")  # experiments/<group>/<name>.yaml: shared presets, not experiments
DEFAULT_RUN_ROOT = "runs/default"  # the run root of a command line without an experiment file


class ConfigError(IISError):
    """A bad recipe or command line, reported in one line."""


# -- composition -------------------------------------------------------------------------------------------
def _config_args(argv: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(start, stop, path)`` of every ``--config PATH`` / ``--config=PATH`` / ``-c PATH`` in ``argv``."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--config", "-c") and i + 1 < len(argv):
            out.append((i, i + 2, argv[i + 1]))
            i += 2
            continue
        if a.startswith("--config="):
            out.append((i, i + 1, a.split("=", 1)[1]))
        i += 1
    return out


def _read_defaults(path: Path) -> list[Path]:
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    entries = data.get(DEFAULTS_KEY) if isinstance(data, dict) else None
    if entries is None:
        return []
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(f"{path}: '{DEFAULTS_KEY}' must be a list of config paths relative to the file")
    out = []
    for e in entries:
        p = Path(os.path.normpath(path.parent / e))
        if not p.is_file():
            raise ConfigError(f"{path}: {DEFAULTS_KEY} entry {e!r} -> {p}: no such file")
        out.append(p)
    return out


def _expand(path: Path, seen: set[Path], stack: tuple[Path, ...]) -> list[Path]:
    key = path.resolve()
    if key in stack:
        raise ConfigError(f"{path}: '{DEFAULTS_KEY}' form a cycle: {' -> '.join(str(p) for p in stack + (key,))}")
    if key in seen:
        return []
    out: list[Path] = []
    for d in _read_defaults(path):
        out += _expand(d, seen, stack + (key,))
    seen.add(key)
    return out + [path]


def expand_argv(argv: Sequence[str]) -> list[str]:
    """Replace every ``--config FILE`` by the files of its ``defaults`` (recursively, each once) and itself."""
    argv = list(argv)
    spans = _config_args(argv)
    if not spans:
        return argv
    out, last, seen = [], 0, set()
    for start, stop, path in spans:
        out += argv[last:start]
        for p in _expand(Path(path), seen, ()):
            # each file's `defaults` are expanded here: reset the key so a printed/saved config has none
            out += ["--config", str(p), f"--{DEFAULTS_KEY}=null"]
        last = stop
    return out + argv[last:]


def _is_preset(path: Path) -> bool:
    return path.parent.name in PRESET_GROUPS


def recipe_of(argv: Sequence[str]) -> tuple[Path | None, list[Path]]:
    """The experiment file of a command line (its last ``--config`` that is no preset) and the presets after it."""
    paths = [Path(p) for _, _, p in _config_args(argv)]
    main_i = max((i for i, p in enumerate(paths) if not _is_preset(p)), default=None)
    if main_i is None:
        return None, []
    return paths[main_i], [p for p in paths[main_i + 1:] if _is_preset(p)]


def experiment_name(path: Path) -> tuple[str | None, str]:
    """``(method, exp)`` of ``experiments/<method>/<exp>.yaml``; ``(None, exp)`` for ``experiments/<exp>.yaml``."""
    parent = path.parent
    if parent.name == "experiments" or any((parent / g).is_dir() for g in PRESET_GROUPS):
        return None, path.stem
    return parent.name, path.stem


def derive_run_dir(argv: Sequence[str]) -> str | None:
    """``runs/<method>/<exp>[+preset...]`` for the experiment file of ``argv`` (None without one)."""
    main, presets = recipe_of(argv)
    if main is None:
        return None
    method, exp = experiment_name(main)
    name = "+".join([exp] + [p.stem for p in presets])
    return str(Path("runs", *(filter(None, [method])), name))


# -- one-line errors -----------------------------------------------------------------------------------------
def _allowed_for(type_path: str) -> list[str] | None:
    """Keys a TypedDict / parameters a class or function accepts, from its import path."""
    import importlib
    import inspect
    import typing

    mod, _, name = type_path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError, ValueError):
        return None
    if isinstance(obj, type) and issubclass(obj, dict) and hasattr(obj, "__annotations__"):
        return sorted(typing.get_type_hints(obj))
    try:
        from jsonargparse._parameter_resolvers import get_signature_parameters

        return sorted(p.name for p in get_signature_parameters(obj, None))
    except Exception:  # noqa: BLE001 - best effort for the hint only
        try:
            return sorted(p for p in inspect.signature(obj).parameters if p not in ("self", "args", "kwargs"))
        except (TypeError, ValueError):
            return None


_COMPLAINT = re.compile(r"Unexpected keys: \{(?P<keys>[^}]*)\}|Option '(?P<opt>[^']+)' is not accepted|"
                        r"No action for key \"(?P<act>[^\"]+)\"|(?P<other>Expected a (?!<class 'NoneType'>).*|"
                        r"Missing required keys.*|Not a valid .*|.*could not be (?:found|imported).*)")


def condense_parse_error(message: str) -> str:
    """jsonargparse's nested multi-line message -> one line: the full key, the bad option or value, and
    (for an unknown option) the accepted ones."""
    path: list[str] = []
    owner: str | None = None  # the TypedDict or class whose options were wrong
    for raw in message.splitlines():
        line = raw.strip().lstrip("- ").strip()
        if m := re.match(r'Parser key "([^"]+)"', line):
            path.append(m.group(1))
        elif m := re.match(r"Problem with given class_path '([^']+)'", line):
            path.append("init_args")
            owner = m.group(1)
        elif m := re.match(r"Subtypes: \[<class '([\w.]+)'>", line):
            owner = m.group(1) if m.group(1) != "NoneType" else owner
        elif m := _COMPLAINT.search(line):
            key = ".".join(path)
            where = f"{key}: " if key else ""
            bad = (re.findall(r"'([^']+)'", m.group("keys")) if m.group("keys") is not None
                   else [m.group("opt") or m.group("act")] if (m.group("opt") or m.group("act")) else [])
            if not bad:
                return f"{where}{m.group('other').rstrip('.')}"
            allowed = _allowed_for(owner) if owner else None
            hint = f"; accepted: {', '.join(allowed)}" if allowed else ""
            if "pretrained" in bad and key.endswith("model_kwargs"):
                hint += " (pretrained weights are model.init_args.pretrained)"
            return f"{where}unknown option{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}{hint}"
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    return "; ".join(lines[:3]) if lines else message


def _readable(text: str) -> str:
    text = text.replace("Expected a ", "expected ")
    text = re.sub(r"<class '(?:builtins\.)?([\w.]+)'>", r"\1", text)
    return re.sub(r"typing\.Literal\[([^\]]*)\]", r"one of \1", text)


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


# -- the CLI -------------------------------------------------------------------------------------------------
def _cli_class():
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from . import preflight, runs

    class IISArgumentParser(LightningArgumentParser):
        def error(self, message: str, ex: Exception | None = None):  # one line instead of usage + traceback
            if not self.exit_on_error:  # a nested parser: jsonargparse handles (and reports) it further up
                return super().error(message, ex)
            _fail(_readable(condense_parse_error(message)))

    class IISCLI(LightningCLI):
        run_dir: str | None = None  # derived from the experiment file (build_cli)
        recipe: Path | None = None  # that file
        presets: list[Path] = []

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("parser_class", IISArgumentParser)
            super().__init__(*args, **kwargs)

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument(f"--{DEFAULTS_KEY}", type=list[str] | None, default=None,
                                help="configs applied before this one, relative to it (expanded by iis-train)")

        def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
            super().parse_arguments(parser, args)
            self._prepared_data = None
            self._claim: Path | None = None
            self._complete_and_check(self.config.get("subcommand"))

        def _complete_and_check(self, subcommand: str | None) -> None:
            """Run directory and logger folder from the experiment file, then the machine check, before any
            object is built; for ``fit`` the training set is opened too."""
            cfg = self.config[subcommand] if subcommand else self.config
            cfg[DEFAULTS_KEY] = None  # already expanded; the saved config.yaml is complete without them
            derived = self.run_dir or DEFAULT_RUN_ROOT
            if not cfg.trainer.get("default_root_dir"):  # no experiment file to derive it from (build_cli)
                cfg.trainer.default_root_dir = DEFAULT_RUN_ROOT
            try:
                preflight.check(cfg, recipe=self.recipe, presets=self.presets)
                if subcommand == "fit":
                    self._resolve_run(cfg, versioned=cfg.trainer.default_root_dir == derived)
                if subcommand == "fit" and cfg.get("data") is not None:
                    self._prepared_data = preflight.open_training_set(cfg.data.as_dict())
            except IISError as e:
                _fail(str(e))
            root = cfg.trainer.default_root_dir
            logger = cfg.trainer.get("logger")
            for lg in logger if isinstance(logger, list) else [logger]:
                init = getattr(lg, "init_args", None) if lg is not None and not isinstance(lg, bool) else None
                if init is not None and "save_dir" in init and not init.save_dir:
                    init.save_dir = root

        def _resolve_run(self, cfg: Any, versioned: bool) -> None:
            """This fit's own run directory (:mod:`iis.cli.runs`) and the checkpoint it resumes, checked."""
            ckpt = cfg.get("ckpt_path")
            model = cfg.model.init_args.get("model") if cfg.get("model") and cfg.model.get("init_args") else None
            if ckpt and ckpt != "last":
                preflight.check_checkpoint(ckpt, model)
            run, resolved, fresh = runs.resolve_run(cfg.trainer.default_root_dir, ckpt, versioned=versioned)
            self._claim = Path(run) if fresh else None  # created once everything is built
            if ckpt == "last":
                preflight.check_checkpoint(resolved, model, what="--ckpt_path last")
            cfg.trainer.default_root_dir, cfg.ckpt_path = run, resolved
            if resolved and "weights_only" in cfg and cfg.weights_only is None:
                cfg.weights_only = True  # Lightning's resume loads with torch.load: no code from the file

        def instantiate_classes(self) -> None:
            from lightning.fabric.utilities.exceptions import MisconfigurationException

            try:
                super().instantiate_classes()
            except (IISError, ValueError, FileNotFoundError, MisconfigurationException) as e:
                if self._claim is not None:
                    runs.discard(self._claim)
                _fail(" ".join(str(e).split()))
            if self._claim is not None:  # a fresh run's version directory, now that nothing can stop it
                try:
                    runs.claim(self._claim)
                except IISError as e:
                    _fail(str(e))
            if self._prepared_data is not None:  # the datamodule whose training set preflight opened
                self.datamodule = self._prepared_data

        def before_fit(self) -> None:
            root = Path(self.trainer.default_root_dir)
            for cb in self.trainer.checkpoint_callbacks:
                if getattr(cb, "dirpath", None) is None:
                    cb.dirpath = str(root / "checkpoints")

        def after_fit(self) -> None:
            # close the W&B run so an offline run directory is complete (summary written, syncable)
            if any(type(lg).__name__.endswith("WandbLogger") for lg in self.trainer.loggers):
                import wandb

                if wandb.run is not None:
                    wandb.finish()

    return IISCLI


def build_cli(argv: Sequence[str], **kwargs: Any):
    """Expand ``argv`` (config ``defaults``), derive the run directory and run/construct the CLI.

    ``kwargs`` go to ``LightningCLI`` (e.g. ``run=False`` to parse and instantiate only).
    """
    try:
        args = expand_argv(argv)
    except IISError as e:
        _fail(str(e))
    import iis.methods  # noqa: F401  (registers models and method modules)
    from ..lightning.datamodule import IISDataModule
    from ..lightning.module import IISModule

    # the expanded command line goes in as `args` while sys.argv keeps the user's (a DDP launch re-runs it)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    cls = kwargs.pop("cli_class", None) or _cli_class()
    cls.run_dir = derive_run_dir(argv)
    cls.recipe, cls.presets = recipe_of(argv)
    if cls.run_dir:  # first, so a config file or flag that names the run directory still wins
        at = 1 if args and not args[0].startswith("-") else 0  # after the subcommand
        args = args[:at] + [f"--trainer.default_root_dir={cls.run_dir}"] + args[at:]
    kwargs.setdefault("save_config_kwargs", {"overwrite": True})
    return cls(IISModule, IISDataModule, subclass_mode_model=True, args=args, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("WANDB_SILENT", "true")
    build_cli(list(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
