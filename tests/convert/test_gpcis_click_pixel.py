"""GPCIS reads click features as the authors' code does: .long()-truncated coordinates, clicks outside the
input left out of the GP (the default); 'round' stays available as a switch."""

from __future__ import annotations

import pytest
import torch

from iis.methods.gpcis import GPHead, gather_click_features
from iis.models.registry import create_model


def test_truncation_and_out_of_input_clicks():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6)
    clicks = torch.tensor([[[1.6, 2.7, 1], [5.99, 4.99, 0]], [[6.0, 0.2, 1], [-0.3, 1.0, 0]]])
    feats, labels, valid = gather_click_features(x, clicks, "trunc")
    assert torch.equal(feats[0, 0], x[0, :, 2, 1]) and torch.equal(feats[0, 1], x[0, :, 4, 5])
    assert valid.tolist() == [[True, True], [False, False]]  # x = 6.0 >= W and x = -0.3 < 0 are outside
    assert labels.tolist() == [[1.0, -1.0], [0.0, 0.0]]
    feats_r, _, valid_r = gather_click_features(x, clicks, "round")
    assert torch.equal(feats_r[0, 0], x[0, :, 3, 2]) and valid_r.all()  # nearest pixel, clamped
    with pytest.raises(ValueError, match="mode must be one of"):
        gather_click_features(x, clicks, "floor")


def test_gpcis_models_truncate_by_default():
    assert create_model("gpcis_test").gp.click_pixel == "trunc"
    assert create_model("gpcis_test", click_pixel="round").gp.click_pixel == "round"
    head = GPHead(feat_dim=4, num_rff=16).eval()
    feats, img = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 16, 16)
    clicks = torch.tensor([[[3.7, 5.9, 1.0], [20.0, 2.0, 0.0]]])  # the second click is outside the 16x16 input
    out = head(feats, img, clicks)
    assert out["valid"].tolist() == [[True, False]]
    # the posterior interpolates the click label at the truncated pixel (5, 3), not at the rounded (6, 4)
    assert out["logits"][0, 0, 5, 3].item() == pytest.approx(out["m"][0, 0].item(), abs=1e-3)
