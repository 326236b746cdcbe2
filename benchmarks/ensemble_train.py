"""fit_many against a loop of fit calls: 32 circle nets 2-20-2, 200 full-batch Adam steps.

    python benchmarks/ensemble_train.py [--quick]

Target: fit_many at least 8x faster than the loop, with weights equal to 1e-5. (Rounding
differs between the batched and per-model GEMMs; a model whose training point sits on a ReLU
kink can take a slightly different, equally valid path: see ensemble.fit_many. The line says how
many models agree.)
"""

from __future__ import annotations

import argparse
import itertools

import torch
from _common import matmul_gflops, median_time, report

from prunelab import data, ensemble, models, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    K, steps, repeats = args.models, args.steps, (1 if args.quick else 3)
    widths = (2, 20, 2)
    circle = data.load("circle", seed=0).train  # 1000 points
    seeds = list(range(K))
    kwargs = dict(epochs=steps, lr=0.01, batch_size=None, progress=False)

    def loop() -> list[torch.nn.Sequential]:
        nets = [models.mlp(widths, seed=s) for s in seeds]
        for net, s in zip(nets, seeds):
            train.fit(net, circle, seed=s, **kwargs)
        return nets

    def batched() -> list[torch.nn.Sequential]:
        nets = [models.mlp(widths, seed=s) for s in seeds]
        ensemble.fit_many(nets, circle, seeds=seeds, **kwargs)
        return nets

    errs = [
        max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
        for a, b in zip(loop(), batched())
    ]
    print(
        f"{K} nets {'-'.join(map(str, widths))}, {steps} full-batch Adam steps on "
        f"{len(circle)} points; max |weight difference| = {max(errs):.2e}, "
        f"{sum(e < 1e-5 for e in errs)}/{K} models agree to 1e-5"
    )
    fast = median_time(batched, repeats=repeats)
    base = median_time(loop, repeats=repeats)
    n_params = sum(a * b + b for a, b in itertools.pairwise(widths))
    flops = 3 * 2 * len(circle) * (n_params - sum(widths[1:])) * K * steps  # fwd + 2x bwd
    report("fit_many vs loop of fit", fast, base, flops=flops, peak=matmul_gflops(), target=8)


if __name__ == "__main__":
    main()
