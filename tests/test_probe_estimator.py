"""Value probes and the pruning sweep on planted data where the answer is known.

The batched probes equal single probes (and a plain PyTorch MLP trained by torch.optim.AdamW); a value signal
planted in two dims is found, ranked first by the sweep, and beats random dims.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from rewardscope.errors import RewardscopeError
from rewardscope.probe import (
    HeldOut, LayerwiseValueProbes, ProblemBootstrap, ValueProbe, evaluate, kept_count, lambda_returns,
    pruning_sweep, rank_dims, split_problems, trajectories_from_index, value_neurons,
)
from rewardscope.probe.targets import read_index

SIGNAL_DIMS = (3, 11)


def planted(n_problems=60, rollouts=4, steps=8, d=32, layers=3, seed=0):
    """States [layers, rows, d] and a capture-style index. Each problem has a difficulty p; a rollout is correct
    with probability p. Two dims carry a value signal that moves from p (at s0) to the outcome (at the end),
    stronger in deeper layers; every dim has its own scale (e^-2..e^2), so raw L1 norms would mislead."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.1, 0.9, n_problems)
    index, signal = [], []
    for p in range(n_problems):
        for s in range(rollouts):
            reward = float(rng.random() < difficulty[p])
            for t in range(steps + 1):
                kind = "s0" if t == 0 else "step_end" if t % 2 == 0 or t == steps else "token"
                index.append(dict(row=len(index), rollout_id=p * rollouts + s, problem_id=f"p{p}",
                                  position_kind=kind, token_index=t - 1, is_last=t == steps, reward=reward))
                f = t / steps
                signal.append(4 * ((1 - f) * (difficulty[p] - 0.5) + f * (reward - 0.5)))
    scales = np.exp(rng.uniform(-2, 2, d))
    X = rng.standard_normal((layers, len(index), d)) * scales
    for layer in range(layers):
        X[layer][:, list(SIGNAL_DIMS)] += np.array(signal)[:, None] * scales[list(SIGNAL_DIMS)] * (layer + 1) / layers
    return torch.tensor(X, dtype=torch.float32), read_index(pa.Table.from_pylist(index), "index")


@pytest.fixture(scope="module")
def data():
    X, cols = planted()
    traj = trajectories_from_index(cols, "token", "index")
    test = split_problems(traj.problem_ids, 0.25, seed=0)
    held = HeldOut.from_index(cols, traj.rollout_ids[test])
    return X, traj.subset(~test), held, ProblemBootstrap(len(held.problem_names), 200, 0)


FAST = dict(hidden=32, epochs=12, lr=3e-3)
# Over a few epochs batched and single probes agree to float precision. Over many, Adam's g / (sqrt(v) + eps)
# can blow float-rounding differences in near-zero gradients up to ~1e-3 (chaotically, not as a drift), so
# longer runs are compared by what they are used for: AUROC.
SHORT = {**FAST, "epochs": 3}


def aurocs(values, held, boot):
    tables, _ = evaluate(np.asarray(values), held, boot)
    return np.array([[t[pos]["auroc"] for pos in ("s0", "step_end", "last")] for t in tables])


def test_batched_probes_equal_single_probes_and_any_grouping(data):
    X, train, held, boot = data
    for params, atol in ((SHORT, 1e-5), (FAST, 1e-2)):
        batched = LayerwiseValueProbes(**params).fit(X, train)
        values = batched.predict(X, held.rows)
        singles = torch.stack([ValueProbe(**params).fit(X[layer], train).predict(X[layer], held.rows)
                               for layer in range(3)])
        torch.testing.assert_close(singles, values, atol=atol, rtol=0)
        np.testing.assert_allclose(aurocs(singles, held, boot), aurocs(values, held, boot), atol=0.005)
        pair = LayerwiseValueProbes(**params).fit(X[[2, 0]], train)  # another group, another order
        torch.testing.assert_close(pair.predict(X[[2, 0]], held.rows), values[[2, 0]], atol=atol, rtol=0)


