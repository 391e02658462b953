"""GPCIS Gaussian-process head: amortised variational GP classification with pathwise sampling.

Paper: Zhou et al., "Interactive Segmentation as Gaussian Process Classification", CVPR 2023
("Interactive Segmentation as Gaussian Process Classification", §4, Eqs. 6-12); released code ``zmhhmz/GPCIS_CVPR2023@6460415`` as summarised in
docs/methods.md §3.2-3.4. Where code and paper differ the code is the default and the paper is a switch:

=================  ===============================  =====================================
quantity           code (default)                   paper (switch)
=================  ===============================  =====================================
RFF map            sqrt(2/l) sin(Θx + τ)            ``rff="cos"``: sqrt(2/l) cos(Θx + τ)
Θ, τ init          Xavier-gluon N(0, 2/avg fan), 0  ``init="paper"``: N(0, I), U(0, 2π)
μ_w init           0.25·N(0, 1)                     ``init="paper"``: N(0, 0.25) (std 0.5)
σ_w                std 0.025, clamped [0.01, 0.05]  ``init="paper"``: variance 0.025, no clamp
RGB kernel weight  softplus(0) = ln 2               ``init="paper"``: η0 = 1
L_VI               BCE(u) mean + mᵀ K⁻¹ m / n,      ``vi_loss="paper"``: (Σ BCE + ½ mᵀ K⁻¹ m) / n,
                   K⁻¹ detached                     K⁻¹ not detached (Eq. 8)
=================  ===============================  =====================================

Both use the feature precision e^{s_d} with s_d = 1 (= paper η_t = e^-1), MLP_ξ hidden 96, variational
std 0.01, ε² 1e-2 in training and 1e-7 at test (paper Table 1, §5.2).

Forward (methods.md §3.4): X̄ = [upsample(L2norm(features)), normalised RGB] at input resolution;
f(x) = Φ(x)w + K(x, X_n)(K_nn + ε²I)⁻¹(u - Φ(X_n)w), with w = μ_w + σ_w ε (training) or μ_w (test) and
u = m + 0.01 ε (training) or m (test), m = softplus(MLP_ξ(X_n))·y_n, y_n ∈ {+1, -1}.

Click pixels X_n: as the authors' code, a click is read at its ``.long()``-truncated coordinates and a
click outside the input is left out of the GP (``click_pixel="trunc"``, the default); ``"round"`` reads
the nearest pixel. Under the gpcis protocol (zoom-in crop resized to 384) clicks are non-integer in the
model's input, so the two readings pick different pixels from the second click on (docs/parity.md).

Batching: clicks are padded to a common N; padded/invalid rows get an identity block in K_nn and a
zero residual, so they contribute exactly nothing. An image without clicks therefore returns the prior
Φ(x)w, and a batch without any click (N = 0) runs the same code on empty tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from iis.models.segmentors import xavier_gluon_

__all__ = ["GPHead", "gather_click_features"]

_RFF = ("sin", "cos")
_INITS = ("code", "paper")
_SOLVERS = ("inverse", "cholesky")
_VI = ("code", "paper")
_CLICK_PIXEL = ("trunc", "round")


def gather_click_features(x: torch.Tensor, clicks: torch.Tensor, mode: str = "round"
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read per-click feature vectors at the click pixels.

    Args:
        x: ``(B, D, H, W)`` per-pixel features at input resolution.
        clicks: ``(B, N, 3)`` rows ``(x, y, label)`` in input pixels; label 1 / 0 / -1 (padding).
        mode: ``"trunc"``: the authors' reading (``is_gp_model.py``, ``prepare_points_labels`` and
            ``Pathwise_GP_update``): a click outside ``[0, W) x [0, H)`` is dropped, the others are read at
            ``.long()``-truncated coordinates (the pixel whose square contains the point).
            ``"round"``: the nearest pixel, clamped into the image (a click outside reads the border).
            The two agree for integer clicks (training, the plain protocol); under the gpcis protocol clicks
            are non-integer in crop coordinates (zoom-in + 384 resize), where they differ.
            :class:`GPHead` uses ``"trunc"`` by default.

    Returns:
        ``feats (B, N, D)``, ``labels (B, N)`` in {+1, -1} (0 on padding / dropped), ``valid (B, N)`` bool.
    """
    if mode not in _CLICK_PIXEL:
        raise ValueError(f"mode must be one of {_CLICK_PIXEL}, got {mode!r}")
    B, D, H, W = x.shape
    valid = (clicks[..., 2] >= 0) & torch.isfinite(clicks[..., :2]).all(-1)
    px, py = torch.nan_to_num(clicks[..., 0]), torch.nan_to_num(clicks[..., 1])
    if mode == "trunc":
        valid = valid & (px >= 0) & (py >= 0) & (px < W) & (py < H)
        # floor == .long() truncation here (px, py >= 0 once clamped); explicit so ONNX export keeps it exact
        cx, cy = px.clamp(0, W - 1).floor().long(), py.clamp(0, H - 1).floor().long()  # clamp: dropped clicks only
    else:
        cx, cy = px.round().clamp(0, W - 1).long(), py.round().clamp(0, H - 1).long()
    idx = (cy * W + cx).unsqueeze(1).expand(B, D, -1)  # (B, D, N)
    feats = x.flatten(2).gather(2, idx).transpose(1, 2)
    labels = torch.where(clicks[..., 2] > 0.5, 1.0, -1.0).to(x.dtype) * valid.to(x.dtype)
    return feats, labels, valid


