"""Exact diagonal Hessian of LeNet-5 on 1000 mnist5k images: cost, BackPACK, agreement.

Claim (DESIGN.md, METHODS.md B): backpropagating the factor of the loss Hessian gives the
exact diagonal of a ReLU convnet for about C backward passes through the convolutions. The
script trains ``models.lenet5()`` (max pooling, ReLU) briefly so that the curvature is that of
a fitted net, then times ``diag_hessian`` against one forward+backward of the mean
cross-entropy (target: at most 3x) and against BackPACK's ``DiagHessian`` on the same model
and samples (target: no slower; BackPACK also returns the gradient, which costs it one
backward pass more), checks that the two agree to float rounding, and checks both against a
plain baseline on a subset (per-sample ``torch.func.jacrev`` Jacobians and the dense
``J^T Lambda J``, equal to the Hessian diagonal for a ReLU net). A tanh LeNet-5 on a few
samples shows the price of the residual terms of a curved activation (no target).

FLOPs counted are the GEMM/convolution multiply-adds (2 FLOPs each) of each computation, per
Affine layer with ``H`` outputs per sample and fan-in ``D`` (``D = C_in k_h k_w`` for a conv):
forward ``2 N H D``; the autograd backward a weight gradient for every layer and an input
gradient for all but the first; ``diag_hessian`` the forward, per layer ``V`` per-sample weight
contractions of a conv (``2 N V H D``; a Linear's collapse to one GEMM) and ``V`` input
gradients for all but the first layer, with ``V = C - 1`` factor columns. Their ratio is the
floor of the time ratio at equal efficiency. ``diag_hessian`` does less: behind conv1's 2x2
max pool its columns are nonzero at one position in four, and it contracts conv1's unfolded
input at those positions only (``_Routed`` in ``prunelab/engines/curvature.py``), so its
GFLOP/s counts the work it avoids.

Run: ``python benchmarks/diag_hessian_conv.py [--n 1000] [--epochs 1] [--subset 50]``.
BackPACK is optional (``pip install --no-deps backpack-for-pytorch einops unfoldNd``); without
it those lines say so.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from _common import matmul_gflops, median_time, report
from diag_hessian import jacrev_diag_ggn, max_rel_error
from prunelab.curvature import diag_ggn, diag_hessian
from torch import nn

from prunelab import data, models, ops, train


def layer_sizes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int, bool]]:
    """``(H, D, conv)`` per Linear/Conv2d: outputs per sample, fan-in, whether a conv."""
    view = ops.parse(model)
    out, a = [], view.inputs(x[:1])
    with torch.no_grad():
        for op in view.ops:
            b = op.apply(a, training=False)
            if isinstance(op, ops.Affine):
                out.append((b[0].numel(), op.weight[0].numel(), op.conv))
            a = b
    return out


def flops(model: nn.Module, x: torch.Tensor, V: int) -> tuple[float, float]:
    """GEMM FLOPs of one forward+backward and of ``diag_hessian`` with ``V`` columns."""
    N, sizes = x.shape[0], layer_sizes(model, x)
    mac = [H * D for H, D, _ in sizes]
    fb = 2 * N * (sum(mac) + sum(mac) + sum(mac[1:]))  # forward, weight grads, input grads
    contract = sum(V * m if conv else m for m, (_, _, conv) in zip(mac, sizes, strict=True))
    dh = 2 * N * (sum(mac) + contract + V * sum(mac[1:]))
    return fb, dh


def backpack_runner(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """A function running BackPACK's DiagHessian (on a copy of ``model``) -> {name: diag}, or
    None when BackPACK is not installed."""
    try:
        from backpack import backpack, extend
        from backpack.extensions import DiagHessian
    except ImportError:
        return None
    ext = extend(copy.deepcopy(model))
    loss_fn = extend(nn.CrossEntropyLoss())

    def run() -> dict[str, torch.Tensor]:
        ext.zero_grad(set_to_none=True)
        loss = loss_fn(ext(x), y)
        with warnings.catch_warnings(), backpack(DiagHessian()):
            warnings.simplefilter("ignore")  # BackPACK warns about hooks on every backward
            loss.backward()
        return {n: p.diag_h for n, p in ext.named_parameters()}

    return run


def paired_times(a, b, repeats: int) -> tuple[float, float, float]:
    """Medians of ``a()`` and ``b()`` timed alternately (load from other processes hits both
    alike) and the median of their per-pair ratio ``t_b / t_a``."""
    a(), b()
    pairs = [
        (median_time(a, repeats=1, warmup=0), median_time(b, repeats=1, warmup=0))
        for _ in range(repeats)
    ]
    return (
        statistics.median(p for p, _ in pairs),
        statistics.median(q for _, q in pairs),
        statistics.median(q / p for p, q in pairs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs before timing")
    parser.add_argument("--subset", type=int, default=50, help="samples for the jacrev check")
    parser.add_argument("--tanh-n", type=int, default=16, help="samples for the tanh net")
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    split = data.load("mnist5k", seed=0)
    model = models.lenet5(seed=0)
    train.fit(
        model, split.train, epochs=args.epochs, lr=1e-3, batch_size=64, seed=0, progress=False
    )
    model.eval()
    x, y = split.train.x[: args.n], split.train.y[: args.n]
    N, C = x.shape[0], ops.parse(model).out_features
    accuracy = train.evaluate(model, split.test)["accuracy"]
    peak = matmul_gflops()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, matmul {peak:.1f} GFLOP/s "
        f"(float32); lenet5 (ReLU, max pool) after {args.epochs} epoch(s), test accuracy "
        f"{accuracy:.3f}; N={N} mnist5k images",
        flush=True,
    )
    params = list(model.parameters())

    def forward_backward():
        torch.autograd.grad(F.cross_entropy(model(x), y), params)

    def exact():
        diag_hessian(model, x, y)

    t_fb, t_dh, ratio = paired_times(forward_backward, exact, args.repeats)
    fb_flops, dh_flops = flops(model, x, C - 1)
    gflops = dh_flops / t_dh / 1e9
    print(
        f"diag_hessian {t_dh * 1e3:.1f} ms vs forward+backward {t_fb * 1e3:.1f} ms: median "
        f"ratio {ratio:.2f}x (target <= 3x: {'PASS' if ratio <= 3 else 'FAIL'}); FLOP ratio "
        f"{dh_flops / fb_flops:.2f}x (the floor at equal efficiency); diag_hessian "
        f"{dh_flops / 1e9:.2f} GFLOP at {gflops:.1f} GFLOP/s ({100 * gflops / peak:.0f}% of "
        f"matmul), forward+backward {fb_flops / t_fb / 1e9:.1f} GFLOP/s",
        flush=True,
    )

    ours = diag_hessian(model, x, y)
    run_backpack = backpack_runner(model, x, y)
    if run_backpack is None:
        print("BackPACK is not installed: comparison skipped", flush=True)
    else:
        t_ours, t_bp, speedup = paired_times(exact, run_backpack, args.repeats)
        report(
            f"diag_hessian vs BackPACK DiagHessian (same {N} samples; median pair ratio "
            f"{speedup:.2f}x, target >= 1: {'PASS' if speedup >= 1 else 'FAIL'})",
            t_ours,
            t_bp,
            flops=dh_flops,
            peak=peak,
        )
        print(f"  max relative difference {max_rel_error(ours, run_backpack()):.2e}", flush=True)

    # the plain baseline on a subset, float32 and float64
    n_sub = min(args.subset, N)
    for dtype in (torch.float32, torch.float64):
        m, xs, ys = copy.deepcopy(model).to(dtype), x[:n_sub].to(dtype), y[:n_sub]
        t0 = time.perf_counter()
        base = jacrev_diag_ggn(m, xs, n_sub)
        t_base = time.perf_counter() - t0
        t_fast = median_time(lambda m=m, xs=xs, ys=ys: diag_hessian(m, xs, ys), repeats=3)
        report(
            f"diag_hessian vs per-sample jacrev J^T Lambda J ({n_sub} samples, {dtype})",
            t_fast,
            t_base,
        )
        print(
            f"  max relative error {max_rel_error(diag_hessian(m, xs, ys), base):.2e}", flush=True
        )
    ggn = diag_ggn(model, x, y)
    print(f"diag_hessian vs diag_ggn (ReLU: equal): {max_rel_error(ours, ggn):.2e}", flush=True)

    # informational: curved activations add residual columns (one per position of every
    # later curved activation's input), as BackPACK's DiagHessian does with two per position
    tanh = models.lenet5(seed=0, activation="tanh").eval()
    xt, yt = x[: args.tanh_n], y[: args.tanh_n]
    tanh_params = list(tanh.parameters())
    t_tanh_fb = median_time(lambda: torch.autograd.grad(F.cross_entropy(tanh(xt), yt), tanh_params))
    t_tanh = median_time(lambda: diag_hessian(tanh, xt, yt), repeats=3)
    line = (
        f"tanh lenet5, {len(yt)} samples (residual terms): diag_hessian {t_tanh * 1e3:.0f} ms = "
        f"{t_tanh / t_tanh_fb:.0f}x its forward+backward (no target)"
    )
    run_tanh = backpack_runner(tanh, xt, yt)
    if run_tanh is not None:
        t0 = time.perf_counter()
        theirs = run_tanh()  # slow (two columns per position of every curved layer): once
        t_bp = time.perf_counter() - t0
        diff = max_rel_error(diag_hessian(tanh, xt, yt), theirs)
        line += f"; BackPACK DiagHessian {t_bp * 1e3:.0f} ms, max relative difference {diff:.1e}"
    print(line, flush=True)


if __name__ == "__main__":
    main()
