"""Interventions on the residual stream during generation: zero some coordinates, fill them with their mean, or
project directions out, at the output of chosen decoder blocks (docs/ablation.md).

    with ablate(model, {2: [17, 40, 93]}):                          # zero dims 17, 40, 93 of block 2's output
        out = generate(model, tokenizer, prompts, temperature=0)
    out = generate(model, tokenizer, prompts, hooks=ablate(model, {2: probe_direction}, mode="project").hooks)

`ablate(...)` checks everything (layers, dims, widths, means) when it is called, so bad input fails before a single
token is generated; the returned `Ablation` is a context manager (its hooks are registered in the body and removed
when it exits, even if it raised) and holds `.hooks`, the `{layer: fn}` dict that `residual_hooks` and
`rewardscope.rollout.hf.generate(hooks=...)` take. Layer L is the output of decoder block L (HF
`hidden_states[L + 1]`; for the last block, before the final norm): the convention of `rewardscope.hooks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from rewardscope.errors import RewardscopeError
from rewardscope.hooks import HiddenFn, HookPoint, num_layers, residual_hooks, resolve_layers

MODES = ("zero", "mean", "project")
POSITIONS = ("all", "generated", "prompt")
# A direction whose component outside the span of the ones before it is below this fraction of its norm adds no
# dimension of its own (float64 Gram-Schmidt is exact to ~1e-15, float32 inputs to ~1e-7).
DEPENDENT_TOLERANCE = 1e-6

Mode = Literal["zero", "mean", "project"]
PositionFn = Callable[[HookPoint], "torch.Tensor"]


def ablate(
    model: nn.Module,
    targets: Mapping,
    mode: Mode = "zero",
    positions: Literal["all", "generated", "prompt"] | PositionFn = "all",
    means: Mapping | None = None,
    *,
    allow_empty: bool = False,
) -> Ablation:
    """An intervention on `model`'s residual stream, checked now; use it as `with ablate(...):` or pass `.hooks`.

    targets: {layer: dims} for modes "zero" and "mean" (distinct ints in 0..d-1; duplicates are refused), or
        {layer: direction} for "project" (a vector [d], or [k, d] directions: their span is projected out).
    mode: "zero": the dims become 0. "mean": the dims become `means[layer][dim]`. "project": h <- h - Q Q^T h with
        Q an orthonormal basis of the directions' span (Gram-Schmidt in float64, in the order given).
    positions: which tokens of each forward: "all", "generated" (sampled tokens: the KV-cached decode steps of
        `generate`), "prompt" (the rest, padding included), or a function of the `HookPoint` returning a bool mask
        [seq] or [batch, seq].
    means: {layer: tensor [d]}, required by mode "mean" and refused by the others (capture_means reads them from a
        capture).
    allow_empty: an empty dims list (or [0, d] directions, or an empty `targets`) is refused unless this is True,
        because a selection that came out empty would otherwise measure "no effect" silently; True makes it a
        deliberate no-op (the 0-neuron point of a sweep), whose hooks still run and change nothing.
    """
    return Ablation(model, targets, mode, positions, means, allow_empty=allow_empty)


class Ablation:
    """A checked intervention (see `ablate`). `.hooks`: {layer: fn(hidden, hook)}; `with ablation:` registers
    them on the model for the body (nested and repeated use is fine). Every mode is idempotent (project: up to
    rounding), so applying one twice, by the context manager and `hooks=` together, changes nothing more."""

    def __init__(self, model, targets, mode="zero", positions="all", means=None, *, allow_empty=False):
        if mode not in MODES:
            raise RewardscopeError(f"ablate: mode {mode!r} is not one of {list(MODES)}")
        if not (callable(positions) or (isinstance(positions, str) and positions in POSITIONS)):
            raise RewardscopeError(
                f"ablate: positions {positions!r} is not one of {list(POSITIONS)} or a function hook -> bool mask"
            )
        if means is not None and mode != "mean":
            raise RewardscopeError(f"ablate: means are only used by mode 'mean', not {mode!r}")
        if not isinstance(targets, Mapping):
            raise RewardscopeError(
                f"ablate: targets must be a dict {{layer: dims or direction}}, got {type(targets).__name__}"
            )
        if not targets and not allow_empty:
            raise RewardscopeError("ablate: no layers given: nothing would be ablated "
                                   "(pass allow_empty=True for a deliberate no-op)")
        self.model = model
        self.mode: str = mode
        self.positions = positions
        self.width = residual_width(model)
        targets = {int(k) if isinstance(k, np.integer) else k: v for k, v in targets.items()}
        self.layers: list[int] = resolve_layers(list(targets), num_layers(model)) if targets else []
        self.dims: dict[int, torch.Tensor] = {}  # zero / mean: long [k]
        self.fills: dict[int, torch.Tensor] = {}  # zero / mean: float32 [k], the values the dims take
        self.bases: dict[int, torch.Tensor] = {}  # project: float32 [d, k], orthonormal columns
        if mode == "mean":
            if means is None:
                raise RewardscopeError("ablate: mode 'mean' needs means={layer: tensor[d]} "
                                       "(e.g. rewardscope.ablate.capture_means(capture_dir))")
            if not isinstance(means, Mapping):
                raise RewardscopeError(f"ablate: means must be a dict {{layer: tensor[d]}}, got {type(means).__name__}")
        for layer in self.layers:
            value = targets[layer]
            if mode == "project":
                self.bases[layer] = _basis(layer, value, self.width, allow_empty)
                continue
            dims = _dims(layer, value, self.width, allow_empty)
            self.dims[layer] = torch.tensor(dims, dtype=torch.long)
            if mode == "zero":
                self.fills[layer] = torch.zeros(len(dims))
            else:
                self.fills[layer] = _mean(layer, means, self.width)[self.dims[layer]]
        self.hooks: dict[int, HiddenFn] = {layer: self._hook(layer) for layer in self.layers}
        self._open: list = []  # the residual_hooks contexts of nested `with` blocks
        self._cache: dict = {}  # (layer, device, dtype) -> tensors moved there

    # -- the context manager -------------------------------------------------------------------------------------
    def __enter__(self) -> Ablation:
        context = residual_hooks(self.model, self.hooks)
        context.__enter__()
        self._open.append(context)
        return self

    def __exit__(self, *exc) -> bool | None:
        return self._open.pop().__exit__(*exc)

    def summary(self) -> dict:
        """What is ablated, JSON-ready (for an artifact's metadata): mode, positions, per layer the dims or the
        number of directions."""
        where = self.positions if isinstance(self.positions, str) else "custom"
        if self.mode == "project":
            layers = {str(layer): {"directions": int(self.bases[layer].shape[1])} for layer in self.layers}
        else:
            layers = {str(layer): {"dims": self.dims[layer].tolist()} for layer in self.layers}
        return {"mode": self.mode, "positions": where, "width": self.width, "layers": layers}

    def __repr__(self) -> str:
        s = self.summary()
        return f"Ablation(mode={s['mode']!r}, positions={s['positions']!r}, layers={s['layers']})"

    # -- the hook functions --------------------------------------------------------------------------------------
    def _hook(self, layer: int) -> HiddenFn:
        def fn(hidden: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
            mask = self._mask(hidden, hook)
            if mask is not None and not bool(mask.any()):
                return None  # nothing selected in this forward: the output stays as it is
            if self.mode == "project":
                compute = torch.promote_types(hidden.dtype, torch.float32)
                basis = self._on(layer, "basis", self.bases[layer], hidden.device, compute)
                h = hidden.to(compute)
                new = (h - (h @ basis) @ basis.T).to(hidden.dtype)
                return new if mask is None else torch.where(mask.unsqueeze(-1), new, hidden)
            index = self._on(layer, "index", self.dims[layer], hidden.device, torch.long)
            fill = self._on(layer, "fill", self.fills[layer], hidden.device, hidden.dtype)
            out = hidden.clone()  # never in place: an earlier reader of this block may hold `hidden`
            out[..., index] = fill if mask is None else torch.where(mask.unsqueeze(-1), fill, hidden[..., index])
            return out

        return fn

    def _mask(self, hidden: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
        """None: every token of this forward; else a bool mask [seq] or [batch, seq] on hidden's device."""
        if self.positions == "all":
            return None
        if self.positions == "generated":
            return hook.generated.to(hidden.device)
        if self.positions == "prompt":
            return (~hook.generated).to(hidden.device)
        mask = torch.as_tensor(self.positions(hook), device=hidden.device)
        batch, seq = hidden.shape[0], hidden.shape[1]
        if mask.dtype != torch.bool or tuple(mask.shape) not in ((seq,), (batch, seq)):
            raise RewardscopeError(
                f"ablate: the positions function returned a {mask.dtype} tensor of shape {tuple(mask.shape)} at "
                f"layer {hook.layer}; expected a bool mask of shape ({seq},) or ({batch}, {seq})"
            )
        return mask

    def _on(self, layer: int, name: str, tensor: torch.Tensor, device, dtype) -> torch.Tensor:
        key = (layer, name, device, dtype)
        if key not in self._cache:
            self._cache[key] = tensor.to(device=device, dtype=dtype)
        return self._cache[key]


# ----------------------------------------------------------------------------------------------------------------
# Checking the input


def residual_width(model: nn.Module) -> int:
    """d, the width of the residual stream (the config's hidden_size; else the input embeddings' width)."""
    config = getattr(model, "config", None)
    if config is not None:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        width = getattr(text, "hidden_size", None)
        if isinstance(width, int):
            return width
    if hasattr(model, "get_input_embeddings"):
        return int(model.get_input_embeddings().embedding_dim)
    raise RewardscopeError(f"cannot tell the residual width of {type(model).__name__}: no config.hidden_size")


def _dims(layer: int, value, width: int, allow_empty: bool) -> list[int]:
    where = f"ablate: layer {layer}"
    if isinstance(value, (torch.Tensor, np.ndarray)):
        kind = str(value.dtype)
        integer = (not value.dtype.is_floating_point and not value.dtype.is_complex and value.dtype != torch.bool
                   if isinstance(value, torch.Tensor) else np.issubdtype(value.dtype, np.integer))
        if not integer or value.ndim != 1:
            raise RewardscopeError(f"{where}: dims must be a 1-D list of ints, got a {kind} array of shape "
                                   f"{tuple(value.shape)} (mode 'project' takes directions)")
        dims = [int(d) for d in value.tolist()]
    elif isinstance(value, (list, tuple, range)):
        bad = [d for d in value if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer))]
        if bad:
            raise RewardscopeError(f"{where}: dims must be ints, got {bad[0]!r} "
                                   f"(mode 'project' takes a direction vector instead)")
        dims = [int(d) for d in value]
    else:
        raise RewardscopeError(f"{where}: dims must be a list of ints, got {type(value).__name__} {value!r}")
    if not dims and not allow_empty:
        raise RewardscopeError(f"{where}: empty list of dims: nothing would be ablated "
                               f"(pass allow_empty=True for a deliberate no-op)")
    for d in dims:
        if not 0 <= d < width:
            raise RewardscopeError(f"{where}: dim {d} is out of range: the residual stream has width {width}, "
                                   f"valid 0..{width - 1}")
    seen = set()
    for d in dims:
        if d in seen:
            raise RewardscopeError(f"{where}: dim {d} is listed {dims.count(d)} times; dims must be distinct "
                                   f"(a control's count would silently shrink)")
        seen.add(d)
    return dims


