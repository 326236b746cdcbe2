"""Accuracy-vs-sparsity curves of a 784-300-100-10 MLP at 99 levels: sweep engine vs prune loop.

Claim (issue 5, item 5): ``surgery.sparsity_sweep`` evaluates loss and accuracy at 99
sparsity levels (1%..99%) on 1000 test inputs at least 5x faster than the plain loop over
levels with ``torch.nn.utils.prune`` (copy the model, ``global_unstructured`` with
``L1Unstructured``, or ``l1_unstructured`` per layer, then evaluate), and gives the same
curves. The script trains the net briefly on ``mnist5k`` (so that the curves mean something),
times both paths in one process, interleaved, checks that they agree (loss to float
rounding; accuracy identical but for exact ties), and prints the ratio and the achieved
GFLOP/s beside the machine's measured matmul throughput.

FLOP counts: the loop does one dense forward per level, ``2 N sum_l H_l H_{l-1}``. The sweep
does one dense first layer, a sparse update of ``2 N`` per first-layer weight pruned
by the last level, and the layers above densely per level; its GFLOP/s are given on both its
own count and the loop's (dense-equivalent) count.

Run: ``python benchmarks/sparsity_sweep.py [--n 1000] [--epochs 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time

import torch
import torch.nn.functional as F
from _common import matmul_gflops, report
from torch.nn.utils import prune

from prunelab import data, models, surgery, train

WIDTHS = [784, 300, 100, 10]
LEVELS = [i / 100 for i in range(1, 100)]


def prune_loop(model: torch.nn.Module, x, y, scope: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain baseline: per level, copy, prune with torch.nn.utils.prune, evaluate."""
    loss, acc = [], []
    for level in LEVELS:
        pruned = copy.deepcopy(model)
        linears = [(m, "weight") for m in pruned if isinstance(m, torch.nn.Linear)]
        if scope == "global":
            prune.global_unstructured(linears, pruning_method=prune.L1Unstructured, amount=level)
        else:
            for module, name in linears:
                prune.l1_unstructured(module, name, amount=level)
        with torch.no_grad():
            f = pruned(x)
        loss.append(F.cross_entropy(f, y).item())
        acc.append((f.argmax(1) == y).double().mean().item())
    return torch.tensor(loss, dtype=torch.float64), torch.tensor(acc, dtype=torch.float64)


def dense_flops(N: int) -> float:
    return 2 * N * sum(a * b for a, b in itertools.pairwise(WIDTHS)) * len(LEVELS)


def sweep_flops(N: int, first_pruned: int) -> float:
    """First layer once (dense) + sparse updates + the upper layers at every level."""
    first = WIDTHS[0] * WIDTHS[1]
    upper = sum(a * b for a, b in itertools.pairwise(WIDTHS[1:]))
    return 2 * N * first + 2 * N * first_pruned + 2 * N * upper * len(LEVELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="test inputs")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs on mnist5k")
    parser.add_argument("--repeats", type=int, default=3, help="timed pairs (median)")
    args = parser.parse_args()
    split = data.load("mnist5k", seed=0)
    model = models.mlp(WIDTHS, seed=0)
    train.fit(model, split.train, epochs=args.epochs, lr=1e-3, batch_size=64, progress=False)
    test = split.test[: args.n]
    x, y = test.x.flatten(1).float(), test.y
    N = len(y)
    scores = {n: p.detach().abs() for n, p in model.named_parameters()}
    print(
        f"MLP {WIDTHS} ReLU trained {args.epochs} epochs on mnist5k "
        f"(test accuracy {train.evaluate(model, test)['accuracy']:.3f}); {len(LEVELS)} levels "
        f"1%..99%, N={N}, threads {torch.get_num_threads()}",
        flush=True,
    )
    peak = matmul_gflops()
    for scope in ("global", "layer"):
        fast_times, base_times = [], []
        for _ in range(args.repeats):  # interleaved, so load from other processes hits both
            t0 = time.perf_counter()
            sweep = surgery.sparsity_sweep(model, scores, LEVELS, x, y, scope=scope)
            fast_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            loss, acc = prune_loop(model, x, y, scope)
            base_times.append(time.perf_counter() - t0)
        fast, base = statistics.median(fast_times), statistics.median(base_times)
        first_pruned = int(
            (surgery.prune_weights(model, scores, LEVELS[-1], scope=scope)["0.weight"] == 0).sum()
        )
        own = sweep_flops(N, first_pruned)
        report(
            f"sparsity_sweep ({scope}) vs torch.nn.utils.prune loop",
            fast,
            base,
            flops=own,
            peak=peak,
            target=5,
        )
        print(
            f"  dense-equivalent {dense_flops(N) / fast / 1e9:.1f} GFLOP/s "
            f"({dense_flops(N) / 1e9:.1f} GFLOP, what the loop computes; the sweep's own "
            f"count {own / 1e9:.2f} GFLOP); loop {dense_flops(N) / base / 1e9:.1f} GFLOP/s",
            flush=True,
        )
        loss_err = (sweep.loss - loss).abs().max().item()
        acc_diff = (sweep.accuracy - acc).abs()
        agree = loss_err < 1e-4 and acc_diff.max().item() <= 1 / N
        print(
            f"  agreement: max |loss difference| {loss_err:.2e}, max |accuracy difference| "
            f"{acc_diff.max().item():.4f} ({int((acc_diff > 0).sum())} of {len(LEVELS)} "
            f"levels differ) -> {'PASS' if agree else 'FAIL'}; accuracy at 50/90/99%: "
            f"{sweep.accuracy[49]:.3f} / {sweep.accuracy[89]:.3f} / {sweep.accuracy[98]:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
