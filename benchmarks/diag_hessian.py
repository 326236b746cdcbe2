"""Exact diagonal Hessian of a 784-300-100-10 ReLU MLP on 1000 inputs: cost and agreement.

Claim (DESIGN.md, METHODS.md B): backpropagating the C = 10 columns of the loss-Hessian factor
costs at most 3x one forward+backward pass. The script times both in one process, counts the
GEMM FLOPs of ``diag_hessian``, checks it against a plain baseline (per-sample Jacobians from
``torch.func.jacrev`` and the dense ``J^T Lambda J`` on a subset of the samples, which equals
the Hessian diagonal for a ReLU net), and compares 100-probe Hutchinson with the exact values.

Run: ``python benchmarks/diag_hessian.py [--device cuda] [--n 1000]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
import torch.nn.functional as F
from _common import matmul_gflops, median_time, report
from prunelab.curvature import diag_ggn, diag_hessian, flatten, hutchinson_diag
from torch.func import functional_call, jacrev, vmap

from prunelab import models


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def diag_hessian_flops(widths: list[int], N: int) -> float:
    """GEMM FLOPs of diag_hessian on a piecewise-linear MLP with C = widths[-1] columns.

    forward ``2 N H_l H_{l-1}``, accumulation ``2 N H_l H_{l-1}`` and factor propagation
    ``2 N C H_l H_{l-1}`` for every layer but the first.
    """
    C = widths[-1]
    pairs = list(itertools.pairwise(widths))  # (H_{l-1}, H_l)
    dense = sum(2 * N * h_in * h_out for h_in, h_out in pairs)
    propagate = sum(2 * N * C * h_in * h_out for h_in, h_out in pairs[1:])
    return 2 * dense + propagate


def jacrev_diag_ggn(model: torch.nn.Module, x: torch.Tensor, N: int) -> dict[str, torch.Tensor]:
    """Plain baseline: (1/N) sum_n diag(J_n^T Lambda_n J_n) with per-sample jacrev Jacobians."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def logits_one(params, xi):  # [D] -> [C]
        return functional_call(model, params, (xi[None],))[0]

    jac = vmap(jacrev(logits_one), in_dims=(None, 0))
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    for xs in x.split(10):
        J = jac(params, xs)  # {name: [n, C, *shape]}
        p = torch.softmax(functional_call(model, params, (xs,)), 1)  # [n, C]
        Lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # [n, C, C]
        for name, Jn in J.items():
            Jf = Jn.flatten(2)  # [n, C, P_name]
            out[name] += torch.einsum("ncp,ncd,ndp->p", Jf, Lam, Jf).view_as(out[name]) / N
    return out


def max_rel_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max over parameters of max|a - b| / max|b| (entry-wise ratios blow up near zero)."""
    return max(((a[n] - b[n]).abs().max() / b[n].abs().max()).item() for n in b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=1000, help="samples")
    parser.add_argument("--subset", type=int, default=50, help="samples for the jacrev check")
    parser.add_argument("--probes", type=int, default=100)
    args = parser.parse_args()
    device, N = args.device, args.n
    widths = [784, 300, 100, 10]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, widths[0], generator=g).to(device)
    y = torch.randint(0, widths[-1], (N,), generator=g).to(device)
    model = models.mlp(widths, seed=0).to(device)
    params = list(model.parameters())
    print(f"device {device}, threads {torch.get_num_threads()}, MLP {widths} ReLU, N={N}")

    def forward_backward():
        loss = F.cross_entropy(model(x), y)
        torch.autograd.grad(loss, params)
        sync(device)

    def exact():
        diag_hessian(model, x, y)
        sync(device)

    # interleave the two so that load from other processes hits both alike
    exact(), forward_backward()
    pairs = [
        (
            median_time(forward_backward, repeats=1, warmup=0),
            median_time(exact, repeats=1, warmup=0),
        )
        for _ in range(15)
    ]
    t_fb = statistics.median(fb for fb, _ in pairs)
    t_dh = statistics.median(dh for _, dh in pairs)
    ratio = statistics.median(dh / fb for fb, dh in pairs)
    flops = diag_hessian_flops(widths, N)
    peak = matmul_gflops() if device == "cpu" else None
    gflops = flops / t_dh / 1e9
    peak_text = f" (matmul {peak:.1f} GFLOP/s, {100 * gflops / peak:.0f}%)" if peak else ""
    print(
        f"diag_hessian {t_dh * 1e3:.2f} ms vs forward+backward {t_fb * 1e3:.2f} ms: "
        f"median ratio {ratio:.2f}x (target <= 3x: {'PASS' if ratio <= 3 else 'FAIL'}), "
        f"{flops / 1e9:.2f} GFLOP at {gflops:.1f} GFLOP/s{peak_text}",
        flush=True,
    )

    # agreement with a plain per-sample jacrev baseline on a subset, float32 and float64
    n_sub = min(args.subset, N)
    for dtype in (torch.float32, torch.float64):
        m, xs, ys = model.to(dtype), x[:n_sub].to(dtype), y[:n_sub]
        t0 = time.perf_counter()
        base = jacrev_diag_ggn(m, xs, n_sub)
        sync(device)
        t_base = time.perf_counter() - t0
        t_fast = median_time(lambda m=m, xs=xs, ys=ys: (diag_hessian(m, xs, ys), sync(device)))
        fast = diag_hessian(m, xs, ys)
        report(
            f"diag_hessian vs per-sample jacrev J^T Lambda J ({n_sub} samples, {dtype})",
            t_fast,
            t_base,
        )
        print(f"  max relative error {max_rel_error(fast, base):.2e}", flush=True)
    model.to(torch.float32)
    ggn = diag_ggn(model, x, y)
    print(
        f"diag_hessian vs diag_ggn (ReLU: equal): max relative error "
        f"{max_rel_error(diag_hessian(model, x, y), ggn):.2e}",
        flush=True,
    )

    # Hutchinson with 100 Rademacher probes against the exact diagonal
    gen = torch.Generator(device=device).manual_seed(0)
    t0 = time.perf_counter()
    est, se = hutchinson_diag(model, x, y, args.probes, gen, return_std=True)
    sync(device)
    t_hutch = time.perf_counter() - t0
    exact_d = diag_hessian(model, x, y)
    e, h = flatten(est), flatten(exact_d)
    rel = ((e - h).norm() / h.norm()).item()
    within = ((e - h).abs() <= 3 * flatten(se)).float().mean().item()
    report(f"exact diag_hessian vs {args.probes}-probe Hutchinson", t_dh, t_hutch)
    print(
        f"  Hutchinson relative error ||est - exact|| / ||exact|| = {rel:.3f}; "
        f"{100 * within:.1f}% of entries within 3 standard errors",
        flush=True,
    )

    # informational: a curved activation adds residual terms (for 784-300-100-10 the layer-2
    # residual reaches layer 1 as one GEMM r @ W^2, so no extra factor columns are needed)
    tanh = models.mlp(widths, activation="tanh", seed=0).to(device)
    tanh_params = list(tanh.parameters())
    t_tanh_fb = median_time(
        lambda: (torch.autograd.grad(F.cross_entropy(tanh(x), y), tanh_params), sync(device))
    )
    t_tanh = median_time(lambda: (diag_hessian(tanh, x, y), sync(device)), repeats=3)
    print(
        f"tanh net (residual terms): diag_hessian {t_tanh * 1e3:.1f} ms "
        f"= {t_tanh / t_tanh_fb:.1f}x its forward+backward (no target)",
        flush=True,
    )


if __name__ == "__main__":
    main()
