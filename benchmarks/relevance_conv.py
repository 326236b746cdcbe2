"""Relevance methods versus one autograd forward+backward pass, on LeNet-5 with MNIST images.

Claim: ``relevance.explain`` costs at most twice one forward+backward pass
(``logits[target].sum().backward()`` with the weights and the input requiring grad: the
autograd route to gradient x input) for every method, on ``models.lenet5()`` (conv 6@5x5, ReLU,
max pool 2, conv 16@5x5, ReLU, max pool 2, 120, 84, 10) with the 1,000 test images of
``data.load("mnist5k", seed=0)``. Each method is checked first against a plain baseline where
the two coincide (METHODS.md F2):

* ``gradient`` against autograd's input gradient, ``gradient_x_input`` and ``lrp_0`` against
  x times it (ReLU, max pools under the winner-takes-all rule: LRP-0 is gradient x input,
  biases included);
* ``lrp_epsilon`` with eps = 1e-12 against the same;
* ``deconvnet`` and ``guided_backprop`` against autograd through a ReLU with their backward;
* ``blame_bias``: input plus bias relevance sums to f_t(x) (conservation), and the first
  conv's bias map summed over positions is b * df/db from autograd;
* ``deeplift``: the input relevance sums to f_t(x) - f_t(baseline) (summation to delta);
* ``lrp_0`` with the radial maximum rule: conservation.

The speed-up column is baseline / explain, so the 2x budget is a target of >= 0.5x. GFLOP/s
counts a forward and one transposed pass of every Linear and Conv2d (2 x 2 x MACs).

Run: ``python benchmarks/relevance_conv.py [--n 1000] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import matmul_gflops, median_time, report
from prunelab.relevance import explain
from torch import nn

from prunelab import data, models


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _macs(model: nn.Sequential, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass over ``x`` (Linear and Conv2d)."""
    total, h = 0, x
    for m in model:
        out = m(h)
        if isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += out.shape[0] * m.in_features * m.out_features
        h = out
    return total


class _Deconv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp_min(0)


class _Guided(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * (z > 0) * (g > 0)


def _manual(model: nn.Sequential, x: torch.Tensor, t: torch.Tensor, relu) -> torch.Tensor:
    """d f_t / d x through ``relu`` in place of every ReLU (plain autograd otherwise)."""
    xg = x.detach().requires_grad_(True)
    h = xg
    for m in model:
        h = relu.apply(h) if isinstance(m, nn.ReLU) else m(h)
    return torch.autograd.grad(h.gather(1, t[:, None]).sum(), xg)[0]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() / b.abs().max().item()


def checks(model: nn.Sequential, x: torch.Tensor, t: torch.Tensor, gx: torch.Tensor) -> dict:
    """Max relative error of every method against its plain baseline."""
    f_t = model(x).detach().gather(1, t[:, None])[:, 0]
    scale = f_t.abs().max().item()
    out = {
        "gradient vs autograd": _rel(explain(model, x, method="gradient").input, gx),
        "gradient_x_input vs x * autograd": _rel(
            explain(model, x, method="gradient_x_input").input, x * gx
        ),
        "lrp_0 vs x * autograd": _rel(explain(model, x, method="lrp_0").input, x * gx),
        "lrp_epsilon(1e-12) vs x * autograd": _rel(
            explain(model, x, method="lrp_epsilon", epsilon=1e-12).input, x * gx
        ),
        "deconvnet vs autograd (deconv ReLU)": _rel(
            explain(model, x, method="deconvnet").input, _manual(model, x, t, _Deconv)
        ),
        "guided_backprop vs autograd (guided ReLU)": _rel(
            explain(model, x, method="guided_backprop").input, _manual(model, x, t, _Guided)
        ),
    }
    bb = explain(model, x, method="blame_bias")
    out["blame_bias conservation"] = (bb.total - f_t).abs().max().item() / scale
    conv = model[0]
    per_sample = []
    for n in range(8):  # b df/db of the first conv, sample by sample
        model.zero_grad(set_to_none=True)
        model(x[n : n + 1])[0, t[n]].backward()
        per_sample.append(conv.bias.detach() * conv.bias.grad)
    out["blame_bias conv-1 bias vs b df/db (8 samples)"] = _rel(
        bb.bias[0][:8].sum((2, 3)), torch.stack(per_sample)
    )
    model.zero_grad(set_to_none=True)
    dl = explain(model, x, method="deeplift", baseline="mean")
    delta = f_t - model(x.mean(0, keepdim=True)).detach()[0, t]
    out["deeplift summation to delta"] = (
        dl.input.sum((1, 2, 3)) - delta
    ).abs().max().item() / scale
    radial = explain(model, x, method="lrp_0", rules={"maximum": "radial"})
    out["lrp_0 radial max conservation"] = (radial.total - f_t).abs().max().item() / scale
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of images")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    model = models.lenet5(seed=0).to(device).eval()  # float32, ReLU, max pools
    x = data.load("mnist5k", seed=0).test.x[: args.n].to(device)  # [N, 1, 28, 28] in [0, 1]
    t = model(x).argmax(1)

    def forward_backward() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        xg = x.detach().requires_grad_(True)
        model(xg).gather(1, t[:, None]).sum().backward()
        _sync(device)
        return xg.grad

    # --- agreement with plain baselines (float32 tolerances) ---------------------------------
    gx = forward_backward()
    found = checks(model, x, t, gx)
    for name, err in found.items():
        status = "ok" if err < 1e-4 else "MISMATCH"
        print(f"check {name}: max relative error {err:.1e} ({status})", flush=True)
    if any(err >= 1e-4 for err in found.values()):
        raise SystemExit("relevance_conv benchmark: a check failed; timings not reported")

    # --- timings: baseline and method interleaved, so that load on a shared machine hits both
    peak = matmul_gflops()
    flops = 4 * _macs(model, x[:1]) * args.n
    print(
        f"relevance, {args.n} MNIST images through LeNet-5 on {device}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds of 3 calls",
        flush=True,
    )
    runs = {
        "gradient": dict(method="gradient"),
        "gradient_x_input": dict(method="gradient_x_input"),
        "deconvnet": dict(method="deconvnet"),
        "guided_backprop": dict(method="guided_backprop"),
        "lrp_0": dict(method="lrp_0"),
        "lrp_0 radial max": dict(method="lrp_0", rules={"maximum": "radial"}),
        "lrp_epsilon": dict(method="lrp_epsilon"),
        "blame_bias": dict(method="blame_bias"),
        "deeplift": dict(method="deeplift", baseline="mean"),
    }
    for name, kw in runs.items():

        def run(kw=kw) -> None:
            with torch.no_grad():
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
        report(f"{name} vs forward+backward", fast_s, base_s, flops=flops, peak=peak, target=0.5)


if __name__ == "__main__":
    main()
