"""iis-eval --reproduce: the stored manifests are well-formed data with sources; a run on the real GrabCut
and Berkeley data with converted random weights of an official xTiny layout prints measured vs published
side by side, reports absent datasets as skipped and names the weights' source; a manifest whose model is
not registered is listed but refuses to run with one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "convert"))
from official_files import official_state_dict, save_like_authors  # noqa: E402

import iis.eval.reproduce as rep  # noqa: E402
from iis.cli.eval import main as eval_main  # noqa: E402
from iis.data import list_datasets  # noqa: E402

# the released checkpoints whose numbers are published (docs/official-checkpoints.md, seed papers' tables)
RELEASED = {"simpleclick_vit_base_cocolvis", "simpleclick_vit_huge_cocolvis", "simpleclick_vit_base_sbd",
            "adaptiveclick_vit_base_sbd", "gpcis_resnet50", "ritm_hrnet18_sbd", "ritm_hrnet18_cocolvis",
            "ritm_hrnet32_cocolvis"}


def test_stored_manifests_are_complete_data():
    ms = rep.manifests()
    assert RELEASED <= set(ms)
    known = set(list_datasets())
    for m in ms.values():
        assert m.weights.endswith(".pth") and m.protocol in {"ritm", "simpleclick", "gpcis"}
        assert m.published and set(m.published) <= known, m.name
        for ds, row in m.published.items():
            src = m.source_of(ds)
            assert src.get("paper") and src.get("table") and src.get("row"), (m.name, ds)
            nums = [row.get("noc85"), row.get("noc90")]
            assert any(v is not None for v in nums) and all(v is None or 1.0 <= v <= 20.0 for v in nums)


@pytest.fixture
def test_manifests(tmp_path, monkeypatch):
    (tmp_path / "test.yaml").write_text("""
- name: test_xtiny
  model: simpleclick_vit_xtiny
  protocol: simpleclick
  weights: sbd_vit_xtiny.pth
  source: {paper: "test data (not a paper)", table: "none", row: "xTiny"}
  published:
    grabcut: {noc85: 1.50, noc90: 1.70}
    berkeley: {noc90: 2.50}
    davis: {noc85: 4.00, noc90: 5.00}
- name: test_unregistered
  model: not_registered_model_xyz
  protocol: ritm
  weights: x.pth
  source: {paper: p, table: t, row: r}
  published: {grabcut: {noc90: 2.0}}
""")
    monkeypatch.setattr(rep, "_HERE", tmp_path)
    rep._load.cache_clear()
    yield
    rep._load.cache_clear()


def test_reproduce_end_to_end(test_manifests, tmp_path, data_root, capsys):
    weights = tmp_path / "sbd_vit_xtiny.pth"
    save_like_authors(official_state_dict("simpleclick_vit_xtiny_448", seed=3), weights)
    out = tmp_path / "rep"
    rc = eval_main(["--reproduce", "test_xtiny", "--weights", str(weights), "--data-root", str(data_root),
                    "--limit", "1", "--max-clicks", "1", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "weights used: sbd_vit_xtiny.pth (sha256 " in text and "converted from: official-simpleclick" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| Dataset")}
    # columns: N, NoC85 measured, published, diff, NoC90 measured, published, diff, source (1 click: NoC = 1)
    assert rows["grabcut"][:7] == ["1", "1.00", "1.50", "-0.50", "1.00", "1.70", "-0.70"]
    assert rows["berkeley"][2] == "-" and rows["berkeley"][5] == "2.50" and rows["berkeley"][6] == "-1.50"
    assert rows["davis"][0] == "skipped" and "skipped davis:" in text
    assert "NOTE: --limit 1" in text and "NOTE: --max-clicks 1" in text
    saved = json.loads((out / "reproduce.json").read_text())
    assert saved["skipped"].keys() == {"davis"} and saved["rows"]["grabcut"]["noc90"]["published"] == 1.7
    assert json.loads((out / "results.json").read_text())["method"]["source"]["file"] == "sbd_vit_xtiny.pth"


def test_reproduce_refusals(test_manifests, tmp_path, capsys):
    assert eval_main(["--list"]) == 0
    assert "test_unregistered: not_registered_model_xyz" in capsys.readouterr().out
    for args, expect in ((["--reproduce", "test_unregistered", "--weights", "x.pth"], "is not registered"),
                         (["--reproduce", "nope"], "unknown; manifests: test_unregistered, test_xtiny"),
                         (["--reproduce", "test_xtiny"], "give the released weights with --weights"),
                         (["--reproduce", "test_xtiny", "--weights", "x", "--thresh", "0.4"], "--thresh would change")):
        assert eval_main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err
