"""Bad input to the public functions: a clear error naming the argument, or a finite result
that equals an independent computation (hypothesis generates the inputs)."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunelab import (
    ablation,
    bounds,
    checkpoint,
    checks,
    coreset,
    criteria,
    curvature,
    data,
    ensemble,
    guarantees,
    l0,
    masks,
    models,
    relevance,
    surgery,
    train,
)

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
D, H, C = 3, 9, 2  # a 3-5-4-2 MLP: 9 hidden units
MODEL = models.mlp((D, 5, 4, C), seed=0)
X = torch.randn(12, D, generator=torch.Generator().manual_seed(0))
Y = torch.arange(12) % C


def _y(x):
    """Labels matching x's rows where x has rows (so a bad x, not y, is what fails)."""
    return Y[: x.shape[0]] if isinstance(x, torch.Tensor) and x.dim() else Y


def _gates():
    g = torch.Generator().manual_seed(0)
    return l0.Gates({0: l0.init_log_alpha(5, generator=g), 1: l0.init_log_alpha(4, generator=g)})


# every public function that takes data x for the model, called with x (and valid other args)
X_FUNCTIONS = {
    "train.predict": lambda x: train.predict(MODEL, x),
    "masks.hidden_activations": lambda x: masks.hidden_activations(MODEL, x),
    "masks.masked_logits": lambda x: masks.masked_logits(MODEL, x, torch.ones(2, H)),
    "ablation.mask_losses": lambda x: ablation.mask_losses(MODEL, x, _y(x), torch.ones(2, H)),
    "relevance.explain": lambda x: relevance.explain(MODEL, x, method="gradient"),
    "criteria.node_scores": lambda x: criteria.node_scores("activation_std", MODEL, x),
    "curvature.diag_hessian": lambda x: curvature.diag_hessian(MODEL, x, _y(x)),
    "surgery.remove_nodes": lambda x: surgery.remove_nodes(MODEL, {0: [0]}, x=x),
    "bounds.node_bounds": lambda x: bounds.node_bounds(MODEL, x),
    "coreset.layer_inputs": lambda x: coreset.layer_inputs(MODEL, 1, x),
    "coreset.prune_weights_sipp": lambda x: coreset.prune_weights_sipp(
        MODEL, 1, x, generator=torch.Generator().manual_seed(0), samples=5
    ),
    "l0.gated_logits": lambda x: l0.gated_logits(MODEL, _gates(), x),
    "ablation.mask_point_losses": lambda x: ablation.mask_point_losses(
        MODEL, x, _y(x), torch.ones(2, H)
    ),
    "criteria.weight_scores": lambda x: criteria.weight_scores("snip", MODEL, x, _y(x)),
    "curvature.hutchinson_diag": lambda x: curvature.hutchinson_diag(MODEL, x, _y(x), probes=2),
    "surgery.compensation_error": lambda x: surgery.compensation_error(MODEL, {0: [0]}, x=x),
    "surgery.sparsity_sweep": lambda x: surgery.sparsity_sweep(
        MODEL, {n: p.abs() for n, p in MODEL.named_parameters()}, [0.5], x, _y(x)
    ),
}

LENET = models.lenet5(seed=0).eval()
# the same functions on a convnet: images [N, 1, 28, 28]
CONV_FUNCTIONS = {
    "train.predict": lambda x: train.predict(LENET, x),
    "masks.masked_logits": lambda x: masks.masked_logits(LENET, x, torch.ones(2, 226)),
    "ablation.mask_losses": lambda x: ablation.mask_losses(LENET, x, _y(x), torch.ones(2, 226)),
    "relevance.explain": lambda x: relevance.explain(LENET, x, method="gradient"),
    "criteria.node_scores": lambda x: criteria.node_scores("activation_std", LENET, x),
    "curvature.diag_hessian": lambda x: curvature.diag_hessian(LENET, x, _y(x)),
    "bounds.node_bounds": lambda x: bounds.node_bounds(LENET, x),
    "surgery.remove_nodes": lambda x: surgery.remove_nodes(LENET, {0: [0]}, x=x),
}

