"""Many models of one architecture trained at once: ``fit_many``.

K seeds (or ensemble members) of one MLP are trained together with stacked weights
``[K, ...]`` and batched matrix products (:mod:`prunelab.stacked`), which matches K separate
:func:`prunelab.train.fit` calls to float rounding at a fraction of their time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..base import checks, models, ops
from ..base.data import Dataset
from ..base.progress import track
from ..base.train import FitConfig, History, _check_data
from . import stacked


def fit_many(
    models_: Sequence[nn.Sequential],
    train: Dataset,
    *,
    seeds: Sequence[int],
    epochs: int = 20,
    lr: float = 0.01,
    batch_size: int | None = 32,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    weight_masks: Mapping[str, Tensor] | None = None,
    node_masks: Tensor | None = None,
    progress: bool = True,
) -> list[History]:
    """Train K models of one architecture together, in place, with batched weights.

    Equivalent to ``[fit(m, train, seed=s, ...) for m, s in zip(models_, seeds)]``: each model
    gets its own shuffling from ``seeds[k]``, the loss is the sum of the K mean cross-entropies
    (so each model's gradient is its own), and Adam/SGD act elementwise on the stacked weights
    ``[K, ...]``. Results agree with separate fits to float rounding (about 1e-6) for models
    without dropout; with dropout the runs are statistically, not bitwise, equivalent (masks
    come from one generator seeded by ``seeds[0]``).

    The batched GEMMs sum in a different order from the per-model ones, so the two runs differ
    by rounding at every step. That stays at rounding size unless a training point comes
    within rounding distance of a ReLU kink (``|z| ~ 1e-7``): it then lands on different
    sides in the two runs, the gradients differ by a finite amount, and the two (equally
    valid) trajectories separate, by 1e-3 to 1e-2 after a few hundred Adam steps. For 2-20-2
    circle nets and 200 full-batch steps this happened to a few of 64 seeds (none of 0-31).

    Parameters
    ----------
    models_ : sequence of nn.Sequential
        K models with identical architecture (e.g. ``[mlp(w, seed=s) for s in seeds]``).
    seeds : sequence of int
        One shuffling seed per model.
    weight_masks : dict of str to Tensor, optional
        Masks shaped like each parameter (shared) or ``[K, *shape]`` (per model).
    node_masks : Tensor [H] or [K, H], optional
        Node masks over all hidden nodes, shared or per model.

    Returns
    -------
    list of History, one per model.
    """
    fn = "ensemble.fit_many"
    config = FitConfig(epochs, lr, batch_size, optimizer, weight_decay, momentum, fn=fn)
    seeds = [checks.seed(s, fn, "seeds[i]") for s in seeds]
    K = len(models_)
    if K == 0 or len(seeds) != K:
        raise ValueError(
            f"fit_many needs one seed per model; got {K} models and {len(seeds)} seeds"
        )
    view = ops.parse(models_[0], method="ensemble.fit_many")
    if view.conv or any(layer.norm is not None for layer in view.layers):
        raise ValueError(
            "ensemble.fit_many trains MLPs (stacked dense weights) only; this model has a "
            "Conv2d or BatchNorm: train each seed with train.fit"
        )
    nets = [models.parse(m, method="ensemble.fit_many") for m in models_]
    specs = [models.spec(m) for m in models_]
    if any(s != specs[0] for s in specs):
        raise ValueError("fit_many: all models must have the same architecture (models.spec)")
    net = nets[0]
    if len({id(layer.linear) for layer in net.layers}) < len(net.layers):
        raise ValueError("fit_many: a Linear module is used twice (shared weights); use fit")
    _check_data(models_[0], view, train, "train", "ensemble.fit_many")
    dtype = net.layers[0].weight.dtype
    x, y = train.x.to(device=view.device, dtype=dtype), train.y.to(view.device)
    N = len(y)

    # Stacked parameters [K, ...] in layer order; gradients come from stacked.backward.
    Ws = [
        torch.stack([n.layers[i].weight.detach() for n in nets]).clone()
        for i in range(len(net.layers))
    ]
    bs = [
        None
        if layer.bias is None
        else torch.stack([n.layers[i].bias.detach() for n in nets]).clone()
        for i, layer in enumerate(net.layers)
    ]
    leaves = {f"{layer.name}.weight": W for layer, W in zip(net.layers, Ws, strict=True)}
    leaves |= {
        f"{layer.name}.bias": b for layer, b in zip(net.layers, bs, strict=True) if b is not None
    }
    wmasks = {}
    for name, mask in (weight_masks or {}).items():
        if name not in leaves:
            raise KeyError(f"weight_masks: no parameter {name!r}; parameters are {list(leaves)}")
        wmasks[name] = (mask != 0).to(dtype).expand_as(leaves[name])
    nmasks = None
    if node_masks is not None:
        H = sum(net.hidden_sizes)
        if node_masks.shape not in ((H,), (K, H)):
            raise ValueError(
                f"node_masks must be [{H}] or [{K}, {H}]; got {list(node_masks.shape)}"
            )
        nm = node_masks.to(dtype).reshape(-1, H)
        nmasks = [m.unsqueeze(2) for m in nm.split(net.hidden_sizes, dim=1)]  # (K|1, H_l, 1)

    params = [p for p in Ws + bs if p is not None]
    with torch.no_grad():
        for name, mask in wmasks.items():
            leaves[name].mul_(mask)
    opt = config.make_optimizer(params)  # fit's optimizer code: the same update arithmetic
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    has_dropout = net.input_dropout > 0 or any(
        layer.dropout + layer.dropout_pre > 0 for layer in net.layers
    )
    dropout_gen = torch.Generator().manual_seed(int(seeds[0])) if has_dropout else None
    xT = net.inputs(x).T.contiguous()  # (D, N): points last
    histories = [History() for _ in range(K)]
    workspace = stacked.Workspace()  # the step's [K, H, B] tensors, allocated once
    with track(config.epochs, f"training {K} models", enabled=progress) as advance:
        for _ in range(config.epochs):
            epoch = [config.batches(N, g) for g in gens]
            n_batches = 1 if epoch[0] is None else len(epoch[0])
            total_loss = torch.zeros(K, dtype=torch.float64, device=x.device)
            total_correct = torch.zeros(K, dtype=torch.float64, device=x.device)
            for j in range(n_batches):
                if epoch[0] is None:
                    xb, yb = xT, y
                else:
                    idx = torch.stack([e[j] for e in epoch])  # (K, B)
                    xb = xT[:, idx].permute(1, 0, 2).contiguous()  # (K, D, B)
                    yb = y[idx]
                logits, cache = stacked.forward(net, Ws, bs, xb, nmasks, dropout_gen, workspace)
                loss, correct, delta = stacked.cross_entropy(logits, yb)  # (K,), (K,), (K, C, B)
                dWs, dbs = stacked.backward(net, Ws, bs, cache, delta, workspace)
                for p, g in zip(Ws + bs, dWs + dbs, strict=True):
                    if p is not None:
                        p.grad = g
                for name, mask in wmasks.items():
                    leaves[name].grad.mul_(mask)
                opt.step()
                with torch.no_grad():
                    for name, mask in wmasks.items():
                        leaves[name].mul_(mask)
                B = yb.shape[-1]
                total_loss += loss.double() * B
                total_correct += correct.double()
            for h, loss_k, correct_k in zip(
                histories, (total_loss / N).tolist(), (total_correct / N).tolist(), strict=True
            ):
                h.loss.append(loss_k)
                h.accuracy.append(correct_k)
            advance(status=f"mean loss {total_loss.mean().item() / N:.4f}")
    with torch.no_grad():
        for k, n in enumerate(nets):
            for layer, W, b in zip(n.layers, Ws, bs, strict=True):
                layer.weight.copy_(W[k])
                if b is not None:
                    layer.bias.copy_(b[k])
    return histories
