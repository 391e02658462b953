"""RITM-style baselines and the shared segmentors: click fusion, tiny variants, weights loading."""

from __future__ import annotations

import pytest
import torch

from iis.models.registry import create_model, list_models
from iis.models.segmentors import build_segmentor, encode_clicks, load_backbone_weights

CLICKS = torch.tensor([[[10., 12, 1], [30, 40, 0]], [[5., 5, 0], [-1, -1, -1]]])


@pytest.mark.parametrize("segmentor", ["deeplab_tiny", "hrnet_tiny", "segformer_tiny"])
def test_tiny_variants_forward_backward(segmentor):
    torch.manual_seed(0)
    model = create_model("ritm_test", segmentor=segmentor).train()
    img, prev = torch.rand(2, 3, 48, 40), torch.rand(2, 1, 48, 40)
    out = model.forward_train(img, CLICKS, prev)
    assert out["logits"].shape == (2, 1, 48, 40)
    from iis.models.losses import build_loss
    build_loss("nfl")(out["logits"], (torch.rand(2, 1, 48, 40) > 0.5).float()).backward()
    for name in ("segmentor.maps_transform.0.weight", "segmentor.maps_transform.3.scale", "classifier.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("segmentor", ["deeplab_tiny", "hrnet_tiny", "segformer_tiny"])
def test_clicks_and_prev_mask_reach_the_output(segmentor):
    torch.manual_seed(0)
    model = create_model("ritm_test", segmentor=segmentor).eval()
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        base = model(img, CLICKS)
        assert torch.equal(base, model(img, CLICKS, torch.zeros(2, 1, 32, 32)))  # None == empty prev mask
        moved = CLICKS.clone()
        moved[0, 0, :2] = torch.tensor([25.0, 5.0])
        assert not torch.allclose(base[0], model(img, moved)[0])
        assert torch.allclose(base[1], model(img, moved)[1])  # only image 0's clicks changed
        assert not torch.allclose(base, model(img, CLICKS, torch.ones(2, 1, 32, 32)))


def test_click_encoding_channels():
    img = torch.rand(1, 3, 20, 20)
    prev = torch.rand(1, 1, 20, 20)
    norm, coords = encode_clicks(img, torch.tensor([[[4., 5, 1], [15, 15, 0]]]), prev)
    assert coords.shape == (1, 3, 20, 20) and torch.equal(coords[:, :1], prev)  # soft prev mask first
    assert coords[0, 1, 5, 4] == 1 and coords[0, 1, 15, 15] == 0 and coords[0, 2, 15, 15] == 1
    assert coords[0, 1].sum() == 80  # 81 lattice points within radius 5, one falls off the left border
    assert not torch.allclose(norm, img)  # ImageNet-normalised


def test_same_segmentor_for_ritm_and_gpcis():
    ritm = create_model("ritm_test")
    gpcis = create_model("gpcis_test")
    assert ritm.segmentor.state_dict().keys() == gpcis.segmentor.state_dict().keys()
    assert {"ritm_resnet50", "ritm_hrnet18s", "ritm_segformer_b0", "ritm_test"} <= set(list_models("ritm_*"))


def test_full_size_segmentors_build_on_meta():
    with torch.device("meta"):
        for name, stem_scale in (("ritm_resnet50", 128), ("ritm_hrnet18s", 64), ("ritm_segformer_b0", 32)):
            model = create_model(name)
            assert model.segmentor.maps_transform[2].out_channels == stem_scale, name
            assert model.segmentor.maps_transform[3].scale.shape == (1,)


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
