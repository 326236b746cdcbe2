"""Cost of every node criterion on LeNet-5 (channels as units), and agreement checks.

The convnet path of the criteria (a unit is a Conv2d channel: 6 + 16 channels and 120 + 84
features). The script times every criterion in ``criteria.NODE_CRITERIA`` beside one
forward+backward pass (loss and parameter gradients, autograd), then checks

* ``obd_mask`` against a plain baseline: ``d^2 L / dm_j^2`` by double backward through unit
  gates, one unit at a time, on a subset of units (ReLU/max-pool and tanh/avg-pool nets,
  float64), whose per-unit time is extrapolated to all units for the speed-up;
* ``lipschitz``'s operator norms by Lanczos against exact dense SVDs (``opnorms.MAX_DENSE``
  forced to 0 and back).

No speed target: the convnet path is op-generic (the ops' own VJPs; forward tangents per
channel below a curved activation), not tuned like the MLP recursion of ``node_scores.py``.

Run: ``python benchmarks/channel_scores.py [--device cuda] [--n 256] [--subset 12]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from _common import median_time, report

from prunelab import bounds, criteria, models, ops
from prunelab.engines import opnorms


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autograd_obd(model, x, y, units):
    """Plain baseline: d^2 L / dm_j^2 by double backward through gates, one unit at a time."""
    view = ops.parse(model)
    gates = [
        torch.ones(H, dtype=x.dtype, device=x.device, requires_grad=True) for H in view.hidden_sizes
    ]
    logits = ops.forward(view, x, scales=dict(enumerate(gates)), training=False)
    first = torch.autograd.grad(F.cross_entropy(logits, y), gates, create_graph=True)
    out = {}
    for ell, j in units:
        (second,) = torch.autograd.grad(first[ell][j], gates[ell], retain_graph=True)
        out[ell, j] = second[j]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=256, help="samples")
    parser.add_argument("--subset", type=int, default=12, help="units for the autograd baseline")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device, N = args.device, args.n
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (N,), generator=g).to(device)
    model = models.lenet5(seed=0).to(device).eval()
    sizes = ops.parse(model).hidden_sizes
    params = list(model.parameters())
    print(f"device {device}, threads {torch.get_num_threads()}, LeNet-5 {sizes} ReLU max, N={N}")

    def forward_backward():
        torch.autograd.grad(F.cross_entropy(model(x), y), params)
        sync(device)

    t_fb = median_time(forward_backward, repeats=args.repeats)
    print(f"one forward+backward: {t_fb * 1e3:.2f} ms")
    times = {}
    for name in criteria.NODE_CRITERIA:

        def run(name=name):
            criteria.node_scores(name, model, x, y)
            sync(device)

        pairs = [
            (median_time(forward_backward, repeats=1, warmup=0), median_time(run, repeats=1))
            for _ in range(args.repeats)
        ]
        times[name] = statistics.median(t for _, t in pairs)
        ratio = statistics.median(t / fb for fb, t in pairs)
        print(f"  {name:24s} {times[name] * 1e3:9.2f} ms = {ratio:6.2f} x forward+backward")

    gen = torch.Generator().manual_seed(1)
    units = [(ell, int(torch.randint(H, (1,), generator=gen))) for ell, H in enumerate(sizes)]
    units = (units * args.subset)[: args.subset]
    for activation, pool in (("relu", "max"), ("tanh", "avg")):
        m64 = models.lenet5(pool=pool, activation=activation, seed=0, dtype=torch.float64)
        m64 = m64.to(device).eval()
        x64 = x[:64].double()
        fast = criteria.node_scores("obd_mask", m64, x64, y[:64])
        slow = autograd_obd(m64, x64, y[:64], units)
        err = max(
            abs(fast[ell][j].item() - v.item()) / fast[ell].abs().max().item()
            for (ell, j), v in slow.items()
        )
        print(
            f"obd_mask vs autograd d2L/dm_j^2 on {len(units)} units ({activation}/{pool}, float64): max rel error {err:.1e}"
        )

    def baseline():
        autograd_obd(model, x, y, units)
        sync(device)

    t_base = median_time(baseline, repeats=3) * sum(sizes) / len(units)
    report(
        f"obd_mask ({sum(sizes)} units) vs double backward per unit (extrapolated)",
        times["obd_mask"],
        t_base,
    )

    dense = bounds.node_bounds(model, x[:1])
    saved = opnorms.MAX_DENSE
    opnorms.MAX_DENSE = 0  # every link by Lanczos
    try:
        t_lanczos = median_time(lambda: bounds.node_bounds(model, x[:1]), repeats=3)
        lanczos = bounds.node_bounds(model, x[:1])
    finally:
        opnorms.MAX_DENSE = saved
    t_dense = median_time(lambda: bounds.node_bounds(model, x[:1]), repeats=3)
    err = max(((b / a) - 1).abs().max().item() for a, b in zip(dense, lanczos))
    print(
        f"lipschitz constants, Lanczos vs dense SVD: max rel difference {err:.1e} "
        f"(Lanczos {t_lanczos * 1e3:.0f} ms, dense where small {t_dense * 1e3:.0f} ms)"
    )


if __name__ == "__main__":
    main()
