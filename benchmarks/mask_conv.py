"""Channel masks on a convnet: ``ablation.mask_losses`` against a plain per-mask autograd loop.

    python benchmarks/mask_conv.py [--quick] [--threads T] [--chunk-mib C]

LeNet-5 (max pooling) on 1000 mnist5k training images, 1000 random 0/1 masks over its 226
units (6 + 16 conv channels, 120 + 84 features): the loss under every mask and its gradient
w.r.t. the mask. The baseline is what a user writes: per mask, the model's forward with the
mask multiplied in after each activation (forward hooks), cross-entropy, autograd. It is timed
on a subset of the masks and scaled linearly. Agreement is checked against the loop in float64
with the masks' zeros nudged to 1e-12: at an exact 0 behind a max pool the loss has a kink, and
the fast path returns the one-sided derivative of turning the channel up (see
``prunelab/engines/masks_conv.py``), which the nudge makes autograd compute too.

FLOPs counted are those of the plain computation per mask: the forward of every layer after
the first conv (which depends on no mask) and the backward to the first masked layer (input
gradients only), 2 FLOPs per multiply-add. The fast path does fewer: the second conv is folded
into one GEMM over masks (see ``prunelab/engines/masks_conv.py``), so its GFLOP/s counts the
work it avoids.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from _common import matmul_gflops, median_time, report
from torch import nn

from prunelab import ablation, data, models, ops


def loop(model, x, y, node_masks):
    """The plain baseline: per mask, hooks multiply each unit after its activation; autograd."""
    view = ops.parse(model)
    flat = [m for m in model.modules() if not isinstance(m, nn.Sequential)]
    sites = [flat[view.ops[k].position] for k in view.unit_ops]
    sizes = view.hidden_sizes
    losses, grads = [], []
    for m in node_masks:
        m = m.clone().requires_grad_(True)
        handles = [
            site.register_forward_hook(
                lambda _mod, _inp, out, b=b: out * b.view(-1, *[1] * (out.dim() - 2))
            )
            for site, b in zip(sites, m.split(sizes), strict=True)
        ]
        try:
            loss = F.cross_entropy(model(x), y)
        finally:
            for h in handles:
                h.remove()
        (grad,) = torch.autograd.grad(loss, m)
        losses.append(loss.detach())
        grads.append(grad)
    return torch.stack(losses), torch.stack(grads)


def flops_per_mask(N: int) -> float:
    """Plain forward after conv1 plus input-gradient backward, per mask, for 28x28 LeNet-5."""
    conv2 = 16 * 6 * 25 * 10 * 10
    dense = 400 * 120 + 120 * 84 + 84 * 10
    forward = conv2 + dense
    backward = conv2 + dense  # input gradients of the same layers
    return 2.0 * N * (forward + backward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 masks, fewer repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--chunk-mib", type=int, default=None, help="chunk_bytes in MiB (default: the library's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    M = 100 if args.quick else 1000
    repeats = 3 if args.quick else 5
    peak = matmul_gflops()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"matmul {peak:.1f} GFLOP/s (float32){', --quick' if args.quick else ''}",
        flush=True,
    )
    split = data.load("mnist5k", seed=0)
    x, y = split.train.x[:1000], split.train.y[:1000]
    N = x.shape[0]
    model = models.lenet5(seed=0).eval()
    g = torch.Generator().manual_seed(0)
    H = sum(ops.parse(model).hidden_sizes)
    node_masks = (torch.rand(M, H, generator=g) < 0.5).float()
    kw = {} if args.chunk_mib is None else {"chunk_bytes": args.chunk_mib * 2**20}

    def fast():
        return ablation.mask_losses(model, x, y, node_masks, **kw)

    n_loop = 20 if args.quick else 50
    sub = node_masks[:n_loop]
    loss, grad = (t[:n_loop] for t in fast())  # the timed path on all masks, checked on some
    # the reference: the loop in float64, zeros nudged to 1e-12 so that each max pool picks
    # the true maximum (at exactly 0 a zeroed channel's pooled values tie; see masks_conv.run)
    nudged = sub.double().clamp_min(1e-12)
    exact = loop(copy.deepcopy(model).double(), x.double(), y, nudged)

    def err(pair):
        return max((pair[0] - exact[0]).abs().max().item(), (pair[1] - exact[1]).abs().max().item())

    agree = err((loss, grad)) <= 1e-5
    print(
        f"on {n_loop} masks, max |difference| from the float64 loop: fast path (float32) "
        f"{err((loss, grad)):.1e} ({'agree' if agree else 'DISAGREE: FAIL'}); the float32 loop "
        f"at exact zeros {err(loop(model, x, y, sub)):.1e} (autograd's tie-break at a zeroed "
        "channel's max pool)",
        flush=True,
    )
    fast_s = median_time(fast, repeats=repeats)
    base_s = median_time(lambda: loop(model, x, y, node_masks[:n_loop]), repeats=3) * M / n_loop
    report(
        f"lenet5, {M} channel masks x {N} mnist5k images, loss and mask gradient "
        f"(baseline timed on {n_loop} masks, scaled x{M / n_loop:g})",
        fast_s,
        base_s,
        flops=M * flops_per_mask(N),
        peak=peak,
        target=4,
    )
    if not agree:
        raise SystemExit("the fast path and the per-mask loop disagree")


if __name__ == "__main__":
    main()
