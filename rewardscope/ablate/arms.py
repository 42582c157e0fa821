"""Which coordinates (or directions) each arm of the ablation experiment removes (docs/ablation.md, method.md 5).

Every function here is pure: rankings and statistics in, dims out, so each rule is tested on its own. The
experiment stage (rewardscope.ablate.stage) computes the inputs from the probe and capture artifacts.

Arms, for one layer L and k dims (k = round(fraction * d), at least 1):
  value              the top k dims of the main value probe (L1 norm of its first-layer weights per input dim)
  random             k dims drawn uniformly, attention-sink dims excluded (`sink_dims`); several draws
  magnitude_matched  for each value dim, a dim of about the same activation RMS, not a sink (`magnitude_matched`); draws
  magnitude          the k dims of largest activation RMS
  terminal           the top k dims of the Monte-Carlo probe (every state regressed on the terminal reward: the
                     paper's Appendix A "terminal-reward-only" probe)
  next_token         the top k dims of a linear next-token-prediction probe (`next_token_scores`)
  wanda              the top k dims by |weight| x input norm over the next block's input projections (`wanda_scores`)
  direction          the layer's linear reward direction projected out, against `random_direction` draws
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rewardscope.errors import RewardscopeError
from rewardscope.hooks import decoder_layers

ARMS = ("value", "random", "magnitude_matched", "magnitude", "terminal", "next_token", "wanda", "direction",
        "random_direction")  # the recipe's ablate.arms choose among these


def count(fraction: float, d: int) -> int:
    """Dims an arm removes at `fraction` of the width: round(fraction * d), at least one."""
    return max(1, round(fraction * d))


def top(scores: np.ndarray, k: int) -> list[int]:
    """The k highest-scoring dims, highest first (ties: lower dim first)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [int(i) for i in order[:k]]


def sink_dims(first_token: np.ndarray, ratio: float) -> list[int]:
    """Attention-sink dims: those whose mean |activation| at a prompt's first token is over `ratio` times the
    median over dims of that mean ("massive activations", Sun et al. 2024, are 100-10,000x the median there).
    `first_token`: [prompts, d] states of the first token of several prompts."""
    magnitude = np.abs(np.asarray(first_token, dtype=np.float64)).mean(0)
    median = float(np.median(magnitude))
    return [int(i) for i in np.flatnonzero(magnitude > ratio * median)] if median > 0 else []


def _rng(seed: int, layer: int, k: int, draw: int, arm: str) -> np.random.Generator:
    return np.random.default_rng([seed, layer, k, draw, sum(map(ord, arm))])


def random_dims(d: int, k: int, excluded: list[int], *, seed: int, layer: int, draw: int) -> list[int]:
    """k dims drawn uniformly from those not `excluded`, sorted; fixed by (seed, layer, k, draw)."""
    allowed = np.setdiff1d(np.arange(d), np.asarray(excluded, dtype=np.int64))
    if k > len(allowed):
        raise RewardscopeError(f"ablate: {k} random dims requested at layer {layer}, but only {len(allowed)} of {d} "
                               f"are not attention-sink dims")
    return sorted(int(i) for i in _rng(seed, layer, k, draw, "random").choice(allowed, size=k, replace=False))


def magnitude_matched(rms: np.ndarray, dims: list[int], *, seed: int, layer: int, draw: int, window: int = 5,
                      excluded: list[int] = ()) -> tuple[list[int], dict]:
    """For each of `dims` (in order), a dim drawn uniformly among the 2 x `window` dims nearest to it in log
    activation RMS that are neither in `dims`, nor drawn already, nor `excluded` (attention-sink dims: a sink
    is matched only to a value dim that is a sink itself; at the top of the RMS distribution a rank neighbour
    can be 10x larger, and one such draw broke SmolLM2). Returns (the drawn dims, the matching quality: mean
    |log(rms drawn / rms matched)| and the ratio of their summed RMS)."""
    rms = np.asarray(rms, dtype=np.float64)
    log_rms = np.log(np.maximum(rms, 1e-30))
    taken, sinks = set(dims), set(excluded)
    rng = _rng(seed, layer, len(dims), draw, "magnitude_matched")
    drawn = []
    for dim in dims:
        free = [c for c in range(len(rms)) if c not in taken and (dim in sinks or c not in sinks)]
        if not free:
            raise RewardscopeError(f"ablate: no dim left to match dim {dim} of layer {layer} by magnitude "
                                   f"({len(dims)} of {len(rms)} dims to match)")
        nearest = sorted(free, key=lambda c: (abs(log_rms[c] - log_rms[dim]), c))[: 2 * window]
        pick = int(rng.choice(nearest))
        taken.add(pick)
        drawn.append(pick)
    log_ratio = np.abs(log_rms[drawn] - log_rms[dims])
    quality = {"mean_abs_log_rms_ratio": float(log_ratio.mean()),
               "summed_rms_ratio": float(rms[drawn].sum() / max(rms[dims].sum(), 1e-30))}
    return sorted(drawn), quality


