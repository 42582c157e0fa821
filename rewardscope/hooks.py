"""Residual-stream hooks on the decoder blocks of any Hugging Face causal LM.

Layer L is the output of decoder block L (0-based), i.e. Hugging Face's `hidden_states[L + 1]`; for the last
block that is the state *before* the final norm (HF's own last entry is after it). Everything goes through one
context manager, `residual_hooks`: its functions `fn(hidden, hook)` read a block's output (capture) or return a
replacement (ablation: zero or mean-fill some dims), and its hooks are removed when the block exits, even if it
raised. `hook` is a `HookPoint`: the layer, and the absolute positions of the tokens in the current forward (a
prompt forward, or one KV-cached decode step of `generate`), so an intervention can act on generated tokens only.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch
from torch import nn

from rewardscope.errors import RewardscopeError

# Where each architecture family keeps its decoder blocks, as an attribute path from the *ForCausalLM model.
LAYER_PATHS = {
    "model.layers": "Llama, Qwen2/3, Phi-3, Gemma-2/3, Mistral, Mixtral and most recent models",
    "transformer.h": "GPT-2, GPT-J, Falcon, Bloom",
    "gpt_neox.layers": "GPT-NeoX, Pythia",
}



@dataclass(frozen=True)
class HookPoint:
    """Where a hook function is called: decoder block `layer`, in a forward over `positions`.

    positions [seq]: absolute positions (in the padded batch) of this forward's tokens: 0..T-1 for a prompt or
    teacher-forced forward, past_length.. for a KV-cached step. prompt_width: the width of the last forward that
    started at position 0 (in `generate`, the padded prompt), so `generated` marks the tokens sampled so far.
    """

    layer: int
    positions: torch.Tensor
    prompt_width: int

    @property
    def generated(self) -> torch.Tensor:
        """[seq] bool: which of this forward's tokens are generated (not part of the prompt)."""
        return self.positions >= self.prompt_width


HiddenFn = Callable[[torch.Tensor, HookPoint], "torch.Tensor | None"]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of `model`, in order."""
    for path in LAYER_PATHS:
        module = _get_path(model, path)
        if isinstance(module, nn.ModuleList):
            return module
    # Generic fallback (OPT's model.decoder.layers, multimodal wrappers...): the one ModuleList whose length is
    # the config's number of layers.
    n = _config_num_layers(model)
    found = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and n and len(m) == n]
    if len(found) == 1:
        return model.get_submodule(found[0])
    detail = f"several candidates {found}" if found else f"none of {list(LAYER_PATHS)} exists"
    raise RewardscopeError(
        f"cannot find the decoder layers of {type(model).__name__} ({detail}); "
        f"add its attribute path to rewardscope.hooks.LAYER_PATHS"
    )


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def resolve_layers(layers: list[int] | Literal["all"], n_layers: int) -> list[int]:
    """Sorted distinct block indices; "all" -> 0..n_layers-1. Negative indices are refused (ambiguous)."""
    if layers == "all":
        return list(range(n_layers))
    if not layers:
        raise RewardscopeError("layers: empty list (use \"all\" or block indices)")
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n_layers:
            raise RewardscopeError(
                f"layer {layer!r} is out of range: the model has {n_layers} decoder layers, valid 0..{n_layers - 1}"
            )
    return sorted(set(layers))


class _StopForward(Exception):
    """Raised after the last block a caller needs; `residual_hooks` swallows it."""


@contextmanager
def residual_hooks(model: nn.Module, fns: dict[int, HiddenFn], stop_after: int | None = None) -> Iterator[None]:
    """During the body, call `fns[L](hidden, hook)` on the output [batch, seq, d] of decoder block L at every
    forward of `model` (the *ForCausalLM model that is called, or that `generate` runs).

    A function returning a tensor replaces the block's output (ablation); returning None leaves it as it is.
    Several `residual_hooks` on one block compose: each function sees the output the previous one returned.
    `stop_after=L` ends the forward right after block L: later blocks, the final norm and the LM head never run
    (saving their time and the logits' memory). The model call then returns nothing and the `with` body ends
    there, so it must be the body's last statement.
    """
    blocks = decoder_layers(model)
    named = [*fns, *([stop_after] if stop_after is not None else [])]
    if named:
        resolve_layers(named, len(blocks))  # refuse a bad index before registering anything
    where = _Positions()
    handles = []
    try:
        handles.append(model.register_forward_pre_hook(where.track, with_kwargs=True))
        for layer, fn in fns.items():
            handles.append(blocks[layer].register_forward_hook(_output_hook(fn, layer, where)))
            _recorders_last(blocks[layer])
        if stop_after is not None:  # registered last, so the functions of that block run first
            handles.append(blocks[stop_after].register_forward_hook(_stop))
        yield
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


def _recorders_last(block: nn.Module) -> None:
    """Move transformers' own `output_hidden_states` recorders behind our hooks on `block`: they are installed
    once, at a model's first call with output_hidden_states=True, and would otherwise record the block's output
    from before a replacement made by any hook registered after them."""
    for key, hook in list(block._forward_hooks.items()):
        if getattr(hook, "__name__", "") == "output_capturing_hook":
            block._forward_hooks.move_to_end(key)


class _Positions:
    """Tracks the positions of the current forward of the model (a pre-hook on its forward)."""

    def __init__(self):
        self.positions: torch.Tensor | None = None
        self.prompt_width = 0

    def track(self, module, args, kwargs) -> None:
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs["inputs_embeds"]
        # The KV cache: `cache` in transformers >= 5.2x, `past_key_values` before (and in some models).
        past = next((kwargs[k] for k in ("cache", "past_key_values") if kwargs.get(k) is not None), None)
        start = past.get_seq_length() if hasattr(past, "get_seq_length") else 0
        self.positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        if start == 0:
            self.prompt_width = tokens.shape[1]

    def point(self, layer: int) -> HookPoint:
        if self.positions is None:
            raise RuntimeError("residual_hooks: a decoder block ran outside a forward of the hooked model")
        return HookPoint(layer, self.positions, self.prompt_width)


def _output_hook(fn: HiddenFn, layer: int, where: _Positions):
    def hook(module, args, output):
        # Decoder blocks return a tensor in recent transformers, a tuple (hidden, ...) in older ones.
        is_tuple = isinstance(output, tuple)
        new = fn(output[0] if is_tuple else output, where.point(layer))
        if new is None:
            return None
        return (new, *output[1:]) if is_tuple else new

    return hook


def _stop(module, args, output):
    raise _StopForward


def _get_path(model: nn.Module, path: str) -> nn.Module | None:
    node = model
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def _config_num_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "num_hidden_layers", None)