def _floats(where: str, value, what: str) -> torch.Tensor:
    try:
        if isinstance(value, torch.Tensor):
            if value.dtype == torch.bool or value.is_complex():
                raise TypeError
            tensor = value.detach().to(device="cpu", dtype=torch.float64)
        else:
            tensor = torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise RewardscopeError(f"{where}: {what} must be numbers, got {type(value).__name__}") from None
    if not torch.isfinite(tensor).all():
        raise RewardscopeError(f"{where}: {what} has non-finite values (nan or inf)")
    return tensor


def _basis(layer: int, value, width: int, allow_empty: bool) -> torch.Tensor:
    """float32 [width, k]: orthonormal columns spanning the given directions (float64 Gram-Schmidt)."""
    where = f"ablate: layer {layer}"
    directions = _floats(where, value, "the direction")
    if directions.ndim not in (1, 2) or directions.shape[-1] != width:
        raise RewardscopeError(
            f"{where}: a direction must be a vector [{width}] or directions [k, {width}] (the residual stream's "
            f"width), got shape {tuple(directions.shape)}"
        )
    directions = directions.reshape(-1, width)
    if directions.shape[0] == 0 and not allow_empty:
        raise RewardscopeError(f"{where}: no directions (shape [0, {width}]): nothing would be ablated "
                               f"(pass allow_empty=True for a deliberate no-op)")
    basis: list[torch.Tensor] = []
    for i, v in enumerate(directions):
        norm = float(v.norm())
        if norm == 0:
            raise RewardscopeError(f"{where}: direction {i} is the zero vector: it has no direction to project out")
        r = v / norm
        for _ in range(2):  # twice: Gram-Schmidt stays orthogonal to float64 precision ("twice is enough")
            for q in basis:
                r = r - (q @ r) * q
        if float(r.norm()) < DEPENDENT_TOLERANCE:
            raise RewardscopeError(f"{where}: direction {i} lies in the span of the directions before it "
                                   f"(k directions must be linearly independent)")
        basis.append(r / r.norm())
    stacked = torch.stack(basis, dim=1) if basis else torch.zeros(width, 0, dtype=torch.float64)
    return stacked.to(torch.float32)


