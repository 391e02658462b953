"""The model contract of :mod:`iis.models.base`, checked on every registered model family.

Every registered model is built (on the meta device: no memory, no weights) with its declared options; the
tiny sizes (``*_test``, ``simpleclick_vit_nano``, and each tiny segmentor of the GPCIS/RITM tests) also run:
output shape and dtype, finite values, ``forward_train["logits"] == forward`` in eval mode, eval-mode
determinism, a gradient of the method's own training loss on every trainable parameter, and the
``iis-eval --ckpt`` round trip (IISModule's checkpoint hook -> ``build_method(ckpt=...)``).
"""

from __future__ import annotations

import typing

import pytest
import torch

from iis.core.protocol import PRESETS
from iis.eval.loading import build_method
from iis.methods.adaptiveclick.module import AdaptiveClick, AdaptiveClickName
from iis.methods.cplot.module import CPlot, CPlotName
from iis.methods.custom.module import Custom, CustomName
from iis.methods.gpcis.module import GPCIS, GPCISName
from iis.methods.ritm.module import RITM, RITMName
from iis.methods.simpleclick.module import SimpleClick, SimpleClickName
from iis.models.registry import create_model, list_models, model_entry

# family prefix -> (its LightningModule, the Literal of its model names)
FAMILIES = {
    "simpleclick": (SimpleClick, SimpleClickName),
    "adaptiveclick": (AdaptiveClick, AdaptiveClickName),
    "cplot": (CPlot, CPlotName),
    "gpcis": (GPCIS, GPCISName),
    "ritm": (RITM, RITMName),
    "custom": (Custom, CustomName),  # our own baselines (ritm_effnet_*): named after RITM, trained by Custom
}
# the sizes that run here: (registry name, builder options)
SMALL = [("simpleclick_vit_test", {}), ("simpleclick_vit_nano", {}), ("adaptiveclick_test", {}), ("cplot_test", {}),
         ("gpcis_test", {}), ("gpcis_test", {"segmentor": "hrnet_tiny"}), ("gpcis_test", {"segmentor": "segformer_tiny"}),
         ("ritm_hrnet_test", {}), ("ritm_gpcis_test", {}), ("ritm_gpcis_test", {"segmentor": "hrnet_tiny"}),
         ("ritm_gpcis_test", {"segmentor": "segformer_tiny"}), ("ritm_effnet_test", {}),
         ("ritm_effnet_test", {"with_prev_mask": False})]
H, W = 40, 56  # neither a multiple of the ViT patches nor of HRNet's 32: models must pad and crop back


def _family(name: str) -> str:
    if name in typing.get_args(CustomName):
        return "custom"
    return name.split("_", 1)[0]


def _ids(case):
    name, kw = case
    return name + "".join(f"-{v}" for v in kw.values())


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 3, H, W, generator=g)
    clicks = torch.tensor([[[20.0, 15.0, 1.0], [45.0, 30.0, 0.0], [-1.0, -1.0, -1.0]],
                           [[10.0, 30.0, 1.0], [-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]])
    prev = torch.rand(2, 1, H, W, generator=g)
    target = torch.zeros(2, 1, H, W)
    target[:, :, 8:30, 10:40] = 1
    target[:, :, 0:2] = -1  # some ignore pixels
    return image, clicks, prev, target


def _module(name: str, kw: dict):
    torch.manual_seed(0)
    cls, _ = FAMILIES[_family(name)]
    return cls(model=name, model_kwargs=kw or None, pretrained="none")


def test_every_registered_model_is_covered():
    names = list_models()
    assert {_family(n) for n in names} == set(FAMILIES), "a new family needs an entry in FAMILIES and SMALL"
    small = {n for n, _ in SMALL}
    for fam in FAMILIES:
        assert any(_family(n) == fam for n in small), f"family {fam} has no tiny size in SMALL"
    # each module's typed model names are exactly its family's registered names
    for fam, (_, literal) in FAMILIES.items():
        assert set(typing.get_args(literal)) == {n for n in names if _family(n) == fam}, fam


@pytest.mark.parametrize("name", list_models())
def test_registered_model_builds_and_declares_its_contract(name):
    entry = model_entry(name)
    assert entry.options is not None, f"{name}: register_model(..., options=<TypedDict>) is missing"
    with torch.device("meta"):  # paper sizes too: no memory is allocated
        model = create_model(name)
    assert model.iis_spec == {"name": name, "kwargs": {}}
    assert model.default_protocol in PRESETS
    assert isinstance(model.with_prev_mask, bool)
    with pytest.raises(ValueError, match="unknown option 'no_such_option'"):
        create_model(name, no_such_option=1)


@pytest.mark.parametrize("case", SMALL, ids=_ids)
def test_forward_contract(case):
    name, kw = case
    model = _module(name, kw).model.eval()
    image, clicks, prev, _ = _inputs()
    prev = prev if model.with_prev_mask else None
    with torch.no_grad():
        out = model(image, clicks, prev)
        again = model(image, clicks, prev)
        train_out = model.forward_train(image, clicks, prev)
    assert out.shape == (2, 1, H, W) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(out, again), "eval mode must be deterministic"
    assert torch.equal(train_out["logits"], out), "forward_train()['logits'] must equal forward()"
    # the padding rows do not matter, and each image sees only its own clicks
    extra = torch.cat([clicks, torch.full((2, 2, 3), -1.0)], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(image, extra, prev), out, rtol=1e-5, atol=1e-5)
        solo = model(image[1:], clicks[1:], None if prev is None else prev[1:])
    torch.testing.assert_close(solo, out[1:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", SMALL, ids=_ids)
def test_training_loss_reaches_every_parameter(case):
    name, kw = case
    module = _module(name, kw)
    model = module.model.train()
    for m in model.modules():  # stochastic depth may drop a whole branch for a batch: not a disconnection
        if "DropPath" in type(m).__name__:
            m.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # move off zero-initialised projections (e.g. deformable attention) whose inputs get
        for p in model.parameters():  # no gradient at initialisation by design: this checks connectivity
            p.add_(torch.randn_like(p) * 1e-3)  # small: GPCIS clamps its prior scale to [0.01, 0.05]
    image, clicks, prev, target = _inputs()
    outputs = model.forward_train(image, clicks, prev if model.with_prev_mask else None)
    loss, terms = module.compute_loss(outputs, target)
    assert loss.ndim == 0 and torch.isfinite(loss) and "loss" in terms
    loss.backward()
    # tensors a model keeps only so that the authors' state dict maps 1:1, documented on the model
    dead = tuple(getattr(model, "parameters_without_effect", ()))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith(dead)]
    assert params
    missing = [n for n, p in params if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()]
    assert not missing, f"{name}: no gradient reaches {missing[:8]} ({len(missing)} of {len(params)})"


@pytest.mark.parametrize("case", SMALL, ids=_ids)
def test_checkpoint_round_trip(case, tmp_path):
    name, kw = case
    module = _module(name, kw)
    with torch.no_grad():  # not the initial weights, so the state dict really is what gets loaded
        for p in module.model.parameters():
            p.add_(torch.randn_like(p) * 1e-2)
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert ckpt["iis"]["model"] == {"name": name, "kwargs": kw}
    assert ckpt["iis"]["method"] == type(module).__name__
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    built = build_method(ckpt=path)
    assert built.default_protocol == module.hparams.protocol == module.model.default_protocol
    image, clicks, prev, _ = _inputs(1)
    model = module.model.eval()
    prev = prev if model.with_prev_mask else None
    with torch.no_grad():
        assert torch.equal(built.obj(image, clicks, prev), model(image, clicks, prev))
