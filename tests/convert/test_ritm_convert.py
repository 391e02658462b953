"""``official-ritm``: the authors' HRNetModel state dicts convert strictly onto the iis RITM HRNets.

``data/official_ritm_shapes.json.gz`` holds the key -> shape manifests (no values) of the four official
RITM models, taken from the reference manifests (``reference/official/ritm_*.json``: the authors'
``init_model(cfg)`` of the configs named in each ``source``). The int64 tensors there are exactly the BN
``num_batches_tracked`` buffers, so the dtype is derived from the key name here.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from iis.convert.base import ConversionError
from iis.convert.ritm import FAMILY, official_to_iis_key
from iis.models.registry import create_model

DATA = Path(__file__).parent / "data" / "official_ritm_shapes.json.gz"
EXPECTED = {"ritm_hrnet18_itermask": "ritm_hrnet18", "ritm_hrnet18s_itermask": "ritm_hrnet18s",
            "ritm_hrnet32_itermask": "ritm_hrnet32", "ritm_hrnet18_baseline_cocolvis": "ritm_hrnet18_baseline"}


@lru_cache(maxsize=None)
def manifests() -> dict:
    with gzip.open(DATA, "rt") as fh:
        return json.load(fh)


def shapes_of(manifest: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(s) for k, s in manifests()[manifest]["shapes"].items()}


def random_state_dict(manifest: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 100, s, generator=g) if k.endswith("num_batches_tracked")
            else torch.randn(s, generator=g) for k, s in shapes_of(manifest).items()}


def test_family_interface():
    assert FAMILY.name == "official-ritm" and FAMILY.protocol == "ritm"
    assert set(manifests()) == set(EXPECTED)


@pytest.mark.parametrize("manifest", sorted(EXPECTED))
def test_detects_infers_converts_and_loads_strictly(manifest):
    shapes = shapes_of(manifest)
    assert FAMILY.matches(shapes)
    name, kwargs = FAMILY.infer_model(shapes)
    assert (name, kwargs) == (EXPECTED[manifest], {})
    sd = random_state_dict(manifest)
    out, report = FAMILY.convert(sd, name)
    assert report.model == name and report.family == "official-ritm"
    assert report.mapped == len(sd) == len(out) and not report.dropped and not report.reshaped  # 1:1, nothing lost
    with torch.device("meta"):  # no weight init; load_state_dict(assign=True) still checks keys and shapes
        model = create_model(name)
    model.load_state_dict(out, strict=True, assign=True)
    assert sum(p.numel() for p in model.parameters()) == manifests()[manifest]["num_params"]
    own = model.state_dict()
    for key, value in sd.items():  # every official tensor arrives unchanged under its iis name
        assert torch.equal(own[official_to_iis_key(key)], value), key
    json.dumps(report.to_json())


def test_names_map_one_to_one_onto_the_iis_layout():
    shapes = shapes_of("ritm_hrnet18_itermask")
    names = {k: official_to_iis_key(k) for k in shapes}
    assert None not in names.values() and len(set(names.values())) == len(names)
    fuse = "stage4.2.fuse_layers.3.0.2.0.weight"
    assert names[f"feature_extractor.{fuse}"] == f"backbone.{fuse}"
    assert names["feature_extractor.ocr_distri_head.object_context_block.f_pixel.3.0.running_var"] == \
        "head.attention.query.4.running_var"
    assert names["feature_extractor.ocr_distri_head.conv_bn_dropout.1.0.num_batches_tracked"] == \
        "head.fuse.1.num_batches_tracked"
    assert names["feature_extractor.aux_head.3.bias"] == "head.aux.3.bias"
    assert names["maps_transform.3.scale"] == "maps_transform.3.scale"


def test_a_wrong_model_name_is_refused():
    sd = random_state_dict("ritm_hrnet18s_itermask")
    with pytest.raises(ConversionError, match=r"is ritm_hrnet18s .*not ritm_hrnet32") as e:
        FAMILY.convert(sd, "ritm_hrnet32")
    assert "\n" not in str(e.value)
    sd = random_state_dict("ritm_hrnet18_baseline_cocolvis")
    with pytest.raises(ConversionError, match="without previous mask.*not ritm_hrnet18$"):
        FAMILY.convert(sd, "ritm_hrnet18")


def test_foreign_truncated_and_odd_state_dicts_give_one_clear_line():
    foreign = {"model.backbone.conv1.weight": torch.zeros(64, 3, 3, 3), "gp.omega": torch.zeros(256, 1)}
    assert not FAMILY.matches({k: tuple(v.shape) for k, v in foreign.items()})
    with pytest.raises(ConversionError, match="not a RITM HRNetModel state dict .*maps_transform.0.weight"):
        FAMILY.convert(foreign, "ritm_hrnet18")
    base = random_state_dict("ritm_hrnet18_itermask")
    cases = {
        "lacks 1 tensor.*backbone.stage3.1.branches.0.1.bn2.weight":
            {k: v for k, v in base.items() if k != "feature_extractor.stage3.1.branches.0.1.bn2.weight"},
        "1 key.*no place in ritm_hrnet18: feature_extractor.refiner.weight":
            {**base, "feature_extractor.refiner.weight": torch.zeros(3)},
        "1 key.*no place.*: extra.weight": {**base, "extra.weight": torch.zeros(3)},
        r"wrong shape.*feature_extractor.cls_head.weight \[2, 128, 1, 1\] \(expected \[1, 128, 1, 1\]\)":
            {**base, "feature_extractor.cls_head.weight": torch.zeros(2, 128, 1, 1)},
        "not a released RITM configuration":
            {**base, "feature_extractor.transition1.0.0.weight": torch.zeros(20, 256, 3, 3)},
        "no OCR head": {k: v for k, v in base.items() if "ocr_distri_head" not in k},
        "use_rgb_conv=True": {**base, "rgb_conv.0.weight": torch.zeros(9, 6, 1, 1)},
    }
    for pattern, sd in cases.items():
        with pytest.raises(ConversionError, match=pattern) as e:
            FAMILY.convert(sd, "ritm_hrnet18")
        assert "\n" not in str(e.value) and str(e.value).startswith("official-ritm: "), pattern
