"""Physical channel removal: ``surgery.remove_nodes`` against Torch-Pruning, LeNet-5 and an MLP.

Claim (issue 13, item 2): removing 50% of the units of every hidden layer (conv filters and
Linear features with the smallest L2 norm of their incoming weights, Li et al. 2017's filter
criterion with the L2 norm) with ``remove_nodes(..., compensate="none")`` is no slower than
Torch-Pruning (Fang et al. 2023, ``DependencyGraph`` + ``prune_conv_out_channels`` /
``prune_linear_out_channels``) doing the same removal, on LeNet-5 and on a 784-300-100-10
MLP. Both must give a model with the same shapes and the same outputs (checked first).

``remove_nodes`` returns a new model and leaves its input alone, while Torch-Pruning prunes in
place; the fair baseline therefore times ``copy.deepcopy`` + build the dependency graph +
prune (``tp``). The pruning alone on a copy made beforehand (``tp, prune only``) is printed
too. Mean compensation (``compensate="mean"``, 1000 inputs; Torch-Pruning has none) is timed
for reference. Removal copies and slices weights, so FLOP rates mean nothing here; the script
prints no GFLOP/s.

With ``--epochs`` > 0 (default 3) it also trains LeNet-5 on ``mnist5k`` (Adam, lr 0.002,
batch 64) and prints the test accuracy before and after the 50% removal, with and without
mean compensation.

Torch-Pruning is a benchmark-only dependency, not one of prunelab's. Install it without its
dependencies, so that it neither replaces torch nor pulls torchvision:

    pip install --no-deps torch-pruning

Run: ``python benchmarks/channel_removal.py [--threads 1] [--rounds 9] [--epochs 3]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys

import torch
from _common import median_time, report
from torch import nn

from prunelab import data, models, ops, surgery, train

try:
    import torch_pruning as tp
except ImportError:  # a benchmark-only dependency
    tp = None

INSTALL = "pip install --no-deps torch-pruning  (--no-deps keeps your torch, skips torchvision)"


def smallest_norm_plan(model: nn.Sequential, fraction: float = 0.5) -> dict[int, list[int]]:
    """Per hidden layer, the ``floor(fraction H)`` units whose incoming weights (a conv's
    filter, a Linear's row) have the smallest L2 norm."""
    plan = {}
    for ell, layer in enumerate(ops.parse(model).hidden):
        norms = layer.weight.detach().flatten(1).norm(dim=1)  # [H]
        k = int(fraction * len(norms))
        plan[ell] = sorted(norms.argsort()[:k].tolist())
    return plan


def tp_prune(model: nn.Sequential, plan: dict[int, list[int]], example: torch.Tensor) -> None:
    """Torch-Pruning, in place: one dependency graph, one pruning group per hidden layer."""
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    layers = [layer.module for layer in ops.parse(model).hidden]
    for ell, idxs in plan.items():
        module = layers[ell]
        fn = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else None
        fn = fn or tp.prune_linear_out_channels
        graph.get_pruning_group(module, fn, idxs=idxs).prune()


def tp_remove(model: nn.Sequential, plan: dict[int, list[int]], example: torch.Tensor):
    """The same contract as ``remove_nodes``: a pruned copy, the model left alone."""
    copied = copy.deepcopy(model)
    tp_prune(copied, plan, example)
    return copied


def forward(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def check(name: str, model: nn.Sequential, plan: dict, x: torch.Tensor) -> None:
    """Both removals give the same shapes and outputs; stop the benchmark if not."""
    ours = surgery.remove_nodes(model, plan, compensate="none")
    theirs = tp_remove(model, plan, x[:1])
    shapes = [tuple(p.shape) for p in ours.parameters()]
    same_shapes = shapes == [tuple(p.shape) for p in theirs.parameters()]
    with torch.no_grad():
        gap = (ours(x) - theirs(x)).abs().max().item()
    status = "ok" if same_shapes and gap <= 1e-6 else "MISMATCH"
    print(f"check {name}: same shapes {same_shapes}, max |output difference| {gap:.1e} ({status})")
    if status != "ok":
        raise SystemExit("channel_removal benchmark: a check failed; timings not reported")


def time_one(name: str, model: nn.Sequential, x: torch.Tensor, rounds: int) -> None:
    """Median times, interleaved so that load on a shared machine hits every path alike."""
    plan = smallest_norm_plan(model)
    check(name, model, plan, x[:64])
    example = x[:1]
    spares: list[nn.Sequential] = []

    def prune_only() -> None:
        tp_prune(spares.pop(), plan, example)

    runs = {
        "remove_nodes": lambda: surgery.remove_nodes(model, plan, compensate="none"),
        "tp": lambda: tp_remove(model, plan, example),
        "tp, prune only": prune_only,
        "remove_nodes, mean": lambda: surgery.remove_nodes(model, plan, x=x),
        "forward": lambda: forward(model, x),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():  # warm-up
        spares.append(copy.deepcopy(model))
        run()
    for _ in range(rounds):
        for key, run in runs.items():
            if key == "tp, prune only":  # fresh copies, made outside the timing
                spares[:] = [copy.deepcopy(model) for _ in range(3)]
            times[key].append(median_time(run, repeats=3, warmup=0))
    med = {k: statistics.median(v) for k, v in times.items()}
    removed = sum(map(len, plan.values()))
    print(f"{name}: remove {removed} of {sum(ops.parse(model).hidden_sizes)} hidden units")
    report(
        f"{name}, remove_nodes vs tp (copy + graph + prune)",
        med["remove_nodes"],
        med["tp"],
        target=1.0,
    )
    report(f"{name}, remove_nodes vs tp prune only", med["remove_nodes"], med["tp, prune only"])
    print(
        f"{name}: remove_nodes with mean compensation over {len(x)} inputs "
        f"{med['remove_nodes, mean'] * 1e3:.2f} ms (one forward pass over them: "
        f"{med['forward'] * 1e3:.2f} ms)",
        flush=True,
    )


def accuracy(epochs: int) -> None:
    """Test accuracy of a trained LeNet-5 before and after removing 50% of every layer."""
    split = data.load("mnist5k", seed=0)
    model = models.lenet5(seed=0)
    train.fit(model, split.train, epochs=epochs, lr=0.002, batch_size=64, seed=0, progress=False)
    model.eval()
    plan = smallest_norm_plan(model)
    x = split.train.x
    variants = {
        "trained": model,
        "50% removed, none": surgery.remove_nodes(model, plan, compensate="none"),
        "50% removed, mean": surgery.remove_nodes(model, plan, x=x),
        "50% removed, torch-pruning": tp_remove(model, plan, x[:1]),
    }
    for name, m in variants.items():
        acc = train.evaluate(m, split.test)["accuracy"]
        print(f"lenet5 on mnist5k ({epochs} epochs), {name}: test accuracy {acc:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds of 3 calls")
    parser.add_argument("--n", type=int, default=1000, help="inputs for mean compensation")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (0: skip)")
    args = parser.parse_args()
    if tp is None:
        sys.exit(f"channel_removal benchmark needs Torch-Pruning: {INSTALL}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, torch-pruning {tp.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds",
        flush=True,
    )
    g = torch.Generator().manual_seed(0)
    lenet = models.lenet5(seed=0).eval()
    time_one("lenet5", lenet, torch.rand(args.n, 1, 28, 28, generator=g), args.rounds)
    mlp = models.mlp((784, 300, 100, 10), seed=0).eval()
    time_one("mlp 784-300-100-10", mlp, torch.rand(args.n, 784, generator=g), args.rounds)
    if args.epochs > 0:
        accuracy(args.epochs)


if __name__ == "__main__":
    main()