# every public function that takes a model, called on `model` with valid data
MODEL_FUNCTIONS = {
    "train.evaluate": lambda m: train.evaluate(m, data.Dataset(X, Y)),
    "train.fit": lambda m: train.fit(m, data.Dataset(X, Y), epochs=1, progress=False),
    "train.predict": lambda m: train.predict(m, X),
    "ablation.mask_losses": lambda m: ablation.mask_losses(m, X, Y, torch.ones(2, H)),
    "relevance.explain": lambda m: relevance.explain(m, X, method="gradient"),
    "criteria.node_scores": lambda m: criteria.node_scores("activation_std", m, X),
    "criteria.weight_scores": lambda m: criteria.weight_scores("obd", m, X, Y),
    "curvature.diag_hessian": lambda m: curvature.diag_hessian(m, X, Y),
    "bounds.node_bounds": lambda m: bounds.node_bounds(m, X),
    "surgery.remove_nodes": lambda m: surgery.remove_nodes(m, {0: [0]}, x=X),
    "masks.hidden_sizes": lambda m: masks.hidden_sizes(m),
}


def _names(message: str, argument: str) -> bool:
    """Whether ``message`` names ``argument`` as a word."""
    return re.search(rf"(?<![\w.]){re.escape(argument)}(?!\w)", message) is not None


def _bad_x():
    """x that no model function may take: NaN/inf inside, wrong width, empty, wrong rank,
    not a tensor."""
    n = st.integers(1, 6)
    nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])
    with_nan = st.tuples(n, st.integers(0, 100), nonfinite).map(_poison)
    wrong_width = st.tuples(n, st.integers(1, 8).filter(lambda d: d != D)).map(
        lambda s: torch.randn(*s)
    )
    empty = st.just(torch.zeros(0, D))
    wrong_rank = st.sampled_from([torch.randn(D), torch.randn(2, D, 1, 2)])
    not_a_tensor = st.sampled_from([[[0.0] * D], None, "x", 3.0, (X, Y)])
    return st.one_of(with_nan, wrong_width, empty, wrong_rank, not_a_tensor)


def _bad_images():
    """Images no LeNet-5 may take: NaN/inf inside, wrong channels, too small, flat, empty."""
    n = st.integers(1, 3)
    nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])
    with_nan = st.tuples(n, st.integers(0, 5000), nonfinite).map(_poison_image)
    channels = st.tuples(n, st.integers(2, 4)).map(lambda s: torch.randn(s[0], s[1], 28, 28))
    too_small = st.tuples(n, st.integers(1, 3)).map(lambda s: torch.randn(s[0], 1, s[1], s[1]))
    other = st.sampled_from([torch.randn(2, 784), torch.zeros(0, 1, 28, 28), "images", None])
    return st.one_of(with_nan, channels, too_small, other)


def _poison_image(args):
    n, where, value = args
    x = torch.randn(n, 1, 28, 28)
    x.view(-1)[where % x.numel()] = value
    return x


def _poison(args):
    n, where, value = args
    x = torch.randn(n, D)
    x.view(-1)[where % x.numel()] = value
    return x


@pytest.mark.parametrize("fn", list(X_FUNCTIONS))
@SETTINGS
@given(x=_bad_x())
def test_bad_x_is_a_clear_error_naming_x(fn, x):
    with pytest.raises((TypeError, ValueError)) as e:
        X_FUNCTIONS[fn](x)
    message = str(e.value)
    assert _names(message, "x"), message
    assert re.match(r"[\w.]+: ", message), message  # the function comes first


@pytest.mark.parametrize("fn", list(CONV_FUNCTIONS))
@settings(max_examples=8, deadline=None)
@given(x=_bad_images())
def test_bad_images_for_a_convnet_are_a_clear_error_naming_x(fn, x):
    with pytest.raises((TypeError, ValueError)) as e:
        CONV_FUNCTIONS[fn](x)
    message = str(e.value)
    assert _names(message, "x") and re.match(r"[\w.]+: ", message), message


@pytest.mark.parametrize("fn", list(MODEL_FUNCTIONS))
@SETTINGS
@given(
    param=st.integers(0, 5),
    index=st.integers(0, 100),
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
)
def test_a_model_with_a_nonfinite_parameter_is_rejected(fn, param, index, value):
    model = models.mlp((D, 5, 4, C), seed=0)
    name, p = list(model.named_parameters())[param]
    with torch.no_grad():
        p.view(-1)[index % p.numel()] = value
    with pytest.raises(ValueError) as e:
        MODEL_FUNCTIONS[fn](model)
    assert name in str(e.value) and "NaN or inf" in str(e.value)


