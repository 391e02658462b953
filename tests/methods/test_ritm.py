"""RITM: the authors' HRNet-OCR models, the GPCIS-backbone baselines, the shared segmentors, the loss and module."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iis.methods.ritm.loss import AuxBCELoss, RITMLoss
from iis.methods.ritm.module import RITM
from iis.models.hrnet import HRNet
from iis.models.registry import create_model, list_models
from iis.models.segmentors import build_segmentor, encode_clicks, load_backbone_weights

CLICKS = torch.tensor([[[10., 12, 1], [30, 40, 0]], [[5., 5, 0], [-1, -1, -1]]])
OCR_TRAINED = ("head.aux.0.weight", "head.aux.3.weight", "head.pixel.0.weight", "head.attention.value.0.weight",
               "head.attention.out.0.weight", "head.fuse.0.weight", "head.classifier.weight")


# -- the authors' HRNet-OCR models ------------------------------------------------------------------

def test_hrnet_models_registered_with_the_authors_sizes():
    assert {"ritm_hrnet18", "ritm_hrnet18s", "ritm_hrnet32", "ritm_hrnet18_baseline", "ritm_hrnet_test",
            "ritm_gpcis_resnet50", "ritm_gpcis_segformer_b0", "ritm_gpcis_test"} <= set(list_models("ritm_*"))
    with torch.device("meta"):
        for name, width, ocr, small, coord in (("ritm_hrnet18", 18, 64, False, 3), ("ritm_hrnet18s", 18, 48, True, 3),
                                               ("ritm_hrnet32", 32, 128, False, 3),
                                               ("ritm_hrnet18_baseline", 18, 64, False, 2)):
            m = create_model(name)
            assert m.backbone.channels == [width, 2 * width, 4 * width, 8 * width], name
            assert len(m.backbone.stage3) == (3 if small else 4) and len(m.backbone.layer1) == (2 if small else 4)
            assert m.head.attention.key_channels == ocr and m.head.classifier.in_channels == 2 * ocr, name
            assert m.maps_transform[0].in_channels == coord and m.with_prev_mask == (coord == 3), name
            assert m.maps_transform[2].out_channels == 64 and m.maps_transform[3].scale.shape == (1,)
            assert m.default_protocol == "ritm"


@pytest.mark.parametrize("size", [(37, 45), (64, 64)])
def test_hrnet_outputs_logits_and_aux_at_input_size(size):
    torch.manual_seed(0)
    model = create_model("ritm_hrnet_test").eval()
    img, prev = torch.rand(2, 3, *size), torch.rand(2, 1, *size)
    with torch.no_grad():
        out = model.forward_train(img, CLICKS, prev)
        assert out["logits"].shape == out["aux_logits"].shape == (2, 1, *size)
        assert torch.isfinite(out["logits"]).all() and torch.isfinite(out["aux_logits"]).all()
        assert torch.equal(model(img, CLICKS, prev), out["logits"])
        assert torch.equal(model(img, CLICKS), model(img, CLICKS, torch.zeros(2, 1, *size)))  # None = empty mask
        assert not torch.allclose(model(img, CLICKS, prev), model(img, CLICKS))
        moved = CLICKS.clone()
        moved[0, 0, :2] = torch.tensor([25.0, 5.0])
        assert not torch.allclose(out["logits"][0], model(img, moved, prev)[0])
        assert torch.equal(out["logits"][1], model(img, moved, prev)[1])  # only image 0's clicks changed


def test_gradient_reaches_ocr_head_backbone_and_click_stem():
    torch.manual_seed(0)
    model = create_model("ritm_hrnet_test").train()
    img, prev = torch.rand(2, 3, 40, 48), torch.rand(2, 1, 40, 48)
    gt = (torch.rand(2, 1, 40, 48) > 0.5).float()
    gt[0, 0, :4] = -1
    terms = RITMLoss()(model.forward_train(img, CLICKS, prev), gt)
    assert torch.allclose(terms["loss"], terms["nfl"] + 0.4 * terms["aux"])
    terms["loss"].backward()
    for name in OCR_TRAINED + ("backbone.conv1.weight", "backbone.stage4.0.fuse_layers.0.3.0.weight",
                               "maps_transform.0.weight", "maps_transform.3.scale"):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # one object region: the attention softmax is constant 1, so query/key get exactly zero gradient
    for name in ("head.attention.query.0.weight", "head.attention.key.3.weight"):
        grad = model.get_parameter(name).grad
        assert grad is None or not grad.any(), name


def test_ocr_query_and_key_cannot_change_the_output():
    torch.manual_seed(0)
    model = create_model("ritm_hrnet_test").eval()
    img = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = model.forward_train(img, CLICKS[:1])
        for p in [*model.head.attention.query.parameters(), *model.head.attention.key.parameters()]:
            p.add_(torch.randn_like(p))
        after = model.forward_train(img, CLICKS[:1])
        assert torch.equal(before["logits"], after["logits"])
        model.head.attention.value[0].weight.add_(1.0)
        assert not torch.allclose(before["logits"], model(img, CLICKS[:1]))


def test_non_iterative_baseline_takes_no_previous_mask():
    torch.manual_seed(0)
    model = create_model("ritm_hrnet_test", with_prev_mask=False).eval()
    assert model.maps_transform[0].in_channels == 2 and not model.with_prev_mask
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(img, CLICKS), model(img, CLICKS, torch.rand(2, 1, 32, 32)))


def test_bad_inputs_are_rejected():
    model = create_model("ritm_hrnet_test")
    with pytest.raises(ValueError, match="clicks"):
        model(torch.rand(1, 3, 32, 32), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="prev_mask"):
        model(torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 3), torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="ocr_width"):
        create_model("ritm_hrnet_test", ocr_width=0)


# -- HRNet vs timm ----------------------------------------------------------------------------------

_TIMM_TINY = dict(  # a tiny HRNet in timm's config format (timm's second stem conv always outputs 64)
    stem_width=64,
    stage1=dict(num_modules=1, num_branches=1, block_type="BOTTLENECK", num_blocks=(1,), num_channels=(8,),
                fuse_method="SUM"),
    stage2=dict(num_modules=1, num_branches=2, block_type="BASIC", num_blocks=(1, 1), num_channels=(4, 8),
                fuse_method="SUM"),
    stage3=dict(num_modules=1, num_branches=3, block_type="BASIC", num_blocks=(1, 1, 1), num_channels=(4, 8, 16),
                fuse_method="SUM"),
    stage4=dict(num_modules=1, num_branches=4, block_type="BASIC", num_blocks=(1, 1, 1, 1),
                num_channels=(4, 8, 16, 32), fuse_method="SUM"),
)


def _timm_features(tm: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = tm.act1(tm.bn1(tm.conv1(x)))
    return tm.stages(tm.act2(tm.bn2(tm.conv2(x))))


def test_hrnet_matches_timm_once_fuse_upsampling_is_bilinear():
    timm = pytest.importorskip("timm")
    # the full HRNet-W18-Small-v2: identical parameter names and shapes (ImageNet weights load by name)
    with torch.device("meta"):
        ref = timm.create_model("hrnet_w18_small_v2", features_only=True, feature_location="")
        mine = HRNet(18, small=True)
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in mine.state_dict().items()}
    # tiny network, same weights: timm's nearest fuse upsampling differs; swapped to bilinear
    # align_corners=True (RITM's), the outputs agree exactly
    torch.manual_seed(0)
    mine = HRNet(4, small=True, num_blocks=1, num_modules=(1, 1, 1), stem_channels=64, stage1_planes=8).eval()
    ref = timm.create_model("hrnet_w18_small", features_only=True, feature_location="", **_TIMM_TINY).eval()
    ref.load_state_dict(mine.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = mine(x)
        near = _timm_features(ref, x)
        assert max((a - b).abs().max().item() for a, b in zip(ours, near)) > 1e-3
        for m in ref.modules():
            for i, child in enumerate(m.children()) if isinstance(m, nn.Sequential) else ():
                if isinstance(child, nn.Upsample):
                    m[i] = nn.Upsample(scale_factor=child.scale_factor, mode="bilinear", align_corners=True)
        for a, b in zip(ours, _timm_features(ref, x)):
            assert torch.equal(a, b)


# -- RITM on the GPCIS backbones and the shared segmentors ----------------------------------------

@pytest.mark.parametrize("segmentor", ["deeplab_tiny", "hrnet_tiny", "segformer_tiny"])
def test_gpcis_backbone_baselines_forward_backward(segmentor):
    torch.manual_seed(0)
    model = create_model("ritm_gpcis_test", segmentor=segmentor).train()
    img, prev = torch.rand(2, 3, 48, 40), torch.rand(2, 1, 48, 40)
    out = model.forward_train(img, CLICKS, prev)
    assert out["logits"].shape == (2, 1, 48, 40) and "aux_logits" not in out
    terms = RITMLoss()(out, (torch.rand(2, 1, 48, 40) > 0.5).float())
    assert set(terms) == {"loss", "nfl"}  # no auxiliary output, no auxiliary loss
    terms["loss"].backward()
    for name in ("segmentor.maps_transform.0.weight", "segmentor.maps_transform.3.scale", "classifier.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("segmentor", ["deeplab_tiny", "hrnet_tiny", "segformer_tiny"])
def test_clicks_and_prev_mask_reach_the_output(segmentor):
    torch.manual_seed(0)
    model = create_model("ritm_gpcis_test", segmentor=segmentor).eval()
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        base = model(img, CLICKS)
        assert torch.equal(base, model(img, CLICKS, torch.zeros(2, 1, 32, 32)))  # None == empty prev mask
        moved = CLICKS.clone()
        moved[0, 0, :2] = torch.tensor([25.0, 5.0])
        assert not torch.allclose(base[0], model(img, moved)[0])
        assert torch.allclose(base[1], model(img, moved)[1])  # only image 0's clicks changed
        assert not torch.allclose(base, model(img, CLICKS, torch.ones(2, 1, 32, 32)))


def test_hrnet_segmentor_works_at_any_size():
    torch.manual_seed(0)
    seg = build_segmentor("hrnet_tiny").eval()
    norm, coords = encode_clicks(torch.rand(1, 3, 37, 45), CLICKS[:1], None)
    with torch.no_grad():
        assert seg(norm, coords).shape == (1, 8, 10, 12)  # 1/4, rounded up by the strided convs


def test_click_encoding_channels():
    img = torch.rand(1, 3, 20, 20)
    prev = torch.rand(1, 1, 20, 20)
    norm, coords = encode_clicks(img, torch.tensor([[[4., 5, 1], [15, 15, 0]]]), prev)
    assert coords.shape == (1, 3, 20, 20) and torch.equal(coords[:, :1], prev)  # soft prev mask first
    assert coords[0, 1, 5, 4] == 1 and coords[0, 1, 15, 15] == 0 and coords[0, 2, 15, 15] == 1
    assert coords[0, 1].sum() == 80  # 81 lattice points within radius 5, one falls off the left border
    assert not torch.allclose(norm, img)  # ImageNet-normalised


def test_same_segmentor_for_ritm_and_gpcis():
    ritm = create_model("ritm_gpcis_test")
    gpcis = create_model("gpcis_test")
    assert ritm.segmentor.state_dict().keys() == gpcis.segmentor.state_dict().keys()
    assert ritm.default_protocol == "gpcis"


def test_full_size_segmentors_build_on_meta():
    with torch.device("meta"):
        for name, stem_scale in (("ritm_gpcis_resnet50", 128), ("ritm_gpcis_segformer_b0", 32)):
            model = create_model(name)
            assert model.segmentor.maps_transform[2].out_channels == stem_scale, name
            assert model.segmentor.maps_transform[3].scale.shape == (1,)
        assert build_segmentor("hrnet18s").maps_transform[2].out_channels == 64


def test_backbone_weights_load_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    src = build_segmentor("deeplab_tiny")
    dst = build_segmentor("deeplab_tiny")
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.backbone.state_dict().items()}}, path)
    missing, unexpected = load_backbone_weights(dst.backbone, path)
    assert not missing and not unexpected
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[k], v), k
    seeded = build_segmentor("deeplab_tiny", pretrained=str(path))
    assert torch.equal(seeded.backbone.conv1[0].weight, src.backbone.conv1[0].weight)
    torch.save({"foo": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="no parameter matches"):
        load_backbone_weights(dst.backbone, tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        load_backbone_weights(dst.backbone, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown segmentor"):
        build_segmentor("vgg16")


def test_hrnet_imagenet_weights_load_into_the_ritm_backbone(tmp_path):
    torch.manual_seed(0)
    src = create_model("ritm_hrnet_test")
    extra = {"incre_modules.0.0.conv1.weight": torch.zeros(2, 2, 1, 1), "classifier.weight": torch.zeros(10, 4)}
    torch.save({**src.backbone.state_dict(), **extra}, tmp_path / "imagenet.pth")  # classification layers too
    seeded = create_model("ritm_hrnet_test", pretrained=str(tmp_path / "imagenet.pth"))
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(seeded.backbone.state_dict()[k], v), k


# -- loss and training module ---------------------------------------------------------------------

def test_aux_bce_is_the_authors_mean_over_all_pixels():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 5, 6)
    y = (torch.rand(2, 1, 5, 6) > 0.5).float()
    y[0, 0, 0] = -1
    valid = (y != -1).float()
    yz = y.clamp_min(0)
    ref = ((torch.relu(x) - x * yz + F.softplus(-x.abs())) * valid).mean((1, 2, 3)).mean()  # losses.py form
    assert torch.allclose(AuxBCELoss()(x, y), ref)
    with pytest.raises(ValueError, match="aux_weight"):
        RITMLoss(aux_weight=-1)
    with pytest.raises(ValueError, match="shape"):
        AuxBCELoss()(x, y[:, :, :4])


def test_module_defaults_follow_the_authors_config():
    module = RITM(model="ritm_hrnet_test")
    hp = module.hparams
    assert (hp.lr, hp.milestones, hp.protocol, hp.aux_weight) == (5e-4, [200, 220], "ritm", 0.4)
    assert hp.lr_mult == {"backbone": 0.1, "head.aux": 0.1, "head.classifier": 0.1}
    opt = module.configure_optimizers()["optimizer"]
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for name, lr in (("backbone.conv1.weight", 5e-5), ("head.aux.0.weight", 5e-5), ("head.classifier.weight", 5e-5),
                     ("head.pixel.0.weight", 5e-4), ("head.fuse.0.weight", 5e-4), ("maps_transform.0.weight", 5e-4)):
        assert lr_of[id(module.model.get_parameter(name))] == pytest.approx(lr), name
    torch.manual_seed(0)
    img, gt = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    loss, terms = module.compute_loss(module.model.forward_train(img, CLICKS), gt)
    assert set(terms) == {"loss", "nfl", "aux"} and torch.allclose(loss, terms["nfl"] + 0.4 * terms["aux"])
    base = RITM(model="ritm_gpcis_test")
    assert base.hparams.protocol == "gpcis" and base.hparams.lr_mult == {"segmentor.maps_transform": 1.0,
                                                                         "segmentor": 0.1}
    assert RITM(model="ritm_hrnet_test", protocol="plain", aux_weight=0.0).criterion.aux_weight == 0.0
