"""Every official configuration (keys and shapes from the authors' models) is detected by its key set,
sized from its shapes, mapped strictly onto the iis model of that size, and reported; bad inputs give one
ConversionError line naming the keys."""

from __future__ import annotations

import pytest
import torch

from iis.convert import ConversionError, convert_state_dict, families
from iis.convert._mapping import KeyMap, apply_keymap
from iis.models.registry import create_model

from official_files import SIZES, manifests, official_state_dict

# per family: (known-unused keys dropped, aliases dropped, tensors reshaped)
EXPECTED = {"official-simpleclick": (21, 0, 1), "official-adaptiveclick": (6, 8, 1), "official-gpcis": (0, 0, 4)}


def test_families_are_discovered():
    fams = families()  # every iis/convert/<name>.py with a FAMILY (official-ritm joins when its module exists)
    mine = {"official-simpleclick", "official-adaptiveclick", "official-gpcis"}
    assert mine <= set(fams)
    assert all(f.name.startswith("official-") and f.protocol for f in fams.values())
    assert all(fams[n].models for n in mine)


@pytest.mark.parametrize("name", list(SIZES))
def test_strict_mapping_of_every_official_configuration(name):
    family, model = SIZES[name]
    sd = official_state_dict(name, device="meta")
    conv = convert_state_dict(sd)  # family and size from the key set and shapes alone
    assert (conv.family.name, conv.model, conv.kwargs) == (family, model, {})
    r = conv.report
    aliases = [k for k, why in r.dropped if why.startswith("second registration")]
    unused = [k for k, why in r.dropped if not why.startswith("second registration")]
    assert (len(unused), len(aliases), len(r.reshaped)) == EXPECTED[family]
    # what is dropped as unused is exactly what had no gradient in the authors' forward (reference manifest);
    # GPCIS keeps omega_var (training-only noise std) as gp.sigma_w
    no_grad = set(manifests()[name]["unused_in_forward"])
    assert set(unused) == no_grad - {"omega_var"}
    assert sorted(aliases) == sorted(a for a, _ in manifests()[name]["aliased_keys"])
    assert r.mapped + len(r.dropped) == len(sd)
    with torch.device("meta"):
        target = create_model(model)
    target.load_state_dict(conv.state_dict, strict=True, assign=True)  # every key, every shape
    assert r.to_json()["model"] == model


def test_simpleclick_xtiny_round_trip_values():
    sd = official_state_dict("simpleclick_vit_xtiny_448", seed=1)
    conv = convert_state_dict(sd, model="simpleclick_vit_xtiny")
    model = create_model(conv.model, **conv.kwargs)
    model.load_state_dict(conv.state_dict, strict=True)
    own = model.state_dict()
    assert torch.equal(own["encoder.backbone.pos_embed"], sd["backbone.pos_embed"][:, 1:])
    assert torch.equal(own["encoder.backbone.blocks.3.attn.qkv.weight"], sd["backbone.blocks.3.attn.qkv.weight"])
    assert torch.equal(own["head.conv_seg.weight"], sd["head.conv_seg.weight"])
    assert conv.report.reshaped == [("backbone.pos_embed", [1, 785, 160], [1, 784, 160],
                                     conv.report.reshaped[0][3])]
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, 64, 64), torch.tensor([[[30.0, 30.0, 1.0]]]), torch.zeros(1, 1, 64, 64))
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()


def test_gpcis_round_trip_values():
    sd = official_state_dict("gpcis_resnet50", seed=2)
    conv = convert_state_dict(sd, model="gpcis_resnet50")
    model = create_model(conv.model, **conv.kwargs)
    model.load_state_dict(conv.state_dict, strict=True)
    own = model.state_dict()
    assert torch.equal(own["segmentor.maps_transform.2.weight"], sd["maps_transform.2.weight"][:128])
    assert torch.equal(own["segmentor.maps_transform.2.bias"], sd["maps_transform.2.bias"][:128])
    assert torch.equal(own["gp.mu_w"], sd["omega"][:, 0]) and torch.equal(own["gp.rgb_weight"], sd["weights"][0])
    assert torch.equal(own["gp.log_prec"], sd["logsigma2"]) and torch.equal(own["gp.sigma_w"], sd["omega_var"])
    assert torch.equal(own["segmentor.aspp.pool.1.0.weight"], sd["model.aspp.concurent.4.gap.1.weight"])
    assert torch.equal(own["segmentor.head.0.1.weight"], sd["model.head.block.0.body.1.weight"])
    assert {r[0] for r in conv.report.reshaped} == {"omega", "weights", "maps_transform.2.weight",
                                                    "maps_transform.2.bias"}


