"""Residual-stream hooks: layer adapters, reading and replacing block outputs, stopping early, never leaking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rewardscope.errors import RewardscopeError
from rewardscope.hooks import decoder_layers, residual_hooks, resolve_layers
from rewardscope.models import TINY_ARCHITECTURES, tiny_model

EXPECTED_PATH = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers"}  # the others: model.layers


@pytest.fixture(scope="module")
def llama(char_tokenizer):
    return tiny_model("llama", char_tokenizer)


def ids(tokenizer, text: str = "<bos>What is 3+4?>7") -> torch.Tensor:
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def hook_count(model) -> int:
    return sum(len(block._forward_hooks) for block in decoder_layers(model)) + len(model._forward_pre_hooks)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_finds_the_decoder_blocks_of_every_architecture(arch, char_tokenizer):
    model = tiny_model(arch, char_tokenizer)
    blocks = decoder_layers(model)
    assert blocks is model.get_submodule(EXPECTED_PATH.get(arch, "model.layers"))
    assert len(blocks) == model.config.num_hidden_layers


def test_generic_fallback_finds_other_layouts(char_tokenizer):
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=len(char_tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                       num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32)
    model = OPTForCausalLM(config).eval()
    assert decoder_layers(model) is model.model.decoder.layers


def test_unknown_model_error_names_its_class():
    with pytest.raises(RewardscopeError, match=r"cannot find the decoder layers of Sequential"):
        decoder_layers(nn.Sequential(nn.Linear(4, 4)))


def test_resolve_layers():
    assert resolve_layers("all", 3) == [0, 1, 2]
    assert resolve_layers([2, 0, 2], 3) == [0, 2]
    for bad in ([3], [-1]):
        with pytest.raises(RewardscopeError, match=rf"layer {bad[0]} is out of range: .* 3 decoder layers, valid 0..2"):
            resolve_layers(bad, 3)
    with pytest.raises(RewardscopeError, match="empty list"):
        resolve_layers([], 3)


def zero(hidden, hook):
    return torch.zeros_like(hidden)


def test_reads_and_replaces_block_outputs(llama, char_tokenizer):
    x = ids(char_tokenizer)
    with torch.no_grad():
        reference = llama(x, output_hidden_states=True)
        seen = {}
        with residual_hooks(llama, {0: lambda h, hook: seen.setdefault(0, h.clone()), 1: lambda h, hook: seen.setdefault(1, h)}):
            logits = llama(x).logits
        torch.testing.assert_close(logits, reference.logits, rtol=0, atol=0)  # reading changes nothing
        for layer in (0, 1):
            torch.testing.assert_close(seen[layer], reference.hidden_states[layer + 1], rtol=0, atol=0)

        with residual_hooks(llama, {0: zero}):  # an ablation: block 0's output zeroed
            ablated = llama(x).logits
        assert not torch.allclose(ablated, reference.logits)
        torch.testing.assert_close(llama(x).logits, reference.logits, rtol=0, atol=0)  # and gone afterwards


def test_hooks_are_removed_when_the_body_raises(llama, char_tokenizer):
    before = hook_count(llama)
    with pytest.raises(ValueError, match="boom"):
        with residual_hooks(llama, {0: zero, 2: lambda h, hook: None}, stop_after=2):
            assert hook_count(llama) == before + 4  # + the position tracker
            raise ValueError("boom")
    assert hook_count(llama) == before
    with pytest.raises(RewardscopeError, match="layer 5 is out of range"):  # a bad index registers nothing
        with residual_hooks(llama, {0: zero, 5: zero}):
            pass
    assert hook_count(llama) == before


def test_stop_after_skips_the_rest_of_the_model(llama, char_tokenizer):
    before = hook_count(llama)  # transformers installs its own output-recording hooks once
    calls = []
    handles = [llama.model.layers[2].register_forward_hook(lambda *a: calls.append("block 2")),
               llama.lm_head.register_forward_hook(lambda *a: calls.append("lm_head"))]
    try:
        seen, after = {}, []
        with torch.no_grad(), residual_hooks(llama, {1: lambda h, hook: seen.setdefault(1, h)}, stop_after=1):
            llama(ids(char_tokenizer))
            after.append("ran")
    finally:
        for handle in handles:
            handle.remove()
    assert 1 in seen and calls == [] and after == []
    assert hook_count(llama) == before


class LegacyBlock(nn.Module):
    """A block in the style of older transformers: returns (hidden, attention weights)."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, hidden):
        return hidden + torch.tanh(self.linear(hidden)), None