def test_sources_and_dims_equal_single_probes_on_those_dims(data):
    X, train, held, boot = data
    dims, sources = torch.tensor([[3, 11, 20], [0, 1, 2], [3, 5, 11]]), [2, 2, 0]
    for params, atol in ((SHORT, 1e-5), (FAST, 1e-2)):
        values = LayerwiseValueProbes(**params).fit(X, train, dims=dims, sources=sources).predict(X, held.rows)
        singles = torch.stack([ValueProbe(**params).fit(X[layer], train, dims=d).predict(X[layer], held.rows)
                               for layer, d in zip(sources, dims)])
        # dims are columns of the full state: the same as a probe given those columns
        columns = torch.stack([ValueProbe(**params).fit(X[layer][:, d], train).predict(X[layer][:, d], held.rows)
                               for layer, d in zip(sources, dims)])
        for other in (singles, columns):
            torch.testing.assert_close(other, values, atol=atol, rtol=0)
            np.testing.assert_allclose(aurocs(other, held, boot), aurocs(values, held, boot), atol=0.005)


@pytest.mark.parametrize("td_lambda", [0.0, 0.6, 1.0])
def test_equals_a_plain_pytorch_mlp_trained_by_adamw(data, td_lambda):
    X, train, _, _ = data
    x = X[1]
    # Whole-set batches, so the order of trajectories cannot matter: this checks the model, loss and optimizer.
    params = dict(hidden=16, epochs=4, lr=1e-2, td_lambda=td_lambda, gamma=0.97, batch_trajectories=len(train))
    ours = ValueProbe(**params).fit(x, train)
    init = ValueProbe(**{**params, "epochs": 0}).fit(x, train).weights_

    rows = torch.as_tensor(train.rows)
    mean, std = x[rows].double().mean(0).float(), x[rows].double().std(0, unbiased=False).float()
    net = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        net[0].weight.copy_(init["W1"][0].T), net[0].bias.copy_(init["b1"][0])
        net[2].weight.copy_(init["W2"][0][None]), net[2].bias.copy_(init["b2"][0][None])
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.01)
    lengths, rewards = torch.as_tensor(train.lengths), torch.as_tensor(train.rewards)
    inputs = (x[rows] - mean) / std
    for _ in range(4):
        v = net(inputs)[:, 0]
        target = lambda_returns(v.detach()[None], lengths, rewards, 0.97, td_lambda)[0]
        loss = torch.nn.functional.mse_loss(v, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.testing.assert_close(ours.predict(x, rows), net(inputs)[:, 0].detach(), atol=1e-5, rtol=0)


def test_learns_the_planted_value_and_is_deterministic(data):
    X, train, held, boot = data
    probe = LayerwiseValueProbes(**FAST).fit(X, train)
    tables, _ = evaluate(probe.predict(X, held.rows).numpy(), held, boot)
    assert tables[2]["last"]["auroc"] > 0.95  # the outcome itself is planted at the end
    assert tables[2]["s0"]["ci95"][0] > 0.5  # s0 sees only the problem's difficulty: above chance
    assert tables[0]["last"]["auroc"] < tables[2]["last"]["auroc"]  # weaker signal in layer 0
    assert len(probe.loss_curve_) == 3 and all(len(c) == FAST["epochs"] for c in probe.loss_curve_)
    assert all(curve[-1] < curve[0] for curve in probe.loss_curve_)  # each probe's own curve
    again = LayerwiseValueProbes(**FAST).fit(X, train)
    assert torch.equal(again.weights_["W1"], probe.weights_["W1"])


def test_standardized_probe_ignores_the_scale_of_an_input(data):
    X, train, held, _ = data
    scaled = X.clone()
    scaled[:, :, 7] *= 1000.0
    a = LayerwiseValueProbes(**FAST).fit(X, train).predict(X, held.rows)
    b = LayerwiseValueProbes(**FAST).fit(scaled, train).predict(scaled, held.rows)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["mlp", "linear"])
def test_sweep_ranks_planted_dims_first_and_beats_random_dims(data, arch):
    X, train, held, boot = data
    full = LayerwiseValueProbes(**FAST, arch=arch, output="linear" if arch == "linear" else "sigmoid").fit(X, train)
    if arch == "linear":
        torch.testing.assert_close(full.feature_scores_, full.weights_["W1"][..., 0].abs())
    for layer in (1, 2):
        assert set(rank_dims(full.feature_scores_)[layer, :2].tolist()) == set(SIGNAL_DIMS)
    ratios = [0.0, 0.5, 0.95]
    rows = pruning_sweep(full.select([1, 2]), X, train, held, boot, [1, 2], ratios, random_draws=2, seed=0)
    assert [r["kept_dims"] for r in rows[1]] == [32, 16, 2]
    at_zero = rows[1][0]
    assert at_zero["value_dims"] == at_zero["masked"] and at_zero["value_minus_random"]["last"]["delta"] == 0
    top = rows[1][2]  # the two planted dims alone, retrained
    assert top["value_dims"]["last"]["auroc"] > 0.95 and top["masked"]["last"]["auroc"] > 0.9
    assert len(top["random_dims"]["last"]["draws"]) == 2
    assert top["value_minus_random"]["last"]["ci95"][0] > 0.2  # random pairs of dims carry nothing