def test_model_mismatch_and_from_mismatch():
    sd = official_state_dict("simpleclick_vit_base_448", device="meta")
    with pytest.raises(ConversionError, match="simpleclick_vit_base .*but simpleclick_vit_large was asked for"):
        convert_state_dict(sd, model="simpleclick_vit_large")
    with pytest.raises(ConversionError, match="--from official-gpcis, but its keys are not GPCIS's.*official-simpleclick"):
        convert_state_dict(sd, family="official-gpcis")
    with pytest.raises(ConversionError, match="unknown; available: auto"):
        convert_state_dict(sd, family="official-nope")


def test_unknown_missing_and_misshaped_keys_are_named():
    sd = official_state_dict("simpleclick_vit_xtiny_448", device="meta")
    extra = dict(sd, **{"backbone.extra_token": torch.empty(1, 1, 160, device="meta")})
    with pytest.raises(ConversionError, match=r"1 official tensor\(s\) not recognised: backbone.extra_token"):
        convert_state_dict(extra)
    missing = {k: v for k, v in sd.items() if k != "neck.down_16.0.bias"}
    with pytest.raises(ConversionError, match=r"not in the file: encoder.neck.down_16.0.bias"):
        convert_state_dict(missing)
    bad = dict(sd, **{"head.fusion_conv.conv.weight": torch.empty(128, 500, 1, 1, device="meta")})
    with pytest.raises(ConversionError, match=r"head.fusion_conv.conv.weight \[128, 500, 1, 1\] \(expected"):
        convert_state_dict(bad)
    odd = dict(sd, **{"backbone.patch_embed.proj.weight": torch.empty(512, 3, 16, 16, device="meta")})
    with pytest.raises(ConversionError, match="embed dim 512, depth 8, patch 16 is not a released SimpleClick size"):
        convert_state_dict(odd)
    with pytest.raises(ConversionError, match="no official layout recognised"):
        convert_state_dict({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)})


def test_aliases_must_be_copies():
    km = KeyMap(renames=((r"a\.(.+)", r"x.\1"),), aliases=((r"b\.(.+)", r"a.\1"),))
    t = torch.randn(3)
    out, rep = apply_keymap({"a.w": t, "b.w": t.clone()}, km, {"x.w": (3,)}, family="f", model="m")
    assert torch.equal(out["x.w"], t) and rep.dropped == [("b.w", "second registration of a.w (the same tensor)")]
    with pytest.raises(ConversionError, match="aliased key.*b.w \\(differs from a.w\\)"):
        apply_keymap({"a.w": t, "b.w": t + 1}, km, {"x.w": (3,)}, family="f", model="m")


def test_gpcis_other_backbone_is_refused():
    sd = official_state_dict("gpcis_resnet50", device="meta")
    deeper = dict(sd)
    for i in range(6, 23):  # ResNet-101 has 23 blocks in layer3
        deeper[f"model.backbone.layer3.{i}.conv1.weight"] = torch.empty(256, 1024, 1, 1, device="meta")
    with pytest.raises(ConversionError, match=r"\[3, 4, 23, 3\] blocks per stage.*ResNet-50"):
        convert_state_dict(deeper)


def test_a_new_family_module_is_picked_up(monkeypatch):
    """A module iis/convert/<name>.py defining FAMILY joins detection with no other change (as ritm.py)."""
    import pkgutil
    import sys
    import types

    import iis.convert.api as api
    from iis.convert import Family
    from iis.convert.base import ConversionReport

    mod = types.ModuleType("iis.convert.zz_fake")
    mod.FAMILY = Family("official-fake", "plain", lambda s: "fake.w" in s, lambda s: ("simpleclick_vit_test", {}),
                        lambda sd, m: ({}, ConversionReport("official-fake", m)))
    monkeypatch.setitem(sys.modules, "iis.convert.zz_fake", mod)
    real = pkgutil.iter_modules
    monkeypatch.setattr(api.pkgutil, "iter_modules", lambda path: [*real(path), pkgutil.ModuleInfo(None, "zz_fake", False)])
    api._discover.cache_clear()
    try:
        assert "official-fake" in families()
        assert convert_state_dict({"fake.w": torch.zeros(1)}).family.name == "official-fake"
    finally:
        api._discover.cache_clear()