def _mean(layer: int, means: Mapping, width: int) -> torch.Tensor:
    where = f"ablate: mode 'mean', layer {layer}"
    if layer not in means:
        raise RewardscopeError(f"{where}: no mean given (means has layers {sorted(means, key=str)})")
    mean = _floats(where, means[layer], "the mean")
    if tuple(mean.shape) != (width,):
        raise RewardscopeError(f"{where}: the mean has shape {tuple(mean.shape)}, expected ({width},): one value "
                               f"per coordinate of the residual stream")
    return mean.to(torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Means for mode "mean"


def capture_means(capture, layers: list[int] | None = None, rows=None, chunk_rows: int = 16384, *,
                  absolute: bool = False) -> dict:
    """{layer: float32 tensor [d]}: the mean captured state of each layer (default: all captured layers) over
    `rows` (default: every row), accumulated in float64, `chunk_rows` states at a time. `absolute=True`: the mean
    of |state| per dim instead (activation magnitude, for magnitude-matched controls), not a fill value.

    `capture` is a capture directory or a `CaptureReader`. Its rows are s_0 and the generated tokens ("all") or
    s_0 and the step ends ("steps"), never the prompt's other tokens (so not the attention sink at position 0);
    pick rows with the index columns, e.g. the training problems' "token" rows:
    `np.flatnonzero(reader.index["position_kind"].to_numpy(zero_copy_only=False) == "token")`.
    """
    from rewardscope.readers import CaptureReader

    reader = capture if isinstance(capture, CaptureReader) else CaptureReader(Path(capture))
    rows = np.arange(len(reader)) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size == 0:
        raise RewardscopeError(f"{reader.capture_dir}: capture_means over no rows")
    if chunk_rows < 1:
        raise RewardscopeError(f"capture_means: chunk_rows must be >= 1, got {chunk_rows}")
    means = {}
    for layer in reader.layers if layers is None else layers:
        total = torch.zeros(reader.hidden_size, dtype=torch.float64)
        for start in range(0, rows.size, chunk_rows):
            states = reader.load(layer, rows[start : start + chunk_rows]).to(torch.float64)
            total += (states.abs() if absolute else states).sum(0)
        means[layer] = (total / rows.size).to(torch.float32)
    return means


__all__ = ["Ablation", "DEPENDENT_TOLERANCE", "MODES", "POSITIONS", "ablate", "capture_means", "residual_width"]