def test_random_dims_of_the_sweep_are_its_own_fits(data):
    # The batched sweep fit (value and random dims of every layer) equals one ValueProbe per arm.
    from rewardscope.probe.sweep import random_dims

    X, train, held, boot = data
    full = LayerwiseValueProbes(**FAST).fit(X, train)
    rows = pruning_sweep(full, X, train, held, boot, [0, 1, 2], [0.8], random_draws=1, seed=5)
    k = kept_count(0.8, 32)
    for layer in range(3):
        dims = random_dims(32, k, layer, 0, 0, seed=5)
        single = ValueProbe(**FAST).fit(X[layer], train, dims=dims)
        (table,), _ = evaluate(single.predict(X[layer], held.rows).numpy()[None], held, boot)
        assert rows[layer][0]["random_dims"]["last"]["draws"] == [pytest.approx(table["last"]["auroc"], abs=0.005)]


def test_value_neurons_and_kept_counts():
    scores = torch.tensor([[0.1, 5.0, 0.3, 2.0] * 50])  # d = 200
    neurons = value_neurons(scores, 0.01)[0]
    assert [n["rank"] for n in neurons] == [0, 1] and [n["dim"] for n in neurons] == [1, 5]  # ties: lower dim first
    assert neurons[0]["score"] == 5.0
    assert [kept_count(r, 3584) for r in (0, 0.5, 0.9, 0.95, 0.99)] == [3584, 1792, 358, 179, 36]
    assert kept_count(0.99, 50) == 1 and kept_count(0.95, 100) == 5


def test_saved_tensors_rebuild_the_same_probes(data):
    X, train, held, _ = data
    probe = LayerwiseValueProbes(**FAST).fit(X, train, dims=torch.tensor([[1, 3, 11]] * 3))
    rebuilt = LayerwiseValueProbes.from_state_tensors(probe.get_params(), [probe.state_tensors(i) for i in range(3)])
    torch.testing.assert_close(rebuilt.predict(X, held.rows), probe.predict(X, held.rows))
    one = probe.select([2])
    torch.testing.assert_close(one.predict(X, held.rows)[0], probe.predict(X, held.rows)[2])


def test_select_keeps_the_shapes_of_learned_attributes(data):
    X, train, held, _ = data
    several = LayerwiseValueProbes(**SHORT).fit(X, train).select([0, 2])
    assert several.feature_scores_.shape == (2, 32) and several.mean_.shape == (2, 32)
    assert len(several.loss_curve_) == 2
    single = ValueProbe(**SHORT).fit(X[1], train)
    again = single.select([0])
    assert type(again) is ValueProbe and again.feature_scores_.shape == single.feature_scores_.shape == (32,)
    assert again.loss_curve_ == single.loss_curve_ and again.mean_.shape == (1, 32)
    torch.testing.assert_close(again.predict(X[1], held.rows), single.predict(X[1], held.rows))
    with pytest.raises(RewardscopeError, match="a single probe has only index 0"):
        single.select([1])


def test_unfitted_probes_raise_scikit_learns_not_fitted_error(data):
    from sklearn.exceptions import NotFittedError

    X, _, held, _ = data
    for call in (lambda: ValueProbe().predict(X[0], held.rows), lambda: LayerwiseValueProbes().predict(X),
                 lambda: LayerwiseValueProbes().select([0]), lambda: LayerwiseValueProbes().state_tensors(0)):
        with pytest.raises(NotFittedError):
            call()


def validation_split(data):
    """The training trajectories of `data`, a fifth of their problems set apart for validation."""
    X, train, held, _ = data
    val = split_problems(train.problem_ids, 0.2, seed=[0, 1])
    return X, train.subset(~val), train.subset(val), held