def _sqdist_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B, M, N)`` squared distances by differences (exactly 0 for identical rows; small N only)."""
    return (a.unsqueeze(2) - b.unsqueeze(1)).pow(2).sum(-1)


def _sqdist_expand(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B, M, N)`` squared distances via ‖a‖² + ‖b‖² - 2a·b (memory-light for M = H·W pixels)."""
    d2 = a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(1) - 2.0 * a @ b.transpose(1, 2)
    return d2.clamp_min(0.0)


class GPHead(nn.Module):
    """The GP posterior inference of GPCIS (paper Fig. 2 (b)+(c)).

    Args:
        feat_dim: d, channels of the segmentor features (48 for ResNet-50/HRNet-18s, 96 for SegFormer-B0,
            supplement).
        num_rff: l, number of random Fourier features (256; 128 for SegFormer-B0, supplement).
        mlp_hidden: hidden width of MLP_ξ (96, paper §5.1).
        concat_rgb: concatenate the normalised RGB to the features and add the RGB kernel term (paper
            §4.3; ablation (d) of Table 4 turns it off).
        rff: "sin" (code) or "cos" (paper Eq. 12).
        init: "code" or "paper" initial values (see module docstring).
        solver: "inverse" (``torch.linalg.inv`` as upstream) or "cholesky" (``cholesky_solve``; in fp32 a
            failed factorisation is retried with 10x more jitter, up to ``max_jitter``).
        solve_dtype: dtype of K_nn and its solve: "float64" (default; the n x n system is tiny and ε² = 1e-7
            is below fp32 resolution next to k(x, x) ≈ 1.7), "float32" (bit-for-bit upstream), or "auto"
            (float64 except on MPS, which has no float64).
        vi_loss: "code" or "paper" form of L_VI (see module docstring).
        train_eps2, test_eps2: jitter ε² in training / evaluation mode (paper: 1e-2 / 1e-7).
        u_std: std of the variational distribution q(f_n) (σ = 0.01, paper Eq. 6 / code).
        learn_kernel: train the kernel scales (DKL-F); False is ablation (b) of Table 4.
        learn_prior: train Θ, τ, μ_w, σ_w (DKL-W); False is ablation (c) of Table 4.
        max_jitter: largest ε² tried when a factorisation reports failure (retry with 10x jitter).
        click_pixel: where a click's feature is read (:func:`gather_click_features`): ``"trunc"`` (default,
            the authors' ``.long()`` truncation; clicks outside the input are dropped) or ``"round"``.

    Attributes:
        eps2_override: when not None, used instead of train/test ε² (e.g. upstream's in-training click
            simulation runs in eval mode with ε² = 1e-2).
    """

    def __init__(self, feat_dim: int = 48, num_rff: int = 256, mlp_hidden: int = 96, concat_rgb: bool = True,
                 rff: str = "sin", init: str = "code", solver: str = "inverse", solve_dtype: str = "float64",
                 vi_loss: str = "code", train_eps2: float = 1e-2, test_eps2: float = 1e-7, u_std: float = 0.01,
                 learn_kernel: bool = True, learn_prior: bool = True, max_jitter: float = 1e-2,
                 click_pixel: str = "trunc"):
        super().__init__()
        for name, val, allowed in (("rff", rff, _RFF), ("init", init, _INITS), ("solver", solver, _SOLVERS),
                                   ("vi_loss", vi_loss, _VI), ("solve_dtype", solve_dtype,
                                                               ("float64", "float32", "auto")),
                                   ("click_pixel", click_pixel, _CLICK_PIXEL)):
            if val not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {val!r}")
        if feat_dim < 1 or num_rff < 1:
            raise ValueError(f"feat_dim and num_rff must be >= 1, got {feat_dim}, {num_rff}")
        if train_eps2 <= 0 or test_eps2 <= 0:
            raise ValueError(f"train_eps2 and test_eps2 must be > 0, got {train_eps2}, {test_eps2}")
        self.feat_dim, self.num_rff, self.concat_rgb = feat_dim, num_rff, concat_rgb
        self.rff, self.init, self.solver, self.solve_dtype, self.vi_loss = rff, init, solver, solve_dtype, vi_loss
        self.train_eps2, self.test_eps2, self.u_std = float(train_eps2), float(test_eps2), float(u_std)
        self.max_jitter = float(max_jitter)
        self.click_pixel = click_pixel
        self.eps2_override: float | None = None
        in_dim = feat_dim + (3 if concat_rgb else 0)
        self.theta = nn.Linear(in_dim, num_rff)  # Θ (weight) and τ (bias), learnable (§4.3)
        self.mu_w = nn.Parameter(torch.zeros(num_rff))
        self.sigma_w = nn.Parameter(torch.zeros(()))
        self.log_prec = nn.Parameter(torch.ones(feat_dim))  # s_d: precision e^{s_d} (code init 1)
        self.rgb_weight = nn.Parameter(torch.zeros(()))  # softplus -> η0
        self.mlp = nn.Sequential(nn.Linear(in_dim, mlp_hidden), nn.ReLU(inplace=True), nn.Linear(mlp_hidden, 1))
        # σ_w as a std clamped to [0.01, 0.05] in the code; the paper's σ_w² = 0.025 is a variance
        self.sigma_w_clamp = (0.01, 0.05) if init == "code" else (0.0, None)
        self.reset_parameters()
        for p in (self.log_prec, self.rgb_weight):
            p.requires_grad_(learn_kernel)
        for p in (self.theta.weight, self.theta.bias, self.mu_w, self.sigma_w):
            p.requires_grad_(learn_prior)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        xavier_gluon_(self.mlp)
        if self.init == "code":
            xavier_gluon_(self.theta)  # std sqrt(2 / ((51 + 256) / 2)) ≈ 0.114, τ = 0
            self.mu_w.normal_(0.0, 0.25)
            self.sigma_w.fill_(0.025)
            self.rgb_weight.fill_(0.0)
        else:
            self.theta.weight.normal_(0.0, 1.0)
            self.theta.bias.uniform_(0.0, 2 * math.pi)
            self.mu_w.normal_(0.0, 0.5)
            self.sigma_w.fill_(math.sqrt(0.025))
            self.rgb_weight.fill_(math.log(math.e - 1.0))  # softplus -> 1
        self.log_prec.fill_(1.0)

    # ----------------------------------------------------------------------------------------- pieces
    def eps2(self) -> float:
        if self.eps2_override is not None:
            return float(self.eps2_override)
        return self.train_eps2 if self.training else self.test_eps2

    def sigma_w_value(self) -> torch.Tensor:
        lo, hi = self.sigma_w_clamp
        return self.sigma_w.abs().clamp(lo, hi) if hi is not None else self.sigma_w.abs().clamp_min(lo)

    def features(self, feats: torch.Tensor, image_norm: torch.Tensor) -> torch.Tensor:
        """X̄ ``(B, D, H, W)``: L2-normalised features upsampled to the image size (+ normalised RGB)."""
        x = F.normalize(feats.float(), dim=1)
        x = F.interpolate(x, size=image_norm.shape[-2:], mode="bilinear", align_corners=True)
        return torch.cat([x, image_norm.float()], 1) if self.concat_rgb else x

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """Random Fourier features ``(..., l)`` of ``x (..., D)``."""
        z = self.theta(x)
        return math.sqrt(2.0 / self.num_rff) * (torch.sin(z) if self.rff == "sin" else torch.cos(z))

    def sample_w(self, sample: bool) -> torch.Tensor:
        """Weight-space prior draw ``(l,)``: one draw per batch, as the code (``torch.randn(L, 1)``)."""
        if not sample:
            return self.mu_w
        return self.mu_w + self.sigma_w_value() * torch.randn_like(self.mu_w)

    def kernel(self, a: torch.Tensor, b: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """k(a, b) ``(B, M, N)`` for ``a (B, M, D)``, ``b (B, N, D)`` (paper §4.3 / code).

        ``exp(-½ Σ_d e^{s_d} (a_d - b_d)²) + softplus(ω)·exp(-½ ‖rgb_a - rgb_b‖²)``.
        """
        d = self.feat_dim
        scale = torch.exp(0.5 * self.log_prec).to(a.dtype)
        dist = _sqdist_exact if exact else _sqdist_expand
        k = torch.exp(-0.5 * dist(a[..., :d] * scale, b[..., :d] * scale))
        if self.concat_rgb:
            k = k + F.softplus(self.rgb_weight).to(a.dtype) * torch.exp(-0.5 * dist(a[..., d:], b[..., d:]))
        return k

    def _solve(self, A: torch.Tensor, rhs: torch.Tensor, jitter: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A + ε²I)⁻¹ rhs`` for ``A (B, N, N)``, ``rhs (B, N, k)``; returns the solution and the inverse
        (solver "inverse") or the Cholesky factor. An image whose matrix is numerically singular (fp32 with
        near-duplicate clicks and tiny ε²) is retried with 10x more jitter, up to ``max_jitter``."""
        B, N = A.shape[0], A.shape[-1]
        eye = torch.eye(N, dtype=A.dtype, device=A.device)
        eps = torch.full((B, 1, 1), jitter, dtype=A.dtype, device=A.device)
        factor = torch.linalg.inv_ex if self.solver == "inverse" else torch.linalg.cholesky_ex
        out, info = factor(A + eps * eye)
        # data-dependent retry, skipped when only shapes are traced ("meta") and under torch.export
        # (the exported graph holds the single factorisation at ε²; eager mode is unchanged)
        if A.device.type != "meta" and not torch.compiler.is_exporting():
            while bool((info > 0).any()) and jitter < self.max_jitter:
                jitter *= 10.0
                eps = torch.where(info.view(B, 1, 1) > 0, torch.full_like(eps, jitter), eps)
                retry, info_retry = factor(A + eps * eye)
                bad = (info > 0).view(B, 1, 1)
                out, info = torch.where(bad, retry, out), torch.where(info > 0, info_retry, info)
        if self.solver == "inverse":
            return out @ rhs, out
        return torch.cholesky_solve(rhs, out), out

    def _apply_inv(self, handle: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        return handle @ rhs if self.solver == "inverse" else torch.cholesky_solve(rhs, handle)

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, feats: torch.Tensor, image_norm: torch.Tensor, clicks: torch.Tensor,
                eps2: float | None = None, sample: bool | None = None) -> dict[str, torch.Tensor]:
        """GP posterior logits.

        Args:
            feats: ``(B, d, h, w)`` segmentor features (any stride).
            image_norm: ``(B, 3, H, W)`` ImageNet-normalised image at input resolution.
            clicks: ``(B, N, 3)`` rows ``(x, y, label)`` in input pixels (label -1 = padding).
            eps2: jitter ε²; default ``eps2_override`` or train/test ε² by mode.
            sample: draw w and u (default: ``self.training``); False is the posterior-mean path.

        Returns:
            dict with ``logits`` / ``prior`` / ``update`` ``(B, 1, H, W)``, ``kl`` (L_VI, unweighted scalar),
            ``m`` / ``u`` ``(B, N)``, ``valid (B, N)`` and ``eps2``.
        """
        if feats.ndim != 4 or feats.shape[1] != self.feat_dim:
            raise ValueError(f"feats must be (B, {self.feat_dim}, h, w), got {tuple(feats.shape)}")
        B, _, H, W = image_norm.shape
        eps2 = self.eps2() if eps2 is None else float(eps2)
        sample = self.training if sample is None else sample
        dev_type = feats.device.type if feats.device.type in ("cuda", "cpu", "mps", "xpu") else "cpu"
        with torch.autocast(device_type=dev_type, enabled=False):  # GP algebra in fp32 even under AMP
            x = self.features(feats, image_norm)
            xn, y, valid = gather_click_features(x, clicks.float(), self.click_pixel)
            xf = x.flatten(2).transpose(1, 2)  # (B, HW, D)
            w = self.sample_w(sample)
            prior = self.phi(xf) @ w  # (B, HW)

            m = F.softplus(self.mlp(xn).squeeze(-1)) * y  # (B, N), sign = label (Eq. 7)
            u = m + self.u_std * torch.randn_like(m) if sample else m
            vmask = valid.to(x.dtype)
            r = (u - self.phi(xn) @ w) * vmask  # residual, zero on padding

            solve_dtype = torch.float64 if (self.solve_dtype == "float64" or (
                self.solve_dtype == "auto" and x.device.type != "mps")) else torch.float32
            pair = vmask.unsqueeze(2) * vmask.unsqueeze(1)
            K = self.kernel(xn.to(solve_dtype), xn.to(solve_dtype), exact=True) * pair.to(solve_dtype)
            K = K + torch.diag_embed(1.0 - vmask).to(solve_dtype)  # identity block on padding
            rhs = torch.stack([r, m], -1).to(solve_dtype)  # one solve for v and for K⁻¹m
            if self.vi_loss == "code":  # the code detaches K⁻¹ in L_VI; v still needs its gradient
                sol, handle = self._solve(K, rhs[..., :1], eps2)
                kinv_m = self._apply_inv(handle.detach(), rhs[..., 1:])
            else:
                sol, handle = self._solve(K, rhs, eps2)
                sol, kinv_m = sol[..., :1], sol[..., 1:]
            v = sol[..., 0].to(x.dtype) * vmask  # (B, N)
            update = (self.kernel(xf, xn) @ v.unsqueeze(-1)).squeeze(-1)  # (B, HW)
            logits = (prior + update).view(B, 1, H, W)
            kl = self._vi_loss(u, m, y, vmask, kinv_m[..., 0].to(x.dtype))
        return {"logits": logits, "prior": prior.view(B, 1, H, W), "update": update.view(B, 1, H, W),
                "kl": kl, "m": m, "u": u, "valid": valid, "eps2": eps2}

    def _vi_loss(self, u: torch.Tensor, m: torch.Tensor, y: torch.Tensor, vmask: torch.Tensor,
                 kinv_m: torch.Tensor) -> torch.Tensor:
        """L_VI of Eq. 8 averaged over the n valid clicks of the batch (0 without clicks)."""
        n = vmask.sum().clamp_min(1.0)
        bce = F.binary_cross_entropy_with_logits(u, (y + 1) / 2, reduction="none") * vmask
        quad = (m * kinv_m * vmask).sum()
        if self.vi_loss == "code":
            return bce.sum() / n + quad / n
        return (bce.sum() + 0.5 * quad) / n
