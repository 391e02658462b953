"""Markov-maps (M2N2 paper §3.3, docs/methods.md §2.3-2.5): temperature, IPF, chains, JBU, flood fill.

Everything here works on a flattened attention matrix ``A (N, N)`` with ``N = h * w`` tokens in
row-major grid order (token ``y * w + x``) and rows summing to 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from skimage.morphology import reconstruction

__all__ = ["change_temperature", "ipf", "start_states", "markov_chain", "transition_power",
           "markov_chain_blocked", "CHAINS", "attention_distance",
           "kl_distance", "JointBilateralUpsampler", "flood_fill"]

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)  # 4-connectivity


def change_temperature(A: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row-wise ``softmax(log A / T)`` (paper Eq. 5), in place: ``A^(1/T)`` renormalised per row.

    Rows are divided by their max first so that ``A^(1/T)`` cannot underflow to an all-zero row.
    """
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    A.div_(A.amax(1, keepdim=True).clamp_min_(1e-30)).pow_(1.0 / temperature)
    return A.div_(A.sum(1, keepdim=True))


def ipf(A: torch.Tensor, iterations: int = 200) -> torch.Tensor:
    """Iterative proportional fitting to a doubly stochastic matrix, in place.

    Each iteration divides by the column sums, then by the row sums (200 iterations, no early stop:
    docs/methods.md §2.3). Done on the scaling vectors ``A = diag(r) K diag(c)``, which gives the same
    matrix with two mat-vecs per iteration instead of four passes over ``A``. The result is exactly
    row-stochastic and approximately column-stochastic.
    """
    r = torch.ones(A.shape[0], dtype=A.dtype, device=A.device)
    c = torch.ones_like(r)
    for _ in range(iterations):
        c = 1.0 / (r @ A).clamp_min_(1e-30)
        r = 1.0 / (A @ c).clamp_min_(1e-30)
    return A.mul_(r[:, None]).mul_(c[None, :])