def test_early_stopping_keeps_each_probes_best_epoch(data):
    X, fit, validation, held = validation_split(data)
    params = dict(hidden=32, epochs=200, lr=3e-2, patience=3)  # a high lr overfits soon: stops well before 200
    probes = LayerwiseValueProbes(**params).fit(X, fit, validation=validation)
    assert probes.n_epochs_ < 200
    for p, curve in enumerate(probes.validation_curve_):
        best = int(probes.best_epoch_[p])
        assert curve[best - 1] <= min(curve) + probes.tol  # improvements smaller than tol do not count
        assert all(loss > curve[best - 1] - probes.tol for loss in curve[best:])  # none after it counted
        # the kept weights are those of the best epoch: their validation MSE is that epoch's
        kept = probes._reward_mse(probes.weights_, X, validation)[p]
        assert float(kept) == pytest.approx(curve[best - 1], rel=1e-5)
    assert (probes.n_epochs_ - probes.best_epoch_).min() == 3  # the last probe to stop ran out of patience
    # Each probe stops as it would alone, though the batch trains on until the last one stops.
    for layer in (0, 2):
        single = ValueProbe(**params).fit(X[layer], fit, validation=validation)
        assert int(single.best_epoch_[0]) == int(probes.best_epoch_[layer])
        torch.testing.assert_close(single.predict(X[layer], held.rows), probes.predict(X, held.rows)[layer],
                                   atol=1e-3, rtol=0)


def test_without_patience_the_last_epoch_is_kept_and_validation_is_only_recorded(data):
    X, fit, validation, held = validation_split(data)
    plain = LayerwiseValueProbes(**SHORT).fit(X, fit)
    watched = LayerwiseValueProbes(**SHORT).fit(X, fit, validation=validation)
    assert watched.n_epochs_ == 3 and watched.best_epoch_.tolist() == [3, 3, 3]
    assert [len(c) for c in watched.validation_curve_] == [3, 3, 3]
    torch.testing.assert_close(watched.predict(X, held.rows), plain.predict(X, held.rows), atol=0, rtol=0)
    with pytest.raises(RewardscopeError, match="early stopping needs validation trajectories"):
        LayerwiseValueProbes(**SHORT, patience=2).fit(X, fit)


def test_bad_options_are_named(data):
    X, train, _, _ = data
    with pytest.raises(RewardscopeError, match=r"probe.arch: 'cnn' is not one of \['mlp', 'linear'\]"):
        LayerwiseValueProbes(arch="cnn").fit(X, train)
    with pytest.raises(RewardscopeError, match="probe.td_lambda: 1.5 is not between 0 and 1"):
        LayerwiseValueProbes(td_lambda=1.5).fit(X, train)
    with pytest.raises(RewardscopeError, match=r"states: expected \[layers, rows, dims\]"):
        LayerwiseValueProbes().fit(X[0], train)
    for name, value, expected in [("batch_trajectories", 0, "an integer >= 1"), ("hidden", 0, "an integer >= 1"),
                                  ("lr", 0.0, "> 0"), ("weight_decay", -1.0, ">= 0"), ("gamma", 1.5, r"in \(0, 1\]"),
                                  ("epochs", -1, "an integer >= 0"), ("patience", 0, "null .* or an integer >= 1")]:
        with pytest.raises(RewardscopeError, match=rf"probe.{name}: {value!r} is not {expected}"):
            LayerwiseValueProbes(**{name: value}).fit(X, train)


def test_estimator_defaults_are_the_recipes():
    """One home: every hyper-parameter default is ProbeConfig's, but the documented exception (patience)."""
    import dataclasses

    from rewardscope.config import ProbeConfig
    from rewardscope.probe import estimator

    params, recipe = LayerwiseValueProbes().get_params(), ProbeConfig()
    fields = {f.name for f in dataclasses.fields(ProbeConfig)}
    assert set(params) - fields == set(estimator.ESTIMATOR_ONLY)  # every other parameter is a recipe key
    for name, value in params.items():
        if name not in estimator.ESTIMATOR_ONLY:
            expected = estimator.NOT_THE_RECIPES.get(name, getattr(recipe, name))
            assert value == expected, name
    assert set(estimator.NOT_THE_RECIPES) == {"patience"} and recipe.patience is not None  # the recipe stops early
    from_recipe = LayerwiseValueProbes.from_config(recipe).get_params()
    assert {k for k in params if from_recipe[k] != params[k]} == {"patience"}
