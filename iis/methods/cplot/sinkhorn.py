"""Entropic optimal transport by Sinkhorn iterations (CPlot §3.2, Eq. 2-3), batched and differentiable.

The plan solves ``min_T <T, C> - lambda * H(T)`` subject to ``T 1 = a`` and ``T^T 1 = b``. Its form is
``T* = diag(u) exp(-C / lambda) diag(v)``. The updates follow Eq. 3: ``v^0 = 1``, then
``u = a / (K v)`` and ``v = b / (K^T u)``, with ``K = exp(-C / lambda)``. This is also the kernel
convention of POT's ``ot.sinkhorn(a, b, M, reg)``, so ``reg`` here is the paper's lambda.

The default is the log domain. There the potentials ``f = lambda log u`` and ``g = lambda log v`` are
updated with ``logsumexp``. That stays finite for very small lambda, e.g. 0.01 on costs in [0, 2],
where ``exp(-C / lambda)`` underflows to 0 in float32. The plain-domain loop of Eq. 3 is kept as a
reference (``log_domain=False``).

Every step is differentiable, so gradients reach the cost, and through it the features and prompts,
by unrolling the loop. ``grad_iters=k`` runs all but the last k iterations under ``no_grad`` to cap
memory. The final ``T = exp((f + g - C) / lambda)`` always keeps its direct path to C.
"""

from __future__ import annotations

import torch

__all__ = ["sinkhorn", "marginal_error"]


def _marginal(w: torch.Tensor | None, shape: tuple[int, ...], n: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """Uniform ``1/n`` when None; otherwise validate and broadcast to ``shape + (n,)``."""
    if w is None:
        return like.new_full((*shape, n), 1.0 / n)
    if w.shape[-1] != n:
        raise ValueError(f"{name} must have {n} entries in its last dimension (the cost's), got shape {tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be non-negative")
    return w.to(like.dtype).expand(*shape, n)


def sinkhorn(cost: torch.Tensor, reg: float = 0.1, a: torch.Tensor | None = None, b: torch.Tensor | None = None,
             num_iters: int = 100, tol: float | None = None, grad_iters: int | None = None,
             log_domain: bool = True) -> torch.Tensor:
    """Entropic OT plan for a batch of cost matrices.

    Args:
        cost: ``(..., M, N)`` cost matrices (CPlot: ``M = H*W`` pixels, ``N`` prompts).
        reg: entropic regularisation lambda > 0 (Eq. 3).
        a: ``(..., M)`` row marginal (mu), non-negative, summing to the same total as ``b``. None means
            uniform ``1/M``, as in CPlot.
        b: ``(..., N)`` column marginal (nu). None means uniform ``1/N``.
        num_iters: maximum number of (u, v) update pairs.
        tol: if set, stop early once the largest row-marginal error ``|T 1 - a|`` is below ``tol``,
            checked every 10 iterations. Checking needs the values on the host (a device sync), so
            None, a fixed count, is the default and the mode to use when tracing or on "meta".
        grad_iters: if set, only the last ``grad_iters`` iterations are recorded for autograd.
        log_domain: log-domain potentials (stable, the default) or the plain scaling loop of Eq. 3.

    Returns:
        The plan ``T`` ``(..., M, N)``. After the final v-update its columns sum exactly to ``b``,
        and its rows sum to ``a`` up to convergence.
    """
    if cost.dim() < 2:
        raise ValueError(f"cost must have shape (..., M, N), got {tuple(cost.shape)}")
    if not reg > 0:
        raise ValueError(f"reg (lambda) must be > 0, got {reg!r}")
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters!r}")
    if grad_iters is not None and grad_iters < 0:
        raise ValueError(f"grad_iters must be >= 0 or None, got {grad_iters!r}")
    *batch, M, N = cost.shape
    a = _marginal(a, tuple(batch), M, cost, "a")
    b = _marginal(b, tuple(batch), N, cost, "b")
    free = num_iters if grad_iters is None else min(grad_iters, num_iters)
    step = _log_step if log_domain else _plain_step
    # state: potentials (f, g) in the log domain, scalings (u, v) otherwise; v^0 = 1 <=> g^0 = 0
    state = (None, torch.zeros_like(b) if log_domain else torch.ones_like(b))
    for it in range(num_iters):
        if it < num_iters - free:
            with torch.no_grad():
                state = step(cost, reg, a, b, state)
        else:
            state = step(cost, reg, a, b, state)
        if tol is not None and (it + 1) % 10 == 0 and it + 1 < num_iters:
            if float(marginal_error(_plan(cost, reg, state, log_domain), a, b)[0]) < tol:
                break
    return _plan(cost, reg, state, log_domain)


def _log_step(cost, reg, a, b, state):
    _, g = state
    # f = lambda log a - lambda LSE_n((g_n - C_mn) / lambda); g likewise over m (Eq. 3 in logs)
    f = reg * (torch.log(a) - torch.logsumexp((g.unsqueeze(-2) - cost) / reg, dim=-1))
    g = reg * (torch.log(b) - torch.logsumexp((f.unsqueeze(-1) - cost) / reg, dim=-2))
    return f, g


def _plain_step(cost, reg, a, b, state):
    _, v = state
    K = torch.exp(-cost / reg)
    u = a / (K @ v.unsqueeze(-1)).squeeze(-1)
    v = b / (K.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1)
    return u, v


def _plan(cost, reg, state, log_domain):
    x, y = state
    if log_domain:
        return torch.exp((x.unsqueeze(-1) + y.unsqueeze(-2) - cost) / reg)
    return x.unsqueeze(-1) * torch.exp(-cost / reg) * y.unsqueeze(-2)


def marginal_error(plan: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest absolute row and column marginal errors of ``plan`` ``(..., M, N)``.

    Uniform marginals are used when ``a``/``b`` are None.
    """
    *batch, M, N = plan.shape
    a = _marginal(a, tuple(batch), M, plan, "a")
    b = _marginal(b, tuple(batch), N, plan, "b")
    return (plan.sum(-1) - a).abs().amax(), (plan.sum(-2) - b).abs().amax()
