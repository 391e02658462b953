"""Every experiment file composes, type-checks and instantiates; recipe defaults live in one place.

Each experiment is built for real (its module class, the datamodule, the callbacks, the trainer) with tiny
overrides: CPU, the family's tiny model size instead of a paper size (same module class and options), an empty
data folder. Misspelt options are refused from YAML and from the command line, naming the option.
"""

from __future__ import annotations

import functools
import inspect
import subprocess
import typing
from pathlib import Path
from unittest import mock

import pytest
import yaml

from iis.cli import preflight
from iis.cli.train import _cli_class, build_cli, derive_run_dir, expand_argv
from iis.lightning.module import IISModule
from iis.models.registry import list_models, model_entry

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"
PRESETS = ("trainer", "data")
EXPERIMENTS = sorted(p for p in EXP.rglob("*.yaml") if not p.name.startswith("_") and p.parent.name not in PRESETS)
TINY_MODEL = {"simpleclick": "simpleclick_vit_test", "adaptiveclick": "adaptiveclick_test", "cplot": "cplot_test",
              "gpcis": "gpcis_test", "ritm": "ritm_hrnet_test", "ritm_gpcis": "ritm_gpcis_test"}


def _rel(p: Path) -> str:
    return str(p.relative_to(EXP))


def _chain(path: Path) -> list[Path]:
    """The files an experiment is made of, in application order."""
    args = expand_argv(["--config", str(path)])
    return [Path(args[i + 1]) for i, a in enumerate(args) if a == "--config"]


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _parse(args: list[str], instantiate: bool):
    cls = _cli_class()

    class Cli(cls):
        def instantiate_classes(self):
            if instantiate:
                super().instantiate_classes()

    return build_cli(args, cli_class=Cli, run=False, save_config_callback=None)


@functools.lru_cache(maxsize=None)
def _parsed(path: Path):
    with mock.patch.object(preflight, "check", lambda *a, **k: None):
        return _parse(["--config", str(path)], instantiate=False).config


def _config(path: Path):
    """The resolved config of an experiment as written (the machine check is skipped: no GPUs/data here)."""
    return _parsed(path).clone()


@pytest.fixture(scope="module")
def families():
    # the GPCIS-backbone RITM baselines are their own model class (protocol gpcis): their own tiny size
    return {name: "ritm_gpcis" if name.startswith("ritm_gpcis") else name.split("_", 1)[0] for name in list_models()}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_rel)
def test_experiment_instantiates(path, tmp_path, monkeypatch, families):
    monkeypatch.setattr(preflight, "count_gpus", lambda: 0)
    cfg = _config(path)
    name = cfg.model.init_args.model
    assert name in list_models(), name
    tiny = TINY_MODEL[families[name]]
    args = ["--config", str(path), "--config", str(EXP / "trainer" / "cpu.yaml"), f"--trainer.default_root_dir={tmp_path}",
            f"--model.init_args.model={tiny}", "--model.init_args.pretrained=none", f"--data.root={tmp_path}"]
    cli = _parse(args, instantiate=True)
    assert isinstance(cli.model, IISModule) and cli.model.model.iis_spec["name"] == tiny
    assert type(cli.model).__module__ + "." + type(cli.model).__name__ == cfg.model.class_path
    assert cli.model.hparams.model_kwargs == cfg.model.init_args.model_kwargs  # the experiment's options, kept
    assert cli.datamodule.hparams.source == cfg.data.source
    assert cli.trainer.default_root_dir == str(tmp_path)
    assert cli.trainer.callbacks and cli.trainer.num_devices == 1
    # the evaluation preset: written by the recipe (tiny: plain; ritm: gpcis) or else the model's own
    explicit = _explicit_init_args(path).get("protocol")
    assert cfg.model.init_args.protocol == explicit
    assert _default_protocol(name) == _default_protocol(tiny)  # one model class per family
    assert cli.model.hparams.protocol == (explicit or _default_protocol(name))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_rel)
def test_run_directory_derived_and_not_written_by_hand(path):
    chain = _chain(path)
    assert chain[-1] == path and len(set(chain)) == len(chain)
    for f in chain:
        assert "default_root_dir" not in (_yaml(f).get("trainer") or {}), f"{f} writes its run directory"
    method = None if path.parent == EXP else path.parent.name
    assert derive_run_dir(["--config", str(path)]) == str(Path("runs", *filter(None, [method]), path.stem))
    assert derive_run_dir(["--config", str(path), "--config", str(EXP / "trainer/cpu.yaml")]).endswith(
        f"{path.stem}+cpu")


def test_data_sources_come_from_the_presets():
    for f in EXP.rglob("*.yaml"):
        data = _yaml(f).get("data") or {}
        if "source" in data:
            assert f.parent.name == "data", f"{_rel(f)} sets data.source; use a data preset (experiments/data)"
    for p in EXPERIMENTS:
        presets = [f for f in _chain(p) if "source" in (_yaml(f).get("data") or {})]
        assert presets and all(f.parent == EXP / "data" for f in presets), p  # the last one applies


def test_tiny_recipes_share_one_definition():
    tinies = sorted(EXP.glob("*/tiny.yaml"))
    assert {t.parent.name for t in tinies} == set(TINY_MODEL) - {"ritm_gpcis"}  # one tiny recipe per method folder
    for t in tinies:
        body = [ln for ln in t.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        assert len(body) <= 2 and EXP / "_tiny.yaml" in _chain(t), t


def _explicit_init_args(path: Path) -> dict:
    """model.init_args values written in the files of an experiment (later files win)."""
    out: dict = {}
    for f in _chain(path):
        out.update(((_yaml(f).get("model") or {}).get("init_args") or {}))
    return out


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_rel)
def test_yaml_states_only_what_differs_from_the_module(path):
    """A default lives in the module signature; a file restating it could silently disagree later."""
    cfg = _config(path)
    cls = _import(cfg.model.class_path)
    defaults = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    for key, value in _explicit_init_args(path).items():
        if key in defaults:
            default = list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]
            assert value != default, f"{_rel(path)}: model.init_args.{key}: {value!r} restates the module default"


