"""M2N2's fast paths against the straightforward ones: the blocked Markov chain (``A^L`` blocks,
batched steps) against the step-by-step chain, and the prefix scoring against the full product."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from iis.core.loop import run_instance
from iis.core.types import Click
from iis.core.protocol import EvalProtocol
from iis.methods.m2n2 import AffinityAttention, M2N2Predictor
from iis.methods.m2n2.markov import markov_chain, markov_chain_blocked, start_states, transition_power
from iis.methods.m2n2.segment import ThresholdTable, select_threshold


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _grid_walk(h: int, w: int, lazy: float = 0.6) -> torch.Tensor:
    """Lazy random walk on a 4-connected h x w grid, doubly stochastic, float32: slow mixing, so the
    chain runs many blocks."""
    n = h * w
    A = torch.zeros(n, n)
    for y in range(h):
        for x in range(w):
            i = y * w + x
            nbrs = [(y + dy) * w + (x + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
                    if 0 <= y + dy < h and 0 <= x + dx < w]
            for j in nbrs:
                A[i, j] = (1 - lazy) / 4
            A[i, i] = 1 - (1 - lazy) / 4 * len(nbrs)
    return A


def _compare_steps(A, start, max_iterations=1000, block=32):
    """Crossing steps (no interpolation) and interpolated maps of both chains."""
    P = transition_power(A, block)
    steps_ref = markov_chain(A, start, 0.3, max_iterations, linear_interpolation=False)
    steps_new = markov_chain_blocked(A, start, 0.3, max_iterations, False, power=P, block=block)
    interp_ref = markov_chain(A, start, 0.3, max_iterations)
    interp_new = markov_chain_blocked(A, start, 0.3, max_iterations, power=P, block=block)
    return steps_ref, steps_new, interp_ref, interp_new


def test_transition_power_by_squaring():
    A = _grid_walk(3, 4).double()
    ref = torch.eye(A.shape[0], dtype=A.dtype)
    for k in range(1, 33):
        ref = ref @ A
        if k in (1, 2, 5, 32):
            torch.testing.assert_close(transition_power(A, k), ref)


@pytest.mark.parametrize("block", [4, 32])
def test_blocked_chain_equals_stepwise_on_a_slow_chain(block):
    A = _grid_walk(20, 24)  # float32, crossing steps up to a few hundred
    start = torch.zeros(3, A.shape[0])
    start[0, 0] = 1.0  # a corner: the longest chain
    start[1, 10 * 24 + 12] = 1.0
    start[2, 5 * 24 + 3], start[2, 5 * 24 + 4] = 1.0, 0.5
    s_ref, s_new, i_ref, i_new = _compare_steps(A, start, max_iterations=400, block=block)
    assert s_ref.max() > 4 * block  # several blocks were needed
    diff = (s_ref - s_new).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    ok = diff == 0  # where the step agrees the interpolated value agrees up to rounding
    torch.testing.assert_close(i_new[ok], i_ref[ok], rtol=0, atol=1e-3)
    assert torch.equal(s_new == 401, s_ref == 401)  # never-passed cells agree (cap + 1 without interpolation)


def test_blocked_chain_caps_and_early_cells():
    A = torch.eye(4)
    start = torch.tensor([[1.0, 0.5, 0, 0]])
    assert markov_chain_blocked(A, start, max_iterations=7, block=4).tolist() == [[0.0, 0.0, 7.0, 7.0]]
    assert markov_chain_blocked(A, start, max_iterations=7, linear_interpolation=False,
                                block=4).tolist() == [[0.0, 0.0, 8.0, 8.0]]
    # a chain that passes at step 1 uses the reference's first-step slope (1 - thr)
    A2 = torch.full((3, 3), 1 / 3)
    s = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.equal(markov_chain_blocked(A2, s, block=8), markov_chain(A2, s))


def test_blocked_chain_on_real_grabcut_attention(data_root):
    from iis.data import get_dataset

    ds = get_dataset("grabcut", str(data_root))
    for i in (0, 11):
        s = ds[i]
        p = M2N2Predictor(AffinityAttention(grid=20))
        p.set_image(s.image)
        A = p.attention()
        H, W = s.gt.shape
        pts = np.array([[W // 2, H // 2], [W // 6, H // 5], [5 * W // 6, 4 * H // 5]])
        start = start_states(pts, (H, W), p.source.grid_hw)
        s_ref, s_new, i_ref, i_new = _compare_steps(A, start, block=8)
        diff = (s_ref - s_new).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
        torch.testing.assert_close(i_new[diff == 0], i_ref[diff == 0], rtol=0, atol=1e-3)


def test_predictor_chain_option_and_noc_unchanged_on_grabcut(data_root):
    from iis.core.metrics import noc
    from iis.data import get_dataset

    with pytest.raises(ValueError, match="chain"):
        M2N2Predictor(AffinityAttention(grid=8), chain="fast")
    assert M2N2Predictor(AffinityAttention(grid=8)).chain_kind() == "stepwise"  # auto on CPU
    ds = get_dataset("grabcut", str(data_root))
    proto = EvalProtocol(name="t", flip=False, zoom_in=None, target_iou=0.9, max_clicks=6, clicker="m2n2",
                         ignore_as_background=True)
    curves = {}
    for chain in ("stepwise", "blocked"):
        curves[chain] = []
        for i in (3, 20):
            s = ds[i]
            p = M2N2Predictor(AffinityAttention(grid=16), chain=chain, chain_block=8, jbu_max_shifts=32)
            assert p.description()["chain"] == chain
            res = run_instance(p, s.image[::2, ::2].copy(), s.gt[::2, ::2].copy(), proto)
            curves[chain].append(res.ious)
    for thr in (0.85, 0.9):
        assert noc(curves["blocked"], thr, 6) == noc(curves["stepwise"], thr, 6)
    for a, b in zip(curves["blocked"], curves["stepwise"]):
        np.testing.assert_allclose(a, b, atol=1e-3)


def _select_reference(*args, **kwargs):
    """select_threshold as first written (the full product over every candidate): the benchmark's "old"
    column, one copy for both."""
    return _bench()._select_full(*args, **kwargs)


def _bench():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "m2n2_speed.py"
    spec = importlib.util.spec_from_file_location("m2n2_speed_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prefix_scoring_equals_full_product(rng):
    for trial in range(300):
        m = int(rng.integers(1, 60))
        t = np.sort(rng.integers(0, 8, m) / 8.0)  # repeated values: ties at the gate bound
        edge = rng.integers(0, 4, m).astype(np.float64) * (rng.random() > 0.1)
        table = ThresholdTable(thresholds=t, edge=edge)
        same = rng.integers(0, 8, rng.integers(0, 4)) / 8.0
        other = rng.integers(0, 8, rng.integers(0, 3)) / 8.0
        flags = dict(zip(("prior", "edge", "pos", "neg"), rng.random(4) > 0.3))
        area = float(rng.choice([0.0, 0.4, 1.0, 0.05]))
        assert select_threshold(table, same, other, 1.0, area, **flags) == \
            _select_reference(table, same, other, 1.0, area, **flags), trial


class _WalkSource:
    """A fake attention source: the lazy grid walk (long chains) whatever the image."""

    grid_hw = (12, 12)
    device = "cpu"

    def __call__(self, image):
        return _grid_walk(*self.grid_hw, lazy=0.9)


def test_auto_switches_to_blocked_after_a_long_chain(rng):
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    p = M2N2Predictor(_WalkSource(), chain_block=4, jbu_max_shifts=16)
    assert p.chain_kind() == "stepwise" and p.description()["chain"] == "auto"
    p.set_image(img)
    p.predict([Click(3, 3, True)])
    assert p.counts["chain_power"] == 0 and p.chain_kind() == "blocked"  # that chain ran > 8 blocks
    p.predict([Click(3, 3, True), Click(20, 20, False)])
    assert p.counts["chain_power"] == 1
    ref = M2N2Predictor(_WalkSource(), chain="stepwise", chain_block=4, jbu_max_shifts=16)
    ref.set_image(img)
    out = ref.predict([Click(3, 3, True), Click(20, 20, False)])
    assert (out != p.predict([Click(3, 3, True), Click(20, 20, False)])).mean() < 1e-2
    p.set_image(img[::-1].copy())  # a new image starts stepwise again
    assert p.chain_kind() == "stepwise"


@pytest.mark.slow
def test_noc_unchanged_on_grabcut_full_size(data_root):
    """m2n2_affinity at its CPU defaults, 10 GrabCut images, 20 clicks: same NoC with either chain."""
    from iis.core.metrics import noc
    from iis.data import get_dataset
    from iis.models.registry import create_predictor

    ds = get_dataset("grabcut", str(data_root))
    proto = EvalProtocol(name="t", flip=False, zoom_in=None, target_iou=0.9, max_clicks=20, clicker="m2n2",
                         ignore_as_background=True)
    curves = {"stepwise": [], "blocked": []}
    for i in range(0, len(ds), 5):
        s = ds[i]
        for chain in curves:
            p = create_predictor("m2n2_affinity", chain=chain)
            curves[chain].append(run_instance(p, s.image, s.gt, proto).ious)
    for thr in (0.85, 0.9):
        assert noc(curves["blocked"], thr, 20) == noc(curves["stepwise"], thr, 20)


def _run_speed_benchmark(monkeypatch, capsys, *args):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "m2n2_speed.py"
    spec = importlib.util.spec_from_file_location("m2n2_speed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(sys, "argv", ["m2n2_speed.py", *args])
    mod.main()
    return capsys.readouterr().out


def test_speed_benchmark_chain_only_runs(monkeypatch, capsys):
    out = _run_speed_benchmark(monkeypatch, capsys, "--chain-only", "8", "--chain-block", "4")
    assert "blocked chain" in out and "by at most" in out


@pytest.mark.slow
def test_speed_benchmark_compare_runs(monkeypatch, capsys):
    out = _run_speed_benchmark(monkeypatch, capsys, "--attention", "affinity", "--grid", "8", "--clicks", "2",
                               "--jbu-max-shifts", "16", "--compare")
    assert "masks equal to old" in out and "2/2" in out


def test_stable_argsort_equals_numpy(rng):
    from iis.methods.m2n2.segment import stable_argsort

    for v in (rng.random(1000).astype(np.float32),
              (rng.integers(-4, 4, 5000) * 0.25).astype(np.float32),  # many ties, negatives
              np.array([0.0, -0.0, 1.0, -0.0, np.inf, -np.inf, 0.0], np.float32),
              np.zeros(1, np.float32), rng.random(300)):  # float64: NumPy's own
        np.testing.assert_array_equal(stable_argsort(v), np.argsort(v, kind="stable"))


def test_flood_fill_one_sort_equals_skimage_reconstruction(rng):
    from scipy import ndimage as ndi
    from skimage.morphology import reconstruction

    from iis.methods.m2n2.markov import _CROSS, flood_fill

    for trial in range(40):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        m = rng.random((h, w)).astype(np.float32)
        if trial % 3 == 0:
            m = np.round(m * 4) / 4  # plateaus: many ties
        elif trial % 3 == 1:
            m = ndi.gaussian_filter(m, 2).astype(np.float32)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cost = np.abs(m - m[y, x])
        seed = np.full_like(cost, cost.max())
        seed[y, x] = 0.0
        ref = reconstruction(seed, cost, method="erosion", footprint=_CROSS).astype(np.float32)
        out = flood_fill(m, (x, y))
        assert out.dtype == np.float32 and np.array_equal(out, ref), trial


def test_chain_setting_reaches_the_method_description():
    """results.json records how the chain was run (it changes numbers by float rounding)."""
    from iis.eval.loading import build_method

    built = build_method("m2n2_affinity", kwargs={"chain": "stepwise"})
    assert built.desc["settings"]["chain"] == "stepwise"
    assert build_method("m2n2_affinity").desc["settings"]["chain"] == "auto"