def random_direction(d: int, *, seed: int, layer: int, draw: int) -> torch.Tensor:
    """A unit vector drawn uniformly from the sphere in R^d (projection is scale-free: its norm changes nothing,
    so "a random direction of equal norm" is any random direction)."""
    v = _rng(seed, layer, d, draw, "random_direction").standard_normal(d)
    return torch.tensor(v / np.linalg.norm(v), dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------
# Rankings that need a model or states


def reward_direction(states: torch.Tensor, rewards: torch.Tensor, ridge: float = 1.0) -> torch.Tensor:
    """The layer's linear reward direction in the raw residual basis: ridge regression of the reward on the
    z-scored states, mapped back (w / std). The value probe is an MLP and has no single direction; this is the
    direction a linear probe of the same states would read."""
    x = states.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    z = (x - mean) / std
    y = rewards.double() - rewards.double().mean()
    w = torch.linalg.solve(z.T @ z + ridge * len(z) * torch.eye(z.shape[1], dtype=z.dtype), z.T @ y)
    w = w / std
    return (w / w.norm().clamp_min(1e-30)).float()


def next_token_scores(states: torch.Tensor, next_tokens: torch.Tensor, classes: int = 32, epochs: int = 200,
                      lr: float = 0.05, seed: int = 0) -> torch.Tensor:
    """Per input dim, the L1 norm of a linear next-token probe's weights (on z-scored states, as the value probe
    ranks its dims): multinomial logistic regression onto the `classes` - 1 most frequent next tokens and one
    class for all others, full-batch Adam for `epochs` steps."""
    values, counts = torch.unique(next_tokens, return_counts=True)
    frequent = values[torch.argsort(counts, descending=True)[: classes - 1]]
    target = torch.full_like(next_tokens, len(frequent))
    for c, token in enumerate(frequent):
        target[next_tokens == token] = c
    x = states.float()
    z = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    generator = torch.Generator().manual_seed(seed)
    linear = nn.Linear(z.shape[1], len(frequent) + 1)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.01)
        linear.bias.zero_()
    optimizer = torch.optim.Adam(linear.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(epochs):
            optimizer.zero_grad()
            nn.functional.cross_entropy(linear(z), target).backward()
            optimizer.step()
    return linear.weight.detach().abs().sum(0)


# Input projections of a decoder block that read the (normed) residual stream, and the norm before each, by
# family: Llama-likes (attention: q/k/v; MLP: gate/up; Phi-3 fuses them), GPT-2 (Conv1D c_attn, c_fc), NeoX.
_READERS = {
    "attention": (("input_layernorm", "ln_1"), ("q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn",
                                               "query_key_value")),
    "mlp": (("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2"),
            ("gate_proj", "up_proj", "gate_up_proj", "c_fc", "dense_h_to_4h")),
}


def wanda_scores(model: nn.Module, layer: int, states: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Wanda-style importance of each residual dim of layer `layer`'s output (its definition, as the paper's is
    unknown): sum over the input projections P of the next block of sum_i |W_P[i, j]| x ||X_j||, where X_j is
    dim j of P's actual input: the block's norm applied to the captured states (for the MLP's projections the
    same states, ignoring the attention's update), ||.|| the L2 norm over states. After the last block: the
    final norm and the LM head. Returns (scores [d], what was summed)."""
    blocks = decoder_layers(model)
    if layer + 1 < len(blocks):
        block = blocks[layer + 1]
        readers = []
        for part, (norm_names, proj_names) in _READERS.items():
            norm = next((m for n, m in block.named_modules() if n.split(".")[-1] in norm_names), None)
            projections = [(n, m) for n, m in block.named_modules() if n.split(".")[-1] in proj_names]
            if norm is None or not projections:
                raise RewardscopeError(f"ablate arm 'wanda': no {part} norm and input projections found in block "
                                       f"{layer + 1} of {type(model).__name__} (names known: {norm_names}, "
                                       f"{proj_names}); add them to rewardscope.ablate.arms._READERS")
            readers += [(norm, n, m) for n, m in projections]
        where = f"block {layer + 1}: " + ", ".join(n for _, n, _ in readers)
    else:
        norm = _final_norm(model)
        readers, where = [(norm, "lm_head", model.get_output_embeddings())], "final norm and LM head"
    score = torch.zeros(states.shape[1], dtype=torch.float64)
    with torch.no_grad():
        for norm, _, projection in readers:
            x = norm(states.to(next(norm.parameters()).dtype)).double()
            weight = projection.weight.detach().double().abs()
            # nn.Linear keeps [out, in]; GPT-2's Conv1D keeps [in, out].
            per_input = weight.sum(1) if type(projection).__name__ == "Conv1D" else weight.sum(0)
            score += per_input * x.norm(dim=0)
    return score.float(), where


def _final_norm(model: nn.Module) -> nn.Module:
    for path in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm"):
        node = model
        for part in path.split("."):
            node = getattr(node, part, None)
        if isinstance(node, nn.Module):
            return node
    raise RewardscopeError(f"cannot find the final norm of {type(model).__name__} (looked for model.norm, "
                           f"transformer.ln_f, gpt_neox.final_layer_norm)")


def unembedding_direction(model: nn.Module, token_id: int) -> torch.Tensor:
    """The residual direction (before the final norm) that writes `token_id`'s logit: its unembedding row
    scaled by the final norm's weight (an RMSNorm or LayerNorm multiplies dim j by its weight before the LM
    head; Gemma's norm multiplies by 1 + weight). The positive control projects it out of the last block."""
    norm = _final_norm(model)
    row = model.get_output_embeddings().weight[token_id].detach().double()
    scale = getattr(norm, "weight", None)
    if scale is not None:
        scale = scale.detach().double()
        if "Gemma" in type(norm).__name__:
            scale = 1 + scale
        row = row * scale
    return (row / row.norm()).float()