def _import(path: str):
    mod, _, name = path.rpartition(".")
    return getattr(__import__(mod, fromlist=[name]), name)


def test_no_module_carries_its_own_protocol_default():
    """The evaluation preset is the model's ``default_protocol`` (one place) unless a recipe writes one."""
    assert inspect.signature(IISModule.__init__).parameters["protocol"].default is None
    for cls in {_import(_config(p).model.class_path) for p in EXPERIMENTS} - {IISModule}:
        assert "protocol" not in inspect.signature(cls.__init__).parameters, f"{cls.__name__} has its own default"


def _default_protocol(name: str) -> str:
    import torch

    with torch.device("meta"):
        return model_entry(name).builder().default_protocol


def test_ritm_gpcis_baselines_use_the_gpcis_recipe():
    """GPCIS Table 2's RITM rows train "under the same experimental settings": GPCIS's optimiser, schedule,
    segmentor LR rule and protocol, with RITM's head and loss."""
    from iis.methods.gpcis.module import GPCIS, GPCIS_LR_MULT

    gp = inspect.signature(GPCIS.__init__).parameters
    for path in sorted((EXP / "ritm").glob("gpcis_*.yaml")):
        init = _config(path).model.init_args
        assert init.lr == gp["lr"].default and list(init.milestones) == list(gp["milestones"].default), path
        assert init.protocol == "gpcis", path
        if init.model.startswith("ritm_gpcis_"):
            assert dict(init.lr_mult) == GPCIS_LR_MULT, path


def test_loss_names_are_the_loss_zoo():
    from iis.lightning.module import LossName
    from iis.models.losses import LOSSES

    assert set(typing.get_args(LossName)) == set(LOSSES)


# -- refusing mistakes, naming them --------------------------------------------------------------------------
def _error(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        _parse(args, instantiate=False)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("iis-train: error: ")
    return err


def test_misspelt_model_option_in_yaml_is_refused(tmp_path, capsys):
    exp = tmp_path / "typo.yaml"
    exp.write_text(f"defaults: [{EXP / 'cplot' / 'ablation_blocks_3.yaml'}]\n"
                   "model: {init_args: {model_kwargs: {num_blockz: 3}}}\n")
    err = _error(capsys, ["--config", str(exp)])
    assert "model.init_args.model_kwargs: unknown option 'num_blockz'" in err
    assert "accepted: " in err and " num_blocks," in err


@pytest.mark.parametrize("arg, expected", [
    ("--model.init_args.model_kwargs.num_blockz=3", "model.init_args.model_kwargs: unknown option 'num_blockz'"),
    ("--model.init_args.model_kwargs={num_blockz: 3}", "model.init_args.model_kwargs: unknown option 'num_blockz'"),
    ("--model.init_args.model_kwargs.num_blocks=three", "model.init_args.model_kwargs: expected int"),
    ("--model.init_args.lrr=1", "model.init_args: unknown option 'lrr'; accepted: alpha, beta,"),
    ("--model.init_args.model=cplot_tset", "model.init_args.model: expected one of 'cplot_vit_base'"),
    ("--model.init_args.model_kwargs={pretrained: w.pth}", "(pretrained weights are model.init_args.pretrained)"),
    ("--trainer.callbacks.every_n_epoch=1", "trainer.callbacks.init_args: unknown option 'every_n_epoch'"),
])
def test_misspelt_option_on_the_command_line_is_refused(capsys, arg, expected):
    err = _error(capsys, ["--config", str(EXP / "cplot" / "tiny.yaml"), arg])
    assert expected in err


def test_misspelt_adaptiveclick_switch_is_refused(capsys):
    err = _error(capsys, ["--config", str(EXP / "adaptiveclick" / "tiny.yaml"), "--model.init_args.afl_adaptve=false"])
    assert "unknown option 'afl_adaptve'" in err and "afl_adaptive" in err


def test_defaults_lists_compose_in_order_and_refuse_cycles(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("defaults: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("defaults: [a.yaml]\n")
    with pytest.raises(SystemExit):
        build_cli(["--config", str(tmp_path / "a.yaml")], run=False)
    assert "form a cycle" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("defaults: [missing.yaml]\n")
    with pytest.raises(SystemExit):
        build_cli(["--config", str(tmp_path / "c.yaml")], run=False)
    assert "defaults entry 'missing.yaml'" in capsys.readouterr().err
    chain = _chain(EXP / "cplot" / "ablation_blocks_3.yaml")
    assert [_rel(p) for p in chain] == ["trainer/ddp4.yaml", "cplot/_base.yaml", "data/sbd.yaml",
                                        "cplot/ablation_blocks_3.yaml"]


def test_make_lists_and_runs_every_experiment():
    listing = subprocess.run(["make", "-s", "experiments"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for p in EXPERIMENTS:
        if p.parent == EXP:
            continue
        assert f"METHOD={p.parent.name:<13s} EXP={p.stem} " in listing, p
        cmd = subprocess.run(["make", "-n", "train", f"METHOD={p.parent.name}", f"EXP={p.stem}", "TRAINER=cpu"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert f"iis-train fit --config experiments/{_rel(p)} --config experiments/trainer/cpu.yaml" in cmd
    quick = subprocess.run(["make", "-n", "train"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "iis-train fit --config experiments/quickstart.yaml" in quick