def start_states(points: np.ndarray, image_hw: tuple[int, int], grid_hw: tuple[int, int],
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Bilinear one-hot start states, max-normalised (methods.md §2.4.1).

    A pixel ``(x, y)`` maps to grid coordinates ``(w - 1) * x / W`` and ``(h - 1) * y / H`` (as coded
    in the reference) and is splatted onto its four neighbouring cells.

    Args:
        points: ``(K, 2)`` pixel coordinates ``(x, y)``.

    Returns:
        ``(K, h * w)`` float32, each row with max 1.
    """
    (H, W), (h, w) = image_hw, grid_hw
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    gx = (w - 1) * pts[:, 0] / W
    gy = (h - 1) * pts[:, 1] / H
    x0 = np.clip(gx.astype(np.int64), 0, w - 1)
    y0 = np.clip(gy.astype(np.int64), 0, h - 1)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = gx - x0, gy - y0
    out = np.zeros((len(pts), h * w))
    rows = np.arange(len(pts))
    for yy, xx, wt in ((y0, x0, (1 - fx) * (1 - fy)), (y0, x1, fx * (1 - fy)),
                       (y1, x0, (1 - fx) * fy), (y1, x1, fx * fy)):
        np.add.at(out, (rows, yy * w + xx), wt)
    out /= out.max(1, keepdims=True)
    return torch.as_tensor(out, dtype=torch.float32, device=device)


@torch.no_grad()
def markov_chain(A: torch.Tensor, start: torch.Tensor, threshold: float = 0.3, max_iterations: int = 1000,
                 linear_interpolation: bool = True) -> torch.Tensor:
    """First-passage maps of Markov chains ``p_{t+1} = p_t A`` (paper Eq. 6), all start states batched.

    After every step a state is divided by its max; a cell's value is the first step at which its
    relative probability exceeds ``threshold``. With ``linear_interpolation`` the crossing is
    interpolated between consecutive steps: ``i + 1 - (p - thr) / (p - p_prev + 1e-6)``, where the
    reference uses ``p - p_prev = 1 - thr`` for the first step (methods.md §2.4.3). Cells above the
    threshold at step 0 get 0, cells that never pass get ``max_iterations`` (``+ 1`` without
    interpolation). Chains stop once all their cells have passed.

    Args:
        A: ``(N, N)`` transition matrix (rows sum to 1).
        start: ``(K, N)`` start states.

    Returns:
        ``(K, N)`` float32 iteration maps.
    """
    state = start.to(A.dtype).clone()
    never = float(max_iterations if linear_interpolation else max_iterations + 1)
    pending = state <= threshold
    out = torch.where(pending, never, 0.0).to(state.dtype)
    # full-tensor updates with torch.where: boolean-mask indexing costs more than the mat-vec on CPU
    for i in range(max_iterations):
        if not bool(pending.any()):
            break
        prev = state
        state = prev @ A
        state = state / state.amax(1, keepdim=True)
        upd = pending & (state > threshold)
        if linear_interpolation:
            delta = (1.0 - threshold) if i == 0 else (state - prev)
            val = (i + 1.0) - (state - threshold) / (delta + 1e-6)
        else:
            val = torch.full_like(state, i + 1.0)
        out = torch.where(upd, val, out)
        pending &= ~upd
    return out


def transition_power(A: torch.Tensor, steps: int) -> torch.Tensor:
    """``A^steps`` by repeated squaring (``log2(steps)`` matrix products, in ``A``'s dtype).

    TF32 is switched off for these products (errors would compound over the squarings; a global
    ``float32_matmul_precision`` setting otherwise applies to them) and restored afterwards.
    """
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        result, base, e = None, A, int(steps)
        while True:
            if e & 1:
                result = base if result is None else result @ base
            e >>= 1
            if not e:
                return result
            base = base @ base
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


@torch.no_grad()
def markov_chain_blocked(A: torch.Tensor, start: torch.Tensor, threshold: float = 0.3,
                         max_iterations: int = 1000, linear_interpolation: bool = True,
                         power: torch.Tensor | None = None, block: int = 32) -> torch.Tensor:
    """:func:`markov_chain` computed in blocks of ``block`` steps: the same maps up to float rounding.

    The max-normalisation commutes with the linear step, so the state after ``t`` steps is
    ``normalise(s_0 A^t)`` whatever the grouping. Phase 1 advances the chains from block start to
    block start with ``P = A^block`` (``power``, precomputed once per image); phase 2 advances the
    states of ALL block starts together, ``block`` steps with ``A``, so every intermediate state
    ``t = b * block + j`` is computed and the crossing step, the interpolation and the cap are
    applied exactly as in the step-by-step chain (each cell takes its value from the first block
    in which it passes). That is ``~max_iterations / block`` passes over ``P`` plus ``block``
    batched passes over ``A`` instead of ``max_iterations`` sequential mat-vecs: the matrix is read
    ~16x less often, and the batched products use the hardware far better than mat-vecs.

    Args:
        A: ``(N, N)`` transition matrix; power: ``A^block`` (computed here when None).
        start: ``(K, N)`` start states.

    Returns:
        ``(K, N)`` iteration maps, as :func:`markov_chain`.
    """
    L = int(block)
    if L < 1:
        raise ValueError(f"block: expected >= 1, got {block}")
    if power is None:
        power = transition_power(A, L)
    s0 = start.to(A.dtype).clone()
    K = s0.shape[0]
    never = float(max_iterations if linear_interpolation else max_iterations + 1)
    # phase 1: block starts s_0, s_L, s_2L, ... until every cell sits above the threshold at a block
    # start (then every cell has passed by that time) or the last block start below the cap
    starts, cur = [s0], s0
    while len(starts) * L < max_iterations and not bool((cur > threshold).all()):
        cur = cur @ power
        cur = cur / cur.amax(1, keepdim=True)
        starts.append(cur)
    if bool((cur > threshold).all()) and len(starts) > 1:
        starts.pop()  # nothing is left to pass after this block start
    nb = len(starts)
    state = torch.cat(starts)  # (nb * K, N): block b's chains in rows b * K .. b * K + K - 1
    t0 = (torch.arange(nb, device=A.device) * L).repeat_interleave(K)[:, None]  # step of each row's start
    first = torch.tensor((1.0 - threshold) + 1e-6, dtype=state.dtype, device=A.device)  # as markov_chain at i = 0
    pending = torch.ones_like(state, dtype=torch.bool)
    out = torch.full_like(state, never)
    for j in range(1, L + 1):
        t = t0 + j
        if not bool((t <= max_iterations).any()):
            break
        prev = state
        state = prev @ A
        state = state / state.amax(1, keepdim=True)
        upd = pending & (state > threshold) & (t <= max_iterations)
        if linear_interpolation:
            denom = torch.where(t == 1, first, (state - prev) + 1e-6)
            val = (t.to(state.dtype)) - (state - threshold) / denom
        else:
            val = t.to(state.dtype).expand_as(state)
        out = torch.where(upd, val, out)
        pending &= ~upd
    passed = (~pending).view(nb, K, -1)
    pick = passed.to(torch.uint8).argmax(0, keepdim=True)  # first block in which the cell passed
    res = out.view(nb, K, -1).gather(0, pick)[0]
    res = torch.where(passed.any(0), res, torch.full_like(res, never))
    return torch.where(s0 > threshold, torch.zeros_like(res), res)


CHAINS = ("blocked", "stepwise")


def attention_distance(A: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Attention-NN distance (paper §4 baselines): ``1 - a / max(a)`` with ``a`` the click's attention map.

    ``a = s A`` with ``s`` the start state normalised to sum 1 (a bilinear mix of the four rows).
    Returns ``(K, N)``.
    """
    a = (start / start.sum(1, keepdim=True)).to(A.dtype) @ A
    return 1.0 - a / a.amax(1, keepdim=True).clamp_min(1e-30)


def kl_distance(A: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """KL-NN distance: symmetric KL between the click's attention map and every token's map.

    ``d_q = sum_j (a_j - A_qj)(log a_j - log A_qj)``, computed with two mat-vecs; rows of ``A`` must be
    strictly positive (the baseline clips them to ``>= 1e-5``). Returns ``(K, N)``.
    """
    a = (start / start.sum(1, keepdim=True)).to(A.dtype) @ A  # (K, N)
    la = a.clamp_min(1e-30).log()
    LA = A.log()
    self_a = (a * la).sum(1, keepdim=True)  # sum_j a_j log a_j
    self_q = (A * LA).sum(1)[None]  # sum_j A_qj log A_qj
    return (self_a - a @ LA.T + self_q - la @ A.T).clamp_min_(0.0)


class JointBilateralUpsampler:
    """Dense joint bilateral upsampling of low-res maps to the guide's resolution (methods.md §2.5).

    The low-res map is first upsampled bilinearly (``align_corners=False``); each output pixel then
    averages the upsampled map over a disc of radius ``3 sigma_spatial`` low-res cells with weights
    ``N(dx / (u_x s)) N(dy / (u_y s)) * exp(-|I(p + d) - I(p)|^2 / (2 sigma_range^2))``, RGB in [0, 1].

    The range weights depend only on the image, so they are computed once per image and kept when
    they fit in ``cache_bytes``. ``stride > 1`` keeps only the offsets on a ``stride``-pixel lattice
    (a coarser quadrature of the same integral, for CPU runs); ``stride=1`` is the reference.
    ``max_shifts`` picks the smallest stride whose offset count stays within it.

    Args:
        guide: ``uint8 (H, W, 3)`` image.
        low_hw: ``(h, w)`` of the maps to upsample.
    """

    def __init__(self, guide: np.ndarray, low_hw: tuple[int, int], sigma_spatial: float = 1.0,
                 sigma_range: float = 0.1, stride: int = 1, max_shifts: int | None = None,
                 device: torch.device | str = "cpu", cache_bytes: int | None = None):
        H, W = guide.shape[:2]
        self.shape, self.low_hw, self.device = (H, W), tuple(low_hw), torch.device(device)
        self.sigma_range = float(sigma_range)
        uy, ux = H / low_hw[0], W / low_hw[1]
        ry, rx = 3.0 * uy * sigma_spatial, 3.0 * ux * sigma_spatial  # 3 sigma per axis, as coded

        def offsets(step: int) -> list[tuple[int, int, float]]:
            out = []
            for dy in range(-int(ry + 1), int(ry + 2)):
                sy = dy / (uy * sigma_spatial)
                for dx in range(-int(rx + 1), int(rx + 2)):
                    sx = dx / (ux * sigma_spatial)
                    if dy % step or dx % step or sx * sx + sy * sy > 9.0:
                        continue
                    out.append((dy, dx, math.exp(-0.5 * (sx * sx + sy * sy)) / (2 * math.pi)))
            return out

        stride = max(1, int(stride))
        shifts = offsets(stride)
        while max_shifts is not None and len(shifts) > max_shifts:
            stride += 1
            shifts = offsets(stride)
        self.stride, self.shifts = stride, shifts
        self.guide = torch.as_tensor(guide, device=self.device).permute(2, 0, 1).float().div_(255.0)
        self._weights: list[torch.Tensor] | None = None
        self.norm = torch.zeros((H, W), device=self.device)
        if cache_bytes is None:  # keep the weights when they fit: 1 GiB on CPU, 4 GiB on a GPU
            cache_bytes = (4 if self.device.type == "cuda" else 1) << 30
        keep = len(shifts) * H * W * 4 <= cache_bytes
        cache = []
        for dy, dx, _, wgt in self._iter_weights():
            self.norm[self._out(dy, dx)] += wgt
            if keep:
                cache.append(wgt)
        self._weights = cache if keep else None

    def _out(self, dy: int, dx: int) -> tuple[slice, slice]:
        H, W = self.shape
        return slice(max(0, -dy), H - max(0, dy)), slice(max(0, -dx), W - max(0, dx))

    def _in(self, dy: int, dx: int) -> tuple[slice, slice]:
        H, W = self.shape
        return slice(max(0, dy), H - max(0, -dy)), slice(max(0, dx), W - max(0, -dx))

    def _iter_weights(self):
        g, k = self.guide, -0.5 / self.sigma_range ** 2
        for i, (dy, dx, ws) in enumerate(self.shifts):
            if self._weights is not None:
                yield dy, dx, ws, self._weights[i]
                continue
            oy, ox = self._out(dy, dx)
            iy, ix = self._in(dy, dx)
            diff = g[:, iy, ix] - g[:, oy, ox]
            yield dy, dx, ws, (diff.square_().sum(0).mul_(k).exp_().mul_(ws))

    @torch.no_grad()
    def __call__(self, low: torch.Tensor) -> torch.Tensor:
        """``(K, h, w)`` -> ``(K, H, W)`` float32 on the upsampler's device."""
        if tuple(low.shape[-2:]) != self.low_hw:
            raise ValueError(f"low: expected maps of shape (K, {self.low_hw[0]}, {self.low_hw[1]}), "
                             f"got {tuple(low.shape)}")
        x = F.interpolate(low.float().to(self.device)[:, None], size=self.shape, mode="bilinear",
                          align_corners=False)[:, 0]
        out = torch.zeros_like(x)
        for dy, dx, _, wgt in self._iter_weights():
            oy, ox = self._out(dy, dx)
            iy, ix = self._in(dy, dx)
            for k in range(x.shape[0]):  # 2-D updates are ~3x faster than a broadcast over K on CPU
                out[k, oy, ox].addcmul_(wgt, x[k, iy, ix])
        return out.div_(self.norm)


def flood_fill(values: np.ndarray, point: tuple[int, int]) -> np.ndarray:
    """Modified flood fill (paper §3.3, Algorithm 1): minimax path cost from ``point``, exact.

    Each pixel's cost is ``|v - v(point)|``; the output is the smallest achievable maximum cost over
    4-connected paths from ``point`` (0 there). This equals the grayscale reconstruction by erosion
    of a marker that is 0 at the click and ``max`` elsewhere under the cost image, which
    scikit-image computes exactly in compiled code.

    Args:
        values: ``(H, W)`` map.
        point: ``(x, y)`` integer pixel.
    """
    x, y = point
    v = np.asarray(values, np.float32)
    cost = np.abs(v - v[y, x])
    seed = np.full_like(cost, cost.max())
    seed[y, x] = 0.0
    if _reconstruction_loop is not None:
        return _reconstruct_erosion(seed, cost)
    return reconstruction(seed, cost, method="erosion", footprint=_CROSS).astype(np.float32, copy=False)


try:  # scikit-image's compiled inner loop; its public wrapper sorts the data twice
    from skimage.morphology._grayreconstruct import reconstruction_loop as _reconstruction_loop
except ImportError:  # pragma: no cover - another scikit-image layout: the public function is used
    _reconstruction_loop = None


def _reconstruct_erosion(seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``skimage.morphology.reconstruction(seed, mask, "erosion", footprint=_CROSS)`` for 2-D float32,
    with the same inner loop, the same padding and linked list, but one sort instead of two: the
    pixel order and the value ranks both come from one stable sort of (value, index) keys
    (:func:`.segment.stable_argsort`). The result is the unique reconstruction, so it does not depend
    on how ties are ordered (tests compare with the public function and a brute-force Dijkstra).
    """
    from .segment import stable_argsort

    H, W = seed.shape
    images = np.full((2, H + 2, W + 2), seed.max(), np.float32)  # padding = max(seed), as skimage
    images[0, 1:-1, 1:-1] = seed
    images[1, 1:-1, 1:-1] = mask
    flat = images.reshape(-1)
    isize = flat.size
    sint = np.result_type(np.min_scalar_type(-isize), np.int32)
    uint = np.dtype(sint.char.upper())
    image_stride = (H + 2) * (W + 2)
    strides = np.array([-(W + 2), -1, 1, W + 2], sint)  # the 4-neighbours, in skimage's order
    order = stable_argsort(flat).astype(sint, copy=False)  # erosion walks smallest to largest
    prev = np.full(isize, -1, sint)
    nxt = np.full(isize, -1, sint)
    prev[order[1:]] = order[:-1]
    nxt[order[:-1]] = order[1:]
    # ranks of -images (largest value = rank 0), and the value of each rank
    svals = flat[order]
    step = np.empty(isize, uint)
    step[0] = 0
    np.not_equal(svals[1:], svals[:-1], out=step[1:], casting="unsafe")
    asc = np.cumsum(step, dtype=uint)
    top = asc[-1]
    ranks = np.empty(isize, uint)
    ranks[order] = top - asc
    levels = svals[np.concatenate(([True], svals[1:] != svals[:-1]))][::-1]  # rank -> value
    _reconstruction_loop(ranks, prev, nxt, strides, int(order[0]), image_stride)
    return levels[ranks[:image_stride]].reshape(H + 2, W + 2)[1:-1, 1:-1].copy()