BAD_SEEDS = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=2**63, max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.booleans(),
    st.just(torch.Generator()),
    st.just(torch.tensor(1)),
    st.none(),
)

SEED_FUNCTIONS = {
    "models.mlp": lambda s: models.mlp((2, 3, 2), seed=s),
    "models.lenet5": lambda s: models.lenet5(seed=s),
    "train.fit": lambda s: train.fit(
        models.mlp((2, 3, 2)), data.circle(8, seed=0), epochs=1, seed=s, progress=False
    ),
    "ensemble.fit_many": lambda s: ensemble.fit_many(
        [models.mlp((2, 3, 2))], data.circle(8, seed=0), seeds=[s], epochs=1, progress=False
    ),
    "l0.fit_l0": lambda s: l0.fit_l0(
        models.mlp((2, 3, 2)), data.circle(8, seed=0), penalty=0.1, epochs=1, seed=s, progress=False
    ),
}


@pytest.mark.parametrize("fn", list(SEED_FUNCTIONS))
@SETTINGS
@given(seed=BAD_SEEDS)
def test_a_bad_int_seed_is_a_clear_error(fn, seed):
    with pytest.raises((TypeError, ValueError)) as e:
        SEED_FUNCTIONS[fn](seed)
    assert fn in str(e.value) and "seed" in str(e.value), str(e.value)


@pytest.mark.parametrize("loader", ["circle", "spirals"])
@SETTINGS
@given(seed=BAD_SEEDS.filter(lambda s: not isinstance(s, torch.Generator)))
def test_data_seeds_take_ints_or_generators_only(loader, seed):
    with pytest.raises((TypeError, ValueError), match=rf"data.{loader}: seed must be"):
        getattr(data, loader)(8, seed=seed)


BAD_GENERATORS = st.one_of(st.integers(), st.text(max_size=3), st.floats(), st.just((1, 2)))
GENERATOR_FUNCTIONS = {
    "masks.bernoulli": lambda g: masks.bernoulli(3, 4, 0.5, generator=g),
    "masks.flip_paths": lambda g: masks.flip_paths(3, 4, generator=g),
    "criteria.node_scores": lambda g: criteria.node_scores("random", MODEL, X, generator=g),
    "criteria.weight_scores": lambda g: criteria.weight_scores("random", MODEL, X, generator=g),
    "coreset.prune_neurons_mussay": lambda g: coreset.prune_neurons_mussay(
        MODEL, 0, beta=2.0, generator=g, size=3
    ),
    "coreset.prune_weights_sipp": lambda g: coreset.prune_weights_sipp(
        MODEL, 1, X, generator=g, samples=5
    ),
}


@pytest.mark.parametrize("fn", list(GENERATOR_FUNCTIONS))
@SETTINGS
@given(generator=BAD_GENERATORS)
def test_a_non_generator_where_a_generator_belongs(fn, generator):
    with pytest.raises(TypeError) as e:
        GENERATOR_FUNCTIONS[fn](generator)
    assert fn in str(e.value) and "generator must be a torch.Generator" in str(e.value)


NOT_DATASETS = st.sampled_from([(X, Y), [X, Y], X, {"x": X, "y": Y}, None, "circle"])


@pytest.mark.parametrize("fn", ["train.fit", "train.evaluate", "l0.fit_l0"])
@SETTINGS
@given(value=NOT_DATASETS)
def test_a_tuple_where_a_dataset_belongs(fn, value):
    call = {
        "train.fit": lambda: train.fit(models.mlp((D, 4, C)), value, epochs=1, progress=False),
        "train.evaluate": lambda: train.evaluate(MODEL, value),
        "l0.fit_l0": lambda: l0.fit_l0(models.mlp((D, 4, C)), value, penalty=0.1, progress=False),
    }[fn]
    with pytest.raises(TypeError, match=rf"{re.escape(fn)}: .* must be a prunelab Dataset"):
        call()


