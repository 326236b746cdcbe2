"""Relevance methods versus one autograd forward+backward pass, on LeNet-300-100 sizes.

Claim: ``relevance.explain`` with ``lrp_epsilon``, ``deeplift`` and ``blame_bias`` costs at most
twice one forward+backward pass (``logits[target].sum().backward()`` with the weights and the
input requiring grad: the autograd route to gradient x input) for 1,000 inputs of a
784-300-100-10 ReLU net. Each method is checked against a plain baseline first:

* ``lrp_epsilon`` with eps = 1e-12 against gradient x input from autograd (METHODS.md F2).
  (eps = 1e-9 already differs by ~3e-4 relative, in float64 too: some pre-activations here
  are as small as 4e-7, and the stabiliser is not negligible beside them);
* ``deeplift``: the input relevance sums to f_t(x) - f_t(baseline) (summation to delta);
* ``blame_bias``: input plus bias relevance sums to f_t(x) (conservation), and the bias
  relevance is b * df/db from autograd.

The speed-up column is baseline / explain, so the 2x budget is a target of >= 0.5x.

Run: ``python benchmarks/relevance.py [--n 1000] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import torch
import torch.nn.functional as F
from _common import matmul_gflops, median_time, report
from prunelab.relevance import explain

from prunelab import models

WIDTHS = (784, 300, 100, 10)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of inputs")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    model = models.mlp(WIDTHS, seed=0).to(device)  # float32, ReLU
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.n, WIDTHS[0], generator=g).to(device)  # pixel-like inputs in [0, 1)
    t = model(x).argmax(1)

    def forward_backward() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        xg = x.detach().requires_grad_(True)
        model(xg).gather(1, t[:, None]).sum().backward()
        _sync(device)
        return xg.grad

    # --- agreement with plain baselines (float32 tolerances) ---------------------------------
    gx = forward_backward()
    logits = model(x).detach()
    f_t = logits.gather(1, t[:, None])[:, 0]
    scale = f_t.abs().max().item()
    lrp = explain(model, x, method="lrp_epsilon", epsilon=1e-12)
    err_lrp = (lrp.input - x * gx).abs().max().item() / (x * gx).abs().max().item()
    dl = explain(model, x, method="deeplift", baseline="mean")
    delta = f_t - model(x.mean(0, keepdim=True)).detach()[0, t]
    err_dl = (dl.input.sum(1) - delta).abs().max().item() / scale
    bb = explain(model, x, method="blame_bias")
    err_bb = (bb.total - f_t).abs().max().item() / scale
    # b * df/db for the first layer, from autograd: df/db = d f / d z of layer 1
    xg = x.detach().requires_grad_(True)
    z1 = F.linear(xg, model[0].weight, model[0].bias)
    z1.retain_grad()
    model[1:](z1).gather(1, t[:, None]).sum().backward()
    b_dfdb = model[0].bias.detach() * z1.grad
    err_bias = (bb.bias[0] - b_dfdb).abs().max().item() / b_dfdb.abs().max().item()
    checks = {
        "lrp_epsilon(1e-12) vs autograd grad x input": err_lrp,
        "deeplift summation to delta": err_dl,
        "blame_bias conservation": err_bb,
        "blame_bias bias vs b df/db (layer 1)": err_bias,
    }
    for name, err in checks.items():
        status = "ok" if err < 1e-4 else "MISMATCH"
        print(f"check {name}: max relative error {err:.1e} ({status})", flush=True)
    if any(err >= 1e-4 for err in checks.values()):
        raise SystemExit("relevance benchmark: a check failed; timings not reported")

    # --- timings: baseline and method interleaved, so that load on a shared machine hits both
    peak = matmul_gflops()
    P = sum(a * b for a, b in itertools.pairwise(WIDTHS))
    print(
        f"relevance, {args.n} inputs of a {'-'.join(map(str, WIDTHS))} ReLU net on {device}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds of 3 calls",
        flush=True,
    )
    runs = {
        "lrp_epsilon": dict(method="lrp_epsilon"),
        "deeplift": dict(method="deeplift", baseline="mean"),
        "blame_bias": dict(method="blame_bias"),
    }
    for name, kw in runs.items():
        for grad in (True, False):

            def run(kw=kw, grad=grad) -> None:
                with torch.set_grad_enabled(grad):
                    explain(model, x, **kw)
                _sync(device)

            run()  # warm-up
            pairs = [
                (
                    median_time(forward_backward, repeats=3, warmup=0),
                    median_time(run, repeats=3, warmup=0),
                )
                for _ in range(args.rounds)
            ]
            base_s = statistics.median(p[0] for p in pairs)
            fast_s = statistics.median(p[1] for p in pairs)
            # forward and backward: two matmuls of [N, H_in] x [H_in, H_out] per layer
            label = f"{name} ({'grad on' if grad else 'no_grad'}) vs forward+backward"
            report(label, fast_s, base_s, flops=4 * args.n * P, peak=peak, target=0.5)


if __name__ == "__main__":
    main()
