"""Cost of every node criterion on a 784-300-100-10 MLP and 1000 inputs, and agreement checks.

Claim (issue item 6): ``obd_mask`` and ``taylor`` score all 400 hidden nodes for at most a few
forward+backward passes. The script times every criterion in ``criteria.NODE_CRITERIA``
beside one forward+backward pass (loss and parameter gradients, autograd), then checks

* ``taylor`` against autograd on explicit gates (and against ``ablation.mask_losses``' mask
  gradient, when that module is available);
* ``obd_mask`` against a plain baseline: double backward, one autograd second derivative
  ``d^2 L / dm_j^2`` per node, on a subset of nodes (ReLU and tanh nets, float64), whose
  per-node time is extrapolated to all 400 nodes for the speed-up.

Run: ``python benchmarks/node_scores.py [--device cuda] [--n 1000] [--subset 16]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import torch
import torch.nn.functional as F
from _common import matmul_gflops, median_time, report

from prunelab import criteria, models

WIDTHS = [784, 300, 100, 10]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gated_loss(model, x, y, gates):
    """Mean CE with ``gates[l]`` multiplied in after hidden layer l (the model's own modules)."""
    ends = [layer.end for layer in models.parse(model).hidden]
    a = x
    for i, module in enumerate(model):
        a = module(a)
        if i in ends:
            a = a * gates[ends.index(i)]
    return F.cross_entropy(a, y)


def autograd_obd(model, x, y, nodes):
    """Plain baseline: d^2 L / dm_j^2 by double backward, one node at a time: {(l, j): value}."""
    gates = [
        torch.ones(H, dtype=x.dtype, device=x.device, requires_grad=True) for H in WIDTHS[1:-1]
    ]
    first = torch.autograd.grad(gated_loss(model, x, y, gates), gates, create_graph=True)
    out = {}
    for ell, j in nodes:
        (second,) = torch.autograd.grad(first[ell][j], gates[ell], retain_graph=True)
        out[ell, j] = second[j]
    return out


def obd_flops(N: int) -> float:
    """GEMM FLOPs of obd_mask on a ReLU MLP: the forward pass and the C-column factor
    propagation above the first hidden layer (elementwise work and reductions not counted)."""
    pairs = list(itertools.pairwise(WIDTHS))
    forward = sum(2 * N * a * b for a, b in pairs)
    factor = sum(2 * N * WIDTHS[-1] * a * b for a, b in pairs[1:])
    return forward + factor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=1000, help="samples")
    parser.add_argument("--subset", type=int, default=16, help="nodes for the autograd baseline")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    device, N = args.device, args.n
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, WIDTHS[0], generator=g).to(device)
    y = torch.randint(0, WIDTHS[-1], (N,), generator=g).to(device)
    model = models.mlp(WIDTHS, seed=0).to(device)
    params = list(model.parameters())
    print(f"device {device}, threads {torch.get_num_threads()}, MLP {WIDTHS} ReLU, N={N}")

    def forward_backward():
        torch.autograd.grad(F.cross_entropy(model(x), y), params)
        sync(device)

    t_fb = median_time(forward_backward, repeats=args.repeats)
    print(f"one forward+backward: {t_fb * 1e3:.2f} ms")
    times, ratios = {}, {}
    for name in criteria.NODE_CRITERIA:

        def run(name=name):
            criteria.node_scores(name, model, x, y)
            sync(device)

        # interleave with forward+backward so that machine load hits both alike
        pairs = [
            (median_time(forward_backward, repeats=1, warmup=0), median_time(run, repeats=1))
            for _ in range(args.repeats)
        ]
        times[name] = statistics.median(t for _, t in pairs)
        ratios[name] = statistics.median(t / fb for fb, t in pairs)
        print(f"  {name:24s} {times[name] * 1e3:8.2f} ms = {ratios[name]:5.2f} x forward+backward")

    # taylor against autograd on explicit gates (one forward+backward of the gated model)
    gates = [torch.ones(H, device=device, requires_grad=True) for H in WIDTHS[1:-1]]

    def gate_autograd():
        out = torch.autograd.grad(gated_loss(model, x, y, gates), gates)
        sync(device)
        return out

    def taylor_run():
        criteria.node_scores("taylor", model, x, y)
        sync(device)

    pairs = [
        (median_time(gate_autograd, repeats=1), median_time(taylor_run, repeats=1))
        for _ in range(args.repeats)
    ]
    t_gate = statistics.median(b for b, _ in pairs)
    t_taylor = statistics.median(f for _, f in pairs)
    grads = gate_autograd()
    taylor = criteria.node_scores("taylor", model, x, y)
    err = max(
        ((t - gr.square()).abs().max() / gr.square().max()).item() for t, gr in zip(taylor, grads)
    )
    print(f"taylor vs autograd gate gradient squared (float32): max rel error {err:.1e}")
    report("taylor (400 nodes) vs autograd gate", t_taylor, t_gate)
    try:
        from prunelab import ablation

        _, mask_grad = ablation.mask_losses(
            model, x, y, torch.ones(1, sum(WIDTHS[1:-1]), device=device)
        )
        flat = torch.cat(taylor)
        err = ((flat - mask_grad[0].square()).abs().max() / flat.max()).item()
        print(f"taylor vs ablation.mask_losses grad^2: max rel error {err:.1e}")
    except ImportError:
        print("ablation.mask_losses not available: cross-check skipped")

    # obd_mask against double backward per node, float64 for agreement
    gen = torch.Generator().manual_seed(1)
    nodes = [(0, int(j)) for j in torch.randperm(300, generator=gen)[: args.subset // 2]] + [
        (1, int(j)) for j in torch.randperm(100, generator=gen)[: args.subset - args.subset // 2]
    ]
    for activation in ("relu", "tanh"):
        m64 = models.mlp(WIDTHS, activation=activation, seed=0, dtype=torch.float64).to(device)
        x64 = x.double()
        fast = criteria.node_scores("obd_mask", m64, x64, y)
        slow = autograd_obd(m64, x64, y, nodes)
        err = max(
            abs(fast[ell][j].item() - v.item()) / fast[ell].abs().max().item()
            for (ell, j), v in slow.items()
        )
        print(
            f"obd_mask vs autograd d2L/dm_j^2 on {len(nodes)} nodes ({activation}, float64): max rel error {err:.1e}"
        )

    def baseline():
        autograd_obd(model, x, y, nodes)
        sync(device)

    t_base = median_time(baseline, repeats=3) * 400 / len(nodes)  # extrapolated to all nodes
    peak = matmul_gflops() if device == "cpu" else None
    report(
        "obd_mask (400 nodes) vs double backward per node (extrapolated)",
        times["obd_mask"],
        t_base,
        flops=obd_flops(N),
        peak=peak,
    )
    verdict = {name: "PASS" if ratios[name] <= 3 else "FAIL" for name in ("taylor", "obd_mask")}
    print(
        f"target (median of interleaved ratios): taylor and obd_mask <= 3 x forward+backward: "
        f"taylor {ratios['taylor']:.2f}x {verdict['taylor']}, "
        f"obd_mask {ratios['obd_mask']:.2f}x {verdict['obd_mask']}"
    )


if __name__ == "__main__":
    main()
