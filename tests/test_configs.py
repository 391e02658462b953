"""Every experiment config parses against the real class signatures; tiny ones also instantiate."""

from pathlib import Path

import pytest

from iis.cli.train import _cli_class
from iis.lightning.datamodule import IISDataModule
from iis.lightning.module import IISModule
from iis.models.registry import list_models

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p for p in (ROOT / "experiments").rglob("*.yaml") if not p.name.startswith("_"))


def _configs(path: Path) -> list[str]:
    base = path.parent / "_base.yaml"
    return ([str(base)] if base.exists() and path.parent.name != "experiments" else []) + [str(path)]


def _cli(path: Path, instantiate: bool):
    cls = _cli_class()

    class ParseOnly(cls):
        def instantiate_classes(self):  # parse and type-check only: paper-size models are not built
            if instantiate:
                super().instantiate_classes()

    args = [a for c in _configs(path) for a in ("--config", c)]
    args += ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.logger=false"]
    return ParseOnly(IISModule, IISDataModule, subclass_mode_model=True, run=False, args=args,
                     save_config_callback=None)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT / "experiments")))
def test_experiment_config_parses(path):
    cli = _cli(path, instantiate=False)
    cfg = cli.config
    assert cfg.model.init_args.model in list_models(), cfg.model.init_args.model
    assert cfg.trainer.default_root_dir, "every experiment names its run directory"


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if p.stem in ("tiny", "quickstart")],
                         ids=lambda p: str(p.relative_to(ROOT / "experiments")))
def test_tiny_configs_instantiate(path):
    cli = _cli(path, instantiate=True)
    assert isinstance(cli.model, IISModule) and cli.datamodule.hparams.source == "synthetic"
