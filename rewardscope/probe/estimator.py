"""Value probes V(s) = MLP(z-scored residual state), trained by TD(lambda) over each rollout's states.

`LayerwiseValueProbes` trains P independent probes as ONE batched computation: weights are stacked
[P, d, h] and every step is a `torch.baddbmm`, so all layers of a model (and, in the pruning sweep, every
random-dims draw) train together instead of in a Python loop. `ValueProbe` is its one-probe case: the same
model. Probe p reads layer `sources[p]` of the states X [L, N, d] restricted to its input dims `dims[p]`.

Probes do not depend on their neighbours: every probe starts from the same initial weights (one draw from
`seed`, nn.Linear's default uniform init) and all see the training trajectories in the same seeded order, and
AdamW's update is element-wise. So layer 7's probe is the same whether it trained alone or beside 47 others,
up to rounding: BLAS rounds a batched product differently from a single one, and over many epochs Adam can
amplify that (docs/probes.md gives the measured size: AUROCs agree far within seed-to-seed variation).

Training length: with `patience` and validation trajectories (held apart from the training ones, by problem),
each probe keeps the weights of its epoch with the lowest validation loss (lower by more than `tol` than the
best before it) and the fit ends once no probe has improved for `patience` epochs (`epochs` is the cap);
`patience=None` trains exactly `epochs` epochs (the paper's protocol). The validation loss is the MSE of V against the rollout's terminal reward at every state:
an unbiased target of the value whatever lambda the probe is trained with (a TD loss can fall by flattening V).
Probes stop independently: in a batched fit a probe past its best epoch keeps training, but its best weights
are what it keeps, so it ends as it would have alone.

Memory: X stays where it is (GPU or CPU) in its own dtype (e.g. float16); each step gathers one batch of
states, [P, n_batch, k] in float32 on `device`, plus the hidden activations [P, n_batch, hidden]. Parameters
with AdamW's two moments and the gradient take 4 * P * (k + 2) * hidden floats.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from rewardscope.config import ProbeConfig
from rewardscope.errors import RewardscopeError
from rewardscope.probe.targets import Trajectories, lambda_returns

PREDICT_CHUNK = 16384  # states per forward when predicting: bounds memory, fast enough on any device


_RECIPE = ProbeConfig()  # the one home of the probe defaults (each documented there, with the paper's values)
ESTIMATOR_ONLY = ("device", "progress")  # parameters of the estimator that are no recipe key
# The one default that differs from the recipe's: a bare estimator gets no validation data to stop on, so it trains
# exactly `epochs` epochs (the paper's protocol); the probe stage passes probe.patience (early stopping).
NOT_THE_RECIPES = {"patience": None}


class LayerwiseValueProbes(BaseEstimator):
    """P value probes trained together; see the module docstring. Defaults: ProbeConfig's (rewardscope.config,
    where each is documented with the paper's value), but `patience` (NOT_THE_RECIPES)."""

    def __init__(
        self,
        arch: str = _RECIPE.arch,  # "mlp": Linear(k, hidden) -> ReLU -> Linear(hidden, 1); "linear": Linear(k, 1)
        hidden: int = _RECIPE.hidden,
        output: str = _RECIPE.output,  # "sigmoid" squashes V into [0, 1]; "linear" leaves it
        td_lambda: float = _RECIPE.td_lambda,  # 0: TD(0); 1: Monte-Carlo; in between: lambda-returns
        gamma: float = _RECIPE.gamma,
        standardize: bool = _RECIPE.standardize,  # z-score inputs with train statistics
        lr: float = _RECIPE.lr,
        weight_decay: float = _RECIPE.weight_decay,
        batch_trajectories: int = _RECIPE.batch_trajectories,
        epochs: int = _RECIPE.epochs,  # the cap with early stopping; exactly this many without (patience=None)
        patience: int | None = NOT_THE_RECIPES["patience"],  # epochs without a better validation loss; None: no stop
        tol: float = _RECIPE.tol,  # "better" = lower by more than this (validation MSE), as scikit-learn's MLP counts
        seed: int = _RECIPE.seed,
        device: str = "cpu",
        progress: bool | str = False,  # a progress bar over epochs; a string is its label
    ):
        self.arch = arch
        self.hidden = hidden
        self.output = output
        self.td_lambda = td_lambda
        self.gamma = gamma
        self.standardize = standardize
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_trajectories = batch_trajectories
        self.epochs = epochs
        self.patience = patience
        self.tol = tol
        self.seed = seed
        self.device = device
        self.progress = progress

    @classmethod
    def from_config(cls, cfg, **overrides):
        """From a `ProbeConfig` (its estimator fields), with keyword overrides."""
        params = {name: getattr(cfg, name) for name in cls().get_params() if hasattr(cfg, name)}
        return cls(**{**params, **overrides})

    # ------------------------------------------------------------------------------------------------------
    # Training

    def fit(self, X: torch.Tensor, trajectories: Trajectories, dims=None, sources=None,
            validation: Trajectories | None = None) -> LayerwiseValueProbes:
        """Train on states X [L, N, d] along `trajectories` (rows of X).

        dims [P, k]: input dims of each probe (default: all d); sources [P]: the layer of X each probe reads
        (default: probe l reads layer l); validation: trajectories of other problems, for early stopping (and
        recorded in `validation_curve_` either way).
        """
        self._check_params()
        if X.dim() != 3:
            raise RewardscopeError(f"states: expected [layers, rows, dims], got shape {list(X.shape)}")
        if len(trajectories) == 0:
            raise RewardscopeError("probe: no training trajectories")
        if self.patience is not None and (validation is None or len(validation) == 0):
            raise RewardscopeError("probe.patience: early stopping needs validation trajectories (none given)")
        device = torch.device(self.device)
        self.sources_ = torch.arange(X.shape[0]) if sources is None else torch.as_tensor(sources, dtype=torch.long)
        self.dims_ = None if dims is None else torch.as_tensor(dims, dtype=torch.long).to(device)
        if self.dims_ is not None and self.dims_.shape[0] != len(self.sources_):
            raise RewardscopeError(f"probe: dims for {self.dims_.shape[0]} probes, sources for {len(self.sources_)}")
        n_probes, k = len(self.sources_), X.shape[2] if self.dims_ is None else self.dims_.shape[1]
        self.mean_, self.scale_ = self._input_stats(X, trajectories.rows) if self.standardize else (None, None)

        weights = self._initial_weights(n_probes, k, device)
        optimizer = torch.optim.AdamW(  # fused: one kernel per tensor, ~8x faster steps on CPU than the default
            weights.values(), lr=self.lr, weight_decay=self.weight_decay, fused=device.type in ("cpu", "cuda")
        )
        rows = torch.as_tensor(trajectories.rows, device=X.device)
        offsets = trajectories.offsets.tolist()
        lengths = torch.as_tensor(trajectories.lengths, device=device)
        rewards = torch.as_tensor(trajectories.rewards, device=device)
        order = torch.Generator().manual_seed(self.seed)
        label = self.progress if isinstance(self.progress, str) else f"{n_probes} probes"
        best = {name: w.detach().clone() for name, w in weights.items()}
        best_loss = torch.full((n_probes,), float("inf"))
        self.best_epoch_ = torch.zeros(n_probes, dtype=torch.long)  # epochs behind the kept weights
        train_curve, validation_curve = [], []  # per epoch: [P] mean training loss / validation MSE
        for epoch in tqdm(range(1, self.epochs + 1), desc=label, disable=None if self.progress else True, leave=False):
            total = torch.zeros(n_probes, device=device)  # summed on device: no GPU sync per step
            for batch in torch.randperm(len(trajectories), generator=order).split(self.batch_trajectories):
                batch = batch.tolist()
                batch_rows = torch.cat([rows[offsets[i] : offsets[i + 1]] for i in batch])
                values = self._forward(weights, self._inputs(X, batch_rows))
                targets = lambda_returns(
                    values.detach(), lengths[batch], rewards[batch], self.gamma, self.td_lambda
                )
                per_probe = (values - targets).pow(2).mean(dim=1)  # each probe's own MSE; their sum trains
                optimizer.zero_grad(set_to_none=True)  # every probe independently
                per_probe.sum().backward()
                optimizer.step()
                total += per_probe.detach() * len(batch)
            train_curve.append((total / len(trajectories)).cpu())
            if validation is None:
                continue
            validation_curve.append(self._reward_mse(weights, X, validation))
            improved = validation_curve[-1] < best_loss - self.tol
            if self.patience is None:  # no early stopping: the last epoch's weights are kept
                improved[:] = True
            best_loss = torch.where(improved, validation_curve[-1], best_loss)
            self.best_epoch_[improved] = epoch
            mask = improved.to(device)
            for name, w in weights.items():
                best[name][mask] = w.detach()[mask]
            if self.patience is not None and bool((epoch - self.best_epoch_ >= self.patience).all()):
                break
        final = {name: w.detach() for name, w in weights.items()}
        self.weights_ = best if validation is not None else final
        if validation is None:
            self.best_epoch_[:] = len(train_curve)
        self.n_epochs_ = len(train_curve)
        self.loss_curve_ = torch.stack(train_curve).T.tolist() if train_curve else [[] for _ in range(n_probes)]
        self.validation_curve_ = (torch.stack(validation_curve).T.tolist() if validation_curve
                                  else [[] for _ in range(n_probes)])
        self.feature_scores_ = self.weights_["W1"].abs().sum(dim=-1)  # [P, k]: L1 norm of each input's weights
        return self

    def _reward_mse(self, weights: dict, X: torch.Tensor, validation: Trajectories) -> torch.Tensor:
        """[P] mean squared error of V against each state's terminal reward, over the validation states."""
        with torch.no_grad():
            rows = torch.as_tensor(validation.rows)
            rewards = torch.as_tensor(np.repeat(validation.rewards, validation.lengths))
            total = torch.zeros(len(self.sources_))
            for chunk, target in zip(rows.split(PREDICT_CHUNK), rewards.split(PREDICT_CHUNK)):
                v = self._forward(weights, self._inputs(X, chunk)).cpu()
                total += (v - target).pow(2).sum(dim=1)
            return total / max(len(rows), 1)

    def _check_params(self) -> None:
        for name, allowed in (("arch", ("mlp", "linear")), ("output", ("sigmoid", "linear"))):
            if getattr(self, name) not in allowed:
                raise RewardscopeError(f"probe.{name}: {getattr(self, name)!r} is not one of {list(allowed)}")
        if not 0 <= self.td_lambda <= 1:
            raise RewardscopeError(f"probe.td_lambda: {self.td_lambda} is not between 0 and 1")
        checks = (
            ("gamma", 0 < self.gamma <= 1, "in (0, 1]"),
            ("hidden", _is_int(self.hidden) and self.hidden >= 1, "an integer >= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("batch_trajectories", _is_int(self.batch_trajectories) and self.batch_trajectories >= 1,
             "an integer >= 1"),
            ("epochs", _is_int(self.epochs) and self.epochs >= 0, "an integer >= 0"),
            ("tol", self.tol >= 0, ">= 0"),
            ("patience", self.patience is None or (_is_int(self.patience) and self.patience >= 1),
             "null (no early stopping) or an integer >= 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise RewardscopeError(f"probe.{name}: {getattr(self, name)!r} is not {expected}")

    def _initial_weights(self, n_probes: int, k: int, device: torch.device) -> dict[str, torch.Tensor]:
        # One draw, copied to every probe: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as nn.Linear's default.
        g = torch.Generator().manual_seed(self.seed)
        width = self.hidden if self.arch == "mlp" else 1

        def uniform(shape, fan_in):
            return (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(fan_in)

        weights = {"W1": uniform((k, width), k), "b1": uniform((width,), k)}
        if self.arch == "mlp":
            weights.update(W2=uniform((width,), width), b2=uniform((), width))
        return {
            name: w.expand(n_probes, *w.shape).contiguous().to(device).requires_grad_()
            for name, w in weights.items()
        }

    def _input_stats(self, X: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-probe mean and standard deviation [P, k] of its inputs over the training states."""
        device = torch.device(self.device)
        layers = torch.unique(self.sources_)
        total = torch.zeros(len(layers), X.shape[2], dtype=torch.float64, device=device)
        squares = torch.zeros_like(total)
        for chunk in torch.as_tensor(rows).split(PREDICT_CHUNK):
            x = X[layers.to(X.device)[:, None], chunk.to(X.device)[None, :]].to(device, torch.float64)
            total += x.sum(dim=1)
            squares += x.square().sum(dim=1)
        mean = total / len(rows)
        std = (squares / len(rows) - mean.square()).clamp(min=0).sqrt()
        std[std < 1e-6] = 1.0  # a constant input carries nothing; z = 0 instead of 0 / 0
        probe_layer = torch.searchsorted(layers, self.sources_).to(device)
        mean, std = mean[probe_layer].float(), std[probe_layer].float()
        if self.dims_ is not None:
            mean, std = mean.gather(1, self.dims_), std.gather(1, self.dims_)
        return mean, std

    # ------------------------------------------------------------------------------------------------------
    # Inference

    def _inputs(self, X: torch.Tensor, rows: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Each probe's inputs [P, n, k] for `rows` of X: gathered, float32 on device, standardized, masked."""
        probes, rows = self.sources_.to(X.device)[:, None], rows.to(X.device)[None, :]
        if self.dims_ is None:
            x = X[probes, rows]
        else:  # one advanced index straight to [P, n, k]: no [P, n, d] intermediate
            x = X[probes[:, :, None], rows[:, :, None], self.dims_.to(X.device)[:, None, :]]
        x = x.to(self.device).float()
        if self.mean_ is not None:
            x = (x - self.mean_[:, None, :]) / self.scale_[:, None, :]
        if keep is not None:  # zeroing a standardized input = setting the feature to its training mean
            x = x * keep.to(x.device, x.dtype)[:, None, :]
        return x

    def _forward(self, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        a = torch.baddbmm(weights["b1"][:, None, :], x, weights["W1"])  # [P, n, width]
        if self.arch == "mlp":
            # width -> 1 as multiply-and-sum: a batched matrix-vector product is the slow case of bmm on CPU
            # (its backward took ~20% of a fit), and this is the same sum.
            v = (a.relu() * weights["W2"][:, None, :]).sum(dim=-1) + weights["b2"][:, None]
        else:
            v = a[..., 0]
        return v.sigmoid() if self.output == "sigmoid" else v

    @torch.no_grad()
    def predict(self, X: torch.Tensor, rows=None, keep=None) -> torch.Tensor:
        """V of `rows` of X (default: all) for every probe: [P, n] float32 on the CPU.

        keep [P, k] (bool): inputs outside it are zeroed after standardization (pruning without retraining).
        """
        check_is_fitted(self, "weights_")
        rows = torch.arange(X.shape[1]) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        keep = None if keep is None else torch.as_tensor(keep)
        chunks = [self._forward(self.weights_, self._inputs(X, c, keep)).cpu() for c in rows.split(PREDICT_CHUNK)]
        return torch.cat(chunks, dim=1) if chunks else torch.zeros(len(self.sources_), 0)

    def select(self, probes) -> LayerwiseValueProbes:
        """A fitted copy holding only `probes` (indices), each still reading its own layer of X."""
        check_is_fitted(self, "weights_")
        idx = torch.as_tensor(probes, dtype=torch.long).reshape(-1)
        model = clone(self)
        model.weights_ = {name: w[idx.to(w.device)] for name, w in self.weights_.items()}
        for name in ("mean_", "scale_", "dims_", "sources_", "best_epoch_"):
            value = getattr(self, name, None)
            setattr(model, name, None if value is None else value[idx.to(value.device)])
        model.feature_scores_ = model.weights_["W1"].abs().sum(dim=-1)
        model.n_epochs_ = getattr(self, "n_epochs_", None)
        for name in ("loss_curve_", "validation_curve_"):
            curves = getattr(self, name, None)
            setattr(model, name, None if curves is None else [curves[i] for i in idx.tolist()])
        return model

    # ------------------------------------------------------------------------------------------------------
    # Saving (safetensors: no pickle)

    def state_tensors(self, probe: int) -> dict[str, torch.Tensor]:
        """Probe `probe`'s learned tensors: weights, input statistics and input dims, on the CPU."""
        check_is_fitted(self, "weights_")
        out = {name: w[probe].cpu() for name, w in self.weights_.items()}
        if self.mean_ is not None:
            out.update(mean=self.mean_[probe].cpu(), scale=self.scale_[probe].cpu())
        if self.dims_ is not None:
            out["dims"] = self.dims_[probe].cpu()
        return out

    @classmethod
    def from_state_tensors(cls, params: dict, probes: list[dict[str, torch.Tensor]]) -> LayerwiseValueProbes:
        """Probes rebuilt from hyper-parameters and state_tensors() of each; probe p reads layer p of X."""
        model = cls(**params)
        device = torch.device(model.device)

        def stack(name):
            return torch.stack([p[name] for p in probes]).to(device) if name in probes[0] else None

        model.weights_ = {n: stack(n) for n in ("W1", "b1", "W2", "b2") if n in probes[0]}
        model.mean_, model.scale_, model.dims_ = stack("mean"), stack("scale"), stack("dims")
        model.sources_ = torch.arange(len(probes))
        model.feature_scores_ = model.weights_["W1"].abs().sum(dim=-1)
        return model  # training curves are in the stage's results.json, not in the tensors


class ValueProbe(LayerwiseValueProbes):
    """One value probe on states X [N, d]: LayerwiseValueProbes with a single probe.

    feature_scores_ is [k], loss_curve_ and validation_curve_ are that probe's lists; every other learned
    attribute keeps a leading probe axis of size 1.
    """

    def fit(self, X: torch.Tensor, trajectories: Trajectories, dims=None,
            validation: Trajectories | None = None) -> ValueProbe:
        super().fit(X[None], trajectories, dims=None if dims is None else torch.as_tensor(dims)[None],
                    validation=validation)
        return self._single()

    def _single(self) -> ValueProbe:
        self.feature_scores_ = self.feature_scores_[0]
        self.loss_curve_, self.validation_curve_ = self.loss_curve_[0], self.validation_curve_[0]
        return self

    def predict(self, X: torch.Tensor, rows=None, keep=None) -> torch.Tensor:
        """V of `rows` of X [N, d]: [n] float32 on the CPU."""
        return super().predict(X[None], rows, None if keep is None else torch.as_tensor(keep)[None])[0]

    def select(self, probes) -> ValueProbe:
        """A copy of this one probe (`probes` must be [0]): the shapes of its learned attributes are kept."""
        if torch.as_tensor(probes).reshape(-1).tolist() != [0]:
            raise RewardscopeError(f"ValueProbe.select: a single probe has only index 0, not {probes!r}")
        return LayerwiseValueProbes.select(self._lift(), [0])._single()

    def _lift(self) -> ValueProbe:
        """A copy whose learned attributes have the probe axis back, as LayerwiseValueProbes keeps them."""
        model = clone(self)
        for name in ("weights_", "mean_", "scale_", "dims_", "sources_", "best_epoch_", "n_epochs_"):
            setattr(model, name, getattr(self, name, None))
        model.feature_scores_ = self.feature_scores_[None]
        model.loss_curve_, model.validation_curve_ = [self.loss_curve_], [self.validation_curve_]
        return model


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
