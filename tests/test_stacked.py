"""The stacked K-model engine against autograd on each model separately (float64)."""

import pytest
import torch
import torch.nn.functional as F

from prunelab import models, stacked


@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu", "gelu", "sigmoid"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("reuse", [False, True])
def test_gradients_equal_autograd_per_model(activation, shared, reuse):
    K, N, widths = 3, 17, (4, 6, 5, 3)
    nets = [
        models.mlp(widths, activation=activation, seed=k, dtype=torch.float64) for k in range(K)
    ]
    parsed = [models.parse(m) for m in nets]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(K, N, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (K, N), generator=g)
    if shared:
        x, y = x[0], y[0]
    node_masks = (torch.rand(K, 11, generator=g) > 0.3).double()
    Ws = [torch.stack([p.layers[i].weight.detach() for p in parsed]) for i in range(3)]
    bs = [torch.stack([p.layers[i].bias.detach() for p in parsed]) for i in range(3)]
    blocks = [m.unsqueeze(2) for m in node_masks.split([6, 5], dim=1)]
    xT = x.T.contiguous() if shared else x.transpose(1, 2).contiguous()
    workspace = stacked.Workspace() if reuse else None
    if reuse:  # a previous step on other inputs leaves garbage in the reused tensors
        f0, cache0 = stacked.forward(parsed[0], Ws, bs, 3 * xT + 1, blocks, workspace=workspace)
        stacked.backward(parsed[0], Ws, bs, cache0, stacked.cross_entropy(f0, y)[2], workspace)
    f, cache = stacked.forward(parsed[0], Ws, bs, xT, blocks, workspace=workspace)
    loss, correct, delta = stacked.cross_entropy(f, y)
    dWs, dbs = stacked.backward(parsed[0], Ws, bs, cache, delta, workspace)
    if reuse:
        assert [z.data_ptr() for z in cache.z] == [z.data_ptr() for z in cache0.z]
    for k, m in enumerate(nets):
        xk, yk = (x, y) if shared else (x[k], y[k])
        a = xk
        for i, layer in enumerate(models.parse(m).layers):
            a = layer.phi(F.linear(a, layer.weight, layer.bias))
            if i < 2:
                a = a * node_masks[k].split([6, 5])[i]
        ref = F.cross_entropy(a, yk)
        grads = torch.autograd.grad(ref, [p for p in m.parameters()])
        assert loss[k].item() == pytest.approx(ref.item(), rel=1e-12)
        assert correct[k].item() == (a.argmax(1) == yk).sum().item()
        for i in range(3):
            torch.testing.assert_close(dWs[i][k], grads[2 * i], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(dbs[i][k], grads[2 * i + 1], rtol=1e-10, atol=1e-12)


def test_workspace_keeps_one_tensor_per_role_and_shape():
    ws, like = stacked.Workspace(), torch.zeros(1, dtype=torch.float64)
    full = ws.get(("z", 0), (3, 4, 32), like)
    short = ws.get(("z", 0), (3, 4, 8), like)  # a short last mini-batch
    assert short.data_ptr() != full.data_ptr() and short.dtype == torch.float64
    assert ws.get(("z", 0), (3, 4, 32), like) is full and ws.get(("z", 0), (3, 4, 8), like) is short
    assert ws.get(("a", 0), (3, 4, 32), like) is not full
    assert ws.get(("z", 0), (3, 4, 32), torch.zeros(1)).dtype == torch.float32