class LegacyModel(nn.Module):
    def __init__(self, width: int = 8, n_layers: int = 3):
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(LegacyBlock(width) for _ in range(n_layers))

    def forward(self, hidden):
        for block in self.model.layers:
            hidden = block(hidden)[0]
        return hidden


def test_tuple_returning_blocks():
    torch.manual_seed(0)
    model = LegacyModel()
    x = torch.randn(2, 5, 8)
    blocks = model.model.layers
    expected_1 = blocks[1](blocks[0](x)[0])[0]
    seen = {}
    with torch.no_grad(), residual_hooks(model, {1: lambda h, hook: seen.setdefault(1, h)}):
        plain = model(x)
    torch.testing.assert_close(seen[1], expected_1)
    with torch.no_grad(), residual_hooks(model, {1: zero}):
        replaced = model(x)
    torch.testing.assert_close(replaced, blocks[2](torch.zeros_like(x))[0])
    assert not torch.allclose(replaced, plain)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_hooks_inside_kv_cached_generate_see_their_layer_and_positions(arch, char_tokenizer):
    from rewardscope.rollout import hf

    model = tiny_model(arch, char_tokenizer)
    prompts = ["<bos>S1;2+3>", "<bos>S4;1*9;2+4>"]  # different lengths: left padding
    width = max(len(char_tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    seen = []

    def record(hidden, hook):
        seen.append((hook.layer, hook.positions.tolist(), hook.generated.tolist(), hidden.shape[1]))

    new_tokens = 4
    out = hf.generate(model, char_tokenizer, prompts, temperature=0, max_new_tokens=new_tokens,
                      hooks={1: record, 2: record})
    before = hook_count(model)
    layer_1 = [s for s in seen if s[0] == 1]
    assert [s[0] for s in seen] == [1, 2] * len(layer_1)  # both blocks, at every forward
    assert layer_1[0][1] == list(range(width)) and not any(layer_1[0][2])  # the prompt forward
    steps = layer_1[1:]
    assert len(steps) == max(len(g[0].response_ids) for g in out) - 1  # one forward per token after the first
    for t, (_, positions, generated, seq) in enumerate(steps):
        assert positions == [width + t] and generated == [True] and seq == 1  # one cached step at a time
    assert hook_count(model) == before  # generate's hooks are gone
    plain = hf.generate(model, char_tokenizer, prompts, temperature=0, max_new_tokens=new_tokens)
    assert [g[0].response_ids for g in plain] == [g[0].response_ids for g in out]  # reading changes nothing


def test_two_hooks_on_one_block_compose_in_order(llama, char_tokenizer):
    x = ids(char_tokenizer)
    with torch.no_grad():
        plain = llama(x, output_hidden_states=True).hidden_states[2]  # installs transformers' recorders first
        with residual_hooks(llama, {1: lambda h, hook: h + 1.0}), residual_hooks(llama, {1: lambda h, hook: h * 2}):
            both = llama(x, output_hidden_states=True).hidden_states[2]
    # transformers' own record of block 1's output comes after our hooks: it sees what they made of it
    torch.testing.assert_close(both, (plain + 1.0) * 2, rtol=0, atol=0)


def test_a_hook_acting_on_generated_tokens_leaves_the_prompt_states_untouched(llama, char_tokenizer):
    x = ids(char_tokenizer)

    def zero_generated(hidden, hook):
        return torch.where(hook.generated[None, :, None], torch.zeros_like(hidden), hidden)

    with torch.no_grad():
        reference = llama(x, output_hidden_states=True).hidden_states[1]
        with residual_hooks(llama, {0: zero_generated}):
            states = llama(x, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(states, reference, rtol=0, atol=0)  # a lone forward is all prompt
