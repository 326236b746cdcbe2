"""Accuracy-vs-sparsity curve of LeNet-5 at 99 levels: the op-view sweep vs a prune loop.

Claim (issue 14, item 3): ``surgery.sparsity_sweep`` evaluates loss and accuracy of
``models.lenet5()`` at 99 levels (1%..99%) of global magnitude pruning on 1000 test images at
least 5x faster than the plain loop over levels with ``torch.nn.utils.prune`` (copy the model,
``global_unstructured`` with ``L1Unstructured`` over every Conv2d and Linear weight, evaluate),
and gives the same curve (0 of 99 levels differing in accuracy). The script trains the net
briefly on ``mnist5k`` (so that the curve means something), times both paths in one process,
interleaved, checks that they agree, and prints the medians, the ratio, and the achieved
GFLOP/s beside the machine's measured matmul throughput.

FLOP counts: the loop runs one dense forward per level, ``2 N sum_l P_l Q_l`` (``P_l`` weights
of layer l, ``Q_l`` its output positions; 1 for a Linear). The sweep runs a layer densely only
where its input changed too much since the previous level, otherwise adds its input's change
through the changed units and subtracts the newly pruned entries (``2 N Q_l`` each); its own
count is tallied from that work as it runs, and its GFLOP/s are given on both its own and the
loop's (dense-equivalent) count. Much of the loop's time is not FLOPs: PyTorch's CPU max pool
and the copy and re-parametrisation per level.

Threads: ``--threads 1`` times both paths single-threaded, the steadier comparison on a
shared machine (two OpenMP threads wait for each other whenever another process holds a core,
which costs the sweep's many small operations more than the loop's few large ones).

Run: ``python benchmarks/sparsity_sweep_conv.py [--n 1000] [--epochs 1] [--repeats 5]
[--threads 0]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from _common import matmul_gflops, report
from torch import nn
from torch.nn.utils import prune

from prunelab import data, models, ops, surgery, train

LEVELS = [i / 100 for i in range(1, 100)]


def prune_loop(model: nn.Module, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain baseline: per level, copy, prune every Conv2d and Linear weight globally, evaluate."""
    loss, acc = [], []
    for level in LEVELS:
        pruned = copy.deepcopy(model)
        layers = [(m, "weight") for m in pruned.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=level)
        with torch.no_grad():
            f = pruned(x)
        loss.append(F.cross_entropy(f, y).item())
        acc.append((f.argmax(1) == y).double().mean().item())
    return torch.tensor(loss, dtype=torch.float64), torch.tensor(acc, dtype=torch.float64)


def sweep_flops(model: nn.Module, scores, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """The loop's dense count and the sweep's own, tallied from the layer work the sweep does
    (every dense layer run, every input-change update, every pruned entry's window)."""
    own = [0.0]
    dense = [0.0]
    apply, add_sparse, response = ops.Affine.apply, ops.Affine.add_sparse, ops.Affine.response

    def per_sample(op: ops.Affine, out: torch.Tensor) -> int:
        return out[0, 0].numel() * len(out)  # output positions times samples

    def counted_apply(op, a, params=None, training=None):
        out = apply(op, a, params, training)
        own[0] += 2 * op.weight.numel() * per_sample(op, out)
        return out

    def counted_sparse(op, a, entries, values, out):
        own[0] += 2 * len(entries) * per_sample(op, out)
        return add_sparse(op, a, entries, values, out)

    def counted_response(op, u, params=None):
        out = response(op, u, params)
        W = op.raw(params)[0]
        own[0] += 2 * W.numel() * per_sample(op, out)
        return out

    ops.Affine.apply, ops.Affine.add_sparse = counted_apply, counted_sparse
    ops.Affine.response = counted_response
    try:
        surgery.sparsity_sweep(model, scores, LEVELS, x, y)
        view = ops.parse(model)
        own_total, own[0] = own[0], 0.0
        with torch.no_grad():
            ops.forward(view, x, training=False)  # one dense forward: the loop's per level
        dense[0] = own[0] * len(LEVELS)
    finally:
        ops.Affine.apply, ops.Affine.add_sparse, ops.Affine.response = apply, add_sparse, response
    return dense[0], own_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="test images")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs on mnist5k")
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    split = data.load("mnist5k", seed=0)
    model = models.lenet5(seed=0)
    train.fit(model, split.train, epochs=args.epochs, lr=1e-3, batch_size=64, progress=False)
    model.eval()
    test = split.test[: args.n]
    x, y = test.x.float(), test.y
    N = len(y)
    scores = {n: p.detach().abs() for n, p in model.named_parameters()}
    print(
        f"LeNet-5 trained {args.epochs} epoch(s) on mnist5k (test accuracy "
        f"{train.evaluate(model, test)['accuracy']:.3f}); {len(LEVELS)} levels 1%..99% of "
        f"global magnitude pruning, N={N}, threads {torch.get_num_threads()}",
        flush=True,
    )
    peak = matmul_gflops()
    fast_times, base_times = [], []
    for _ in range(args.repeats):  # interleaved, so load from other processes hits both
        t0 = time.perf_counter()
        sweep = surgery.sparsity_sweep(model, scores, LEVELS, x, y)
        fast_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loss, acc = prune_loop(model, x, y)
        base_times.append(time.perf_counter() - t0)
    fast, base = statistics.median(fast_times), statistics.median(base_times)
    dense, own = sweep_flops(model, scores, x, y)
    report(
        "sparsity_sweep (LeNet-5, global) vs torch.nn.utils.prune loop",
        fast,
        base,
        flops=own,
        peak=peak,
        target=5,
    )
    print(
        f"  dense-equivalent {dense / fast / 1e9:.1f} GFLOP/s ({dense / 1e9:.1f} GFLOP, what the "
        f"loop computes; the sweep's own count {own / 1e9:.2f} GFLOP); loop "
        f"{dense / base / 1e9:.1f} GFLOP/s; all times (s): sweep "
        f"{', '.join(f'{t:.3f}' for t in fast_times)}, loop {', '.join(f'{t:.3f}' for t in base_times)}",
        flush=True,
    )
    print(
        f"  best of {args.repeats} (the least disturbed by other processes): sweep "
        f"{min(fast_times):.3f} s, loop {min(base_times):.3f} s, speed-up "
        f"{min(base_times) / min(fast_times):.1f}x",
        flush=True,
    )
    loss_err = (sweep.loss - loss).abs().max().item()
    acc_diff = (sweep.accuracy - acc).abs()
    differ = int((acc_diff > 0).sum())
    agree = loss_err < 1e-4 and differ == 0
    print(
        f"  agreement: max |loss difference| {loss_err:.2e}, max |accuracy difference| "
        f"{acc_diff.max().item():.4f} ({differ} of {len(LEVELS)} levels differ) -> "
        f"{'PASS' if agree else 'FAIL'}; accuracy at 50/90/99%: "
        f"{sweep.accuracy[49]:.3f} / {sweep.accuracy[89]:.3f} / {sweep.accuracy[98]:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
