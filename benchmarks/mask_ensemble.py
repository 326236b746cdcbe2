"""Many node masks at once: ``ablation.mask_losses`` against a plain per-mask autograd loop.

    python benchmarks/mask_ensemble.py [--quick] [--threads T]

(a) the 2-20-2 ReLU circle net of Hobson (2022), 3000 masks x 10,000 points: elementwise-bound;
    also times the "floor", plain cross-entropy of all mask-point pairs from given logits.
(b) a 784-300-100-10 ReLU net, 1000 masks over its 400 hidden nodes, 1000 inputs: matmul-bound;
    FLOPs counted are the masked layers' matmuls, forward and backward, per mask.

The baseline loops over a subset of the masks and is scaled linearly (stated in each line).
On a machine shared with other processes, ``--threads 1`` gives stable ratios: a multi-threaded
(OpenMP) op waits for all its threads, so it stalls whenever another process holds a core; the
fast path's large ops are threaded, the baseline's small ones are not.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from _common import matmul_gflops, median_time, report

from prunelab import ablation, masks, models


def loop(model, x, y, node_masks):
    """The plain baseline: per mask, a forward with the mask, CE, autograd for d loss / d mask."""
    sizes = masks.hidden_sizes(model)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    losses, grads = [], []
    for m in node_masks:
        m = m.clone().requires_grad_(True)
        h = x
        for linear, block in zip(linears[:-1], m.split(sizes), strict=True):
            h = torch.relu(linear(h)) * block
        loss = F.cross_entropy(linears[-1](h), y)
        (grad,) = torch.autograd.grad(loss, m)
        losses.append(loss.detach())
        grads.append(grad)
    return torch.stack(losses), torch.stack(grads)


def compare(name, model, x, y, node_masks, n_loop, *, repeats, **report_kw):
    """Time fast path and baseline (on ``n_loop`` masks, scaled), report; (fast_s, agree)."""
    M = node_masks.shape[0]
    fast_s = median_time(lambda: ablation.mask_losses(model, x, y, node_masks), repeats=repeats)
    loss, grad = ablation.mask_losses(model, x, y, node_masks[:n_loop])
    loss_ref, grad_ref = loop(model, x, y, node_masks[:n_loop])
    err = max((loss - loss_ref).abs().max().item(), (grad - grad_ref).abs().max().item())
    agree = err <= 1e-5
    print(
        f"{name}: fast path vs loop on {n_loop} masks: max |difference| {err:.1e} "
        f"({'agree' if agree else 'DISAGREE: FAIL'})",
        flush=True,
    )
    base_s = median_time(lambda: loop(model, x, y, node_masks[:n_loop]), repeats=3) * M / n_loop
    scaled = f"baseline timed on {n_loop} masks, scaled x{M / n_loop:g}" if n_loop < M else ""
    report(f"{name} ({scaled})" if scaled else name, fast_s, base_s, **report_kw)
    return fast_s, agree


def circle(N, generator):
    """N points uniform on [-1, 1]^2, label 1 outside the circle of radius sqrt(2/pi)."""
    x = 2 * torch.rand(N, 2, generator=generator) - 1
    return x, (x.pow(2).sum(1) > 2 / math.pi).long()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller problems, fewer repeats")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = 10 if args.quick else 1
    repeats = 3 if args.quick else 5
    g = torch.Generator().manual_seed(0)
    peak = matmul_gflops()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"matmul {peak:.1f} GFLOP/s (float32){', --quick' if args.quick else ''}",
        flush=True,
    )

    # (a) 2-20-2 ReLU net: loss of every mask-point pair, elementwise-bound
    M, N = 3000 // scale, 10_000
    model = models.mlp((2, 20, 2), seed=0)
    x, y = circle(N, g)
    node_masks = (torch.rand(M, 20, generator=g) < 0.5).float()
    fast_s, agree_a = compare(
        f"(a) 2-20-2 ReLU, {M} masks x {N} points",
        model,
        x,
        y,
        node_masks,
        n_loop=300 // scale,
        repeats=repeats,
        target=15,
    )
    logits = torch.randn(M * N, 2, generator=g)
    labels = y.repeat(M)
    floor_s = median_time(lambda: F.cross_entropy(logits, labels), repeats=3)
    print(
        f"(a) floor: F.cross_entropy on [{M * N}, 2] logits {floor_s * 1e3:.2f} ms; "
        f"fast / floor = {fast_s / floor_s:.2f}",
        flush=True,
    )

    # (b) 784-300-100-10 ReLU net: matmul-bound
    M, N, H1, H2, C = 1000 // scale, 1000, 300, 100, 10
    model = models.mlp((784, H1, H2, C), seed=0)
    x = torch.rand(N, 784, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    node_masks = (torch.rand(M, H1 + H2, generator=g) < 0.5).float()
    # masked layers' matmuls per mask: forward [N,H1]x[H1,H2] and [N,H2]x[H2,C], backward the same
    flops = M * 2 * (2 * N * H1 * H2 + 2 * N * H2 * C)
    peak = max(peak, matmul_gflops())  # the machine is shared: the better of two measurements
    fast_s, agree_b = compare(
        f"(b) 784-300-100-10 ReLU, {M} masks x {N} points",
        model,
        x,
        y,
        node_masks,
        n_loop=100 // scale,
        repeats=repeats,
        flops=flops,
        peak=peak,
        target=4,
    )
    share = flops / fast_s / 1e9 / peak
    print(
        f"(b) matmul efficiency {100 * share:.0f}% of measured peak "
        f"(target >= 60%: {'PASS' if share >= 0.6 else 'FAIL'})",
        flush=True,
    )
    if not (agree_a and agree_b):
        raise SystemExit("the fast path and the per-mask loop disagree")


if __name__ == "__main__":
    main()