@SETTINGS
@given(
    widths=st.one_of(
        st.lists(st.integers(-3, 0), min_size=2, max_size=4).map(tuple),
        st.lists(st.floats(0.5, 30).filter(lambda w: not float(w).is_integer()), min_size=1).map(
            lambda ws: (2, *ws, 2)
        ),
        st.lists(st.integers(1, 5), max_size=1).map(tuple),
        st.sampled_from(["2,3,2", None, 7, (2, "3", 2), (2, True, 2)]),
    )
)
def test_mlp_widths_must_be_positive_ints(widths):
    with pytest.raises(ValueError, match=r"models.mlp: widths must be a sequence"):
        models.mlp(widths)


@SETTINGS
@given(
    epochs=st.integers(max_value=0) | st.floats() | st.none(),
)
def test_fit_needs_at_least_one_epoch(epochs):
    with pytest.raises((TypeError, ValueError), match=r"train.fit: epochs must be"):
        train.fit(MODEL, data.Dataset(X, Y), epochs=epochs, progress=False)


def test_empty_data_is_an_error_not_nan():
    empty = data.Dataset(torch.zeros(0, D), torch.zeros(0, dtype=torch.long), classes=C)
    with pytest.raises(ValueError, match=r"train.evaluate: data .* holds no samples"):
        train.evaluate(MODEL, empty)
    with pytest.raises(ValueError, match=r"train.fit: train .* holds no samples"):
        train.fit(models.mlp((D, 4, C)), empty, epochs=1, progress=False)


@SETTINGS
@given(
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
    where=st.integers(0, 100),
    fn=st.sampled_from(["top_two", "critical_epsilon", "consistent", "logit_errors"]),
)
def test_guarantees_reject_nonfinite_logits(value, where, fn):
    f = torch.randn(5, 3)
    f.view(-1)[where % f.numel()] = value
    call = {
        "top_two": lambda: guarantees.top_two(f),
        "critical_epsilon": lambda: guarantees.critical_epsilon(f),
        "consistent": lambda: guarantees.consistent(f, 0.1),
        "logit_errors": lambda: guarantees.logit_errors(f, f),
    }[fn]
    with pytest.raises(ValueError, match=rf"guarantees.{fn}: f \(logits\) holds"):
        call()


# --- finite results equal an independent computation --------------------------------------


@SETTINGS
@given(n=st.integers(1, 20), seed=st.integers(0, 2**32))
def test_evaluate_and_predict_equal_a_plain_forward(n, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, D, generator=g), torch.randint(0, C, (n,), generator=g)
    scores = train.evaluate(MODEL, data.Dataset(x, y, classes=C))
    with torch.no_grad():
        logits = MODEL(x)
    assert math.isfinite(scores["loss"])
    assert scores["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert scores["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    torch.testing.assert_close(train.predict(MODEL, x), logits.softmax(1))


@SETTINGS
@given(n=st.integers(1, 10), m=st.integers(1, 4), seed=st.integers(0, 2**32))
def test_mask_losses_equal_a_loop_over_masks(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, D, generator=g), torch.randint(0, C, (n,), generator=g)
    subsets = masks.bernoulli(m, H, 0.5, generator=g)
    loss, _ = ablation.mask_losses(MODEL, x, y, subsets)
    assert torch.isfinite(loss).all()
    for k in range(m):
        kept = {0: subsets[k, :5], 1: subsets[k, 5:]}
        with torch.no_grad():
            a = torch.relu(MODEL[0](x)) * kept[0]
            a = torch.relu(MODEL[2](a)) * kept[1]
            expected = F.cross_entropy(MODEL[4](a), y)
        assert loss[k].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


# --- the checks themselves ------------------------------------------------------------------


@SETTINGS
@given(value=st.integers(0, 2**63 - 1))
def test_seed_accepts_the_generator_range(value):
    assert checks.seed(value, "f") == value


def test_errors_name_function_argument_value_and_what_is_accepted():
    with pytest.raises(ValueError) as e:
        checks.integer(0, "train.fit", "epochs", minimum=1)
    assert str(e.value) == "train.fit: epochs must be an int >= 1; got 0"
    with pytest.raises(TypeError, match=r"f: generator must be a torch.Generator or None; got 3"):
        checks.generator(3, "f")


def test_checkpoint_load_on_a_folder_says_it_is_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        checkpoint.load(tmp_path)


def test_csv_without_a_label_column_is_rejected(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match=r"no label column.*label_column"):
        data.from_file(path)
    assert data.from_file(path, label_column="c").y.tolist() == [0, 1]
