"""Ablation during generation (rewardscope.ablate): zero / mean / project at decoder block outputs, inside
KV-cached `generate`, on every tiny architecture; exactness read back by residual_hooks readers registered before
and after the ablation on the same block; hooks never leak; batched == one-by-one; bad input refused up front."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from rewardscope.ablate import Ablation, ablate, capture_means
from rewardscope.capture import CaptureReader, capture
from rewardscope.errors import RewardscopeError
from rewardscope.hooks import decoder_layers, residual_hooks
from rewardscope.models import TINY_ARCHITECTURES, tiny_model

from conftest import chat_prompts  # shared with the other all-architecture tests
from rewardscope.rollout import generate

MAX_NEW_TOKENS = 8
WIDTH = 64  # TinySpec().hidden
DIMS = [0, 7, 33, 63]



@pytest.fixture(scope="module")
def llama(char_tokenizer):
    return tiny_model("llama", char_tokenizer, initializer_range=0.3)


def hook_count(model) -> int:
    return sum(len(block._forward_hooks) for block in decoder_layers(model)) + len(model._forward_pre_hooks)


def greedy(model, tok, ablation: Ablation | None = None, batch_size: int = 4, prompts=None) -> list[list[int]]:
    prompts = prompts or chat_prompts(tok)
    hooks = ablation.hooks if ablation is not None else None
    out = generate(model, tok, prompts, n=1, temperature=0.0, max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size,
                   hooks=hooks)
    return [g[0].response_ids for g in out]


class Recorder:
    """residual_hooks readers: per layer, one (positions, generated, hidden) record per forward."""

    def __init__(self, layers):
        self.records = {layer: [] for layer in layers}

    @property
    def fns(self):
        def read(layer):
            def fn(hidden, hook):
                self.records[layer].append((hook.positions.clone(), hook.generated.clone(), hidden.clone()))
            return fn
        return {layer: read(layer) for layer in self.records}


def recorded(model, tok, layers, ablation: Ablation | None = None):
    """(before, after): the layers' outputs seen by a reader registered before the ablation and by one after it,
    at every forward of a greedy batched generate (the prompt forward, then each KV-cached step)."""
    before, after = Recorder(layers), Recorder(layers)
    with torch.inference_mode(), residual_hooks(model, before.fns):
        if ablation is None:
            with residual_hooks(model, after.fns):
                greedy(model, tok)
        else:
            with ablation, residual_hooks(model, after.fns):
                greedy(model, tok)
    return before.records, after.records


def orthonormal(directions: torch.Tensor) -> torch.Tensor:
    """[d, k] orthonormal basis of the rows' span, computed independently of the module (QR in float64)."""
    q, _ = torch.linalg.qr(directions.to(torch.float64).T)
    return q


# ----------------------------------------------------------------------------------------------------------------
# On every tiny architecture, inside KV-cached generate


def test_an_empty_ablation_is_token_identical_to_no_hook(arch_model, char_tokenizer):
    arch, model = arch_model
    plain = greedy(model, char_tokenizer)
    every = {layer: [] for layer in range(model.config.num_hidden_layers)}
    for mode, targets, means in (("zero", every, None),
                                 ("mean", every, {layer: torch.randn(WIDTH) for layer in every}),
                                 ("project", {layer: torch.zeros(0, WIDTH) for layer in every}, None)):
        ablation = ablate(model, targets, mode, means=means, allow_empty=True)
        assert greedy(model, char_tokenizer, ablation) == plain, f"{arch} {mode}: hooks= path"
        with ablation:
            assert greedy(model, char_tokenizer) == plain, f"{arch} {mode}: context manager"


def test_zeroed_and_mean_filled_dims_are_exact(arch_model, char_tokenizer):
    arch, model = arch_model
    last = model.config.num_hidden_layers - 1  # the last block: its output before the final norm
    layers = [1, last]
    means = {layer: torch.randn(WIDTH) * 3 for layer in layers}
    others = [d for d in range(WIDTH) if d not in DIMS]
    for mode in ("zero", "mean"):
        ablation = ablate(model, {layer: DIMS for layer in layers}, mode, means=means if mode == "mean" else None)
        before, after = recorded(model, char_tokenizer, layers, ablation)
        for layer in layers:
            expected = torch.zeros(len(DIMS)) if mode == "zero" else means[layer][DIMS]
            assert len(after[layer]) == MAX_NEW_TOKENS  # the prompt forward + one per KV-cached step
            assert after[layer][1][2].shape[1] == 1, f"{arch}: decode steps are one token each (KV cache)"
            for (_, _, b), (_, _, a) in zip(before[layer], after[layer]):
                assert torch.equal(a[..., DIMS], expected.expand(*a.shape[:-1], len(DIMS))), f"{arch} {mode}"
                assert torch.equal(a[..., others], b[..., others]), f"{arch} {mode}: other dims changed"
                assert not torch.equal(b[..., DIMS], a[..., DIMS])  # the reader before saw the original states


def prompt_ids(tok) -> torch.Tensor:
    return torch.tensor([tok(chat_prompts(tok)[2], add_special_tokens=False)["input_ids"]])


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_ablation_reads_back_through_output_hidden_states(arch, char_tokenizer):
    # A fresh model: transformers installs its own hidden_states recorders on first use and never removes them,
    # and a recorder registered before the ablation sees the block's output before it is replaced (next test).
    model = tiny_model(arch, char_tokenizer, initializer_range=0.3)
    ids = prompt_ids(char_tokenizer)
    with torch.inference_mode():
        plain = model(ids, output_hidden_states=True).hidden_states
        model = tiny_model(arch, char_tokenizer, initializer_range=0.3)
        with ablate(model, {1: DIMS}):
            hidden = model(ids, output_hidden_states=True).hidden_states
    assert torch.equal(hidden[2][..., DIMS], torch.zeros(1, ids.shape[1], len(DIMS)))  # block 1 = hidden_states[2]
    assert torch.equal(hidden[1], plain[1]) and not torch.equal(hidden[3], plain[3]), arch


def test_output_hidden_states_shows_the_ablation_after_a_first_use(char_tokenizer):
    model = tiny_model("llama", char_tokenizer, initializer_range=0.3)
    ids = prompt_ids(char_tokenizer)
    with torch.inference_mode():
        model(ids, output_hidden_states=True)  # installs the recorders
        with ablate(model, {1: DIMS}):
            hidden = model(ids, output_hidden_states=True).hidden_states
    assert torch.equal(hidden[2][..., DIMS], torch.zeros(1, ids.shape[1], len(DIMS)))


def test_projected_directions_vanish_and_the_complement_is_untouched(arch_model, char_tokenizer):
    arch, model = arch_model
    torch.manual_seed(1)
    one = 5 * torch.randn(WIDTH)  # any vector: its length does not matter
    a, b, c = torch.randn(3, WIDTH)
    several = torch.stack([a, a + 2 * b, c - a])  # not orthogonal: the module orthonormalises them
    targets = {0: one, 2: several}
    before, after = recorded(model, char_tokenizer, list(targets), ablate(model, targets, mode="project"))
    for layer, directions in targets.items():
        q = orthonormal(directions.reshape(-1, WIDTH))
        for (_, _, h), (_, _, p) in zip(before[layer], after[layer]):
            h, p = h.to(torch.float64), p.to(torch.float64)
            scale = h.norm(dim=-1, keepdim=True)
            assert (h @ q).abs().max() > 1e-2 * scale.max()  # there was a component to remove
            assert ((p @ q).abs() <= 1e-6 * scale).all(), f"{arch} layer {layer}: a component remains"
            complement = torch.eye(WIDTH, dtype=torch.float64) - q @ q.T
            torch.testing.assert_close(p @ complement, h @ complement, rtol=0, atol=1e-5)


def test_generated_positions_leave_the_prompt_untouched(arch_model, char_tokenizer):
    arch, model = arch_model
    layers = [1, 2]  # the ablated block and one downstream
    _, plain = recorded(model, char_tokenizer, layers)
    _, gen = recorded(model, char_tokenizer, layers, ablate(model, {1: DIMS}, positions="generated"))
    _, prompt = recorded(model, char_tokenizer, layers, ablate(model, {1: DIMS}, positions="prompt"))
    for layer in layers:  # the prompt forward: identical to the unablated run, downstream too
        assert not plain[layer][0][1].any()
        assert torch.equal(gen[layer][0][2], plain[layer][0][2]), f"{arch}: prompt states changed"
    assert gen[1][1][1].all()  # KV-cached steps are generated tokens
    for _, _, h in gen[1][1:]:
        assert torch.equal(h[..., DIMS], torch.zeros_like(h[..., DIMS]))
    for _, _, h in plain[1][1:]:
        assert h[..., DIMS].abs().min() > 0
    assert not torch.equal(gen[2][1][2], plain[2][1][2])  # downstream of the ablation the states differ
    assert torch.equal(prompt[1][0][2][..., DIMS], torch.zeros_like(prompt[1][0][2][..., DIMS]))
    for _, _, h in prompt[1][1:]:
        assert h[..., DIMS].abs().min() > 0, f"{arch}: positions='prompt' touched a generated token"
    everything = ablate(model, {1: list(range(WIDTH))}, positions="generated")
    first = [ids[0] for ids in greedy(model, char_tokenizer, everything)]
    assert first == [ids[0] for ids in greedy(model, char_tokenizer)]  # predicted from the untouched prompt


def test_batched_equals_one_by_one_under_ablation(arch_model, char_tokenizer):
    arch, model = arch_model
    plain = greedy(model, char_tokenizer)
    half = list(range(0, WIDTH, 2))
    torch.manual_seed(2)
    ablations = {
        "zero": ablate(model, {1: half}),
        "mean": ablate(model, {0: half, 2: DIMS}, "mean", means={0: torch.randn(WIDTH), 2: torch.randn(WIDTH)}),
        "project": ablate(model, {1: torch.randn(8, WIDTH)}, "project", positions="generated"),
    }
    changed = 0
    for mode, ablation in ablations.items():
        alone = greedy(model, char_tokenizer, ablation, batch_size=1)
        assert greedy(model, char_tokenizer, ablation, batch_size=4) == alone, f"{arch} {mode}"
        changed += alone != plain
    assert changed >= 2, f"{arch}: the ablations barely change generation, the parity check is weak"


# ----------------------------------------------------------------------------------------------------------------
# Hooks, positions functions, means from a capture (the tiny Llama)


def test_no_hook_remains_after_exit_or_an_exception(llama, char_tokenizer):
    before = hook_count(llama)
    ablation = ablate(llama, {0: DIMS, 2: [5]})
    assert hook_count(llama) == before  # building registers nothing
    with ablation as entered:
        assert entered is ablation and hook_count(llama) == before + 3  # 2 blocks + the position tracker
        with ablation:  # nested: registered twice, removed in order
            assert hook_count(llama) == before + 6
        assert hook_count(llama) == before + 3
    assert hook_count(llama) == before
    with pytest.raises(ValueError, match="boom"):
        with ablate(llama, {1: torch.randn(WIDTH)}, mode="project"):
            raise ValueError("boom")
    assert hook_count(llama) == before
    with pytest.raises(RuntimeError, match="inside generate"):  # an error inside a hooked generate
        with ablation:
            def explode(hidden, hook):
                raise RuntimeError("inside generate")
            with residual_hooks(llama, {1: explode}):
                greedy(llama, char_tokenizer)
    assert hook_count(llama) == before
    with ablation:  # reusable after all that
        assert greedy(llama, char_tokenizer) == greedy(llama, char_tokenizer, ablation)


def test_a_positions_function_and_per_row_masks(llama, char_tokenizer):
    x = torch.tensor([char_tokenizer("<bos>abcdefgh", add_special_tokens=False)["input_ids"]] * 2)

    def block_1(positions) -> torch.Tensor:
        after = Recorder([1])
        with torch.inference_mode(), ablate(llama, {1: DIMS}, positions=positions), residual_hooks(llama, after.fns):
            llama(x)
        return after.records[1][0][2][..., DIMS]

    h = block_1(lambda hook: hook.positions % 2 == 0)
    assert torch.equal(h[:, ::2], torch.zeros_like(h[:, ::2])) and h[:, 1::2].abs().min() > 0
    rows = torch.tensor([[True], [False]]).expand(2, x.shape[1])  # a [batch, seq] mask: row 0 only
    h = block_1(lambda hook: rows)
    assert torch.equal(h[0], torch.zeros_like(h[0])) and h[1].abs().min() > 0
    with pytest.raises(RewardscopeError, match=r"positions function returned a torch.int64 tensor .* layer 1"):
        block_1(lambda hook: hook.positions)


def test_projecting_out_an_axis_is_zeroing_it(llama, char_tokenizer):
    axes = torch.eye(WIDTH)[DIMS]
    assert greedy(llama, char_tokenizer, ablate(llama, {1: axes}, "project")) == \
        greedy(llama, char_tokenizer, ablate(llama, {1: DIMS}))
    _, projected = recorded(llama, char_tokenizer, [1, 2], ablate(llama, {1: axes}, "project"))
    _, zeroed = recorded(llama, char_tokenizer, [1, 2], ablate(llama, {1: DIMS}))
    for layer in (1, 2):
        for (_, _, p), (_, _, z) in zip(projected[layer], zeroed[layer]):
            assert torch.equal(p, z)


def test_summary_is_json(llama):
    summary = ablate(llama, {2: [3, 1], 0: [9]}).summary()
    assert json.loads(json.dumps(summary)) == {"mode": "zero", "positions": "all", "width": WIDTH,
                                                "layers": {"0": {"dims": [9]}, "2": {"dims": [3, 1]}}}
    projected = ablate(llama, {1: torch.randn(2, WIDTH)}, "project", positions=lambda hook: hook.generated)
    assert projected.summary()["layers"] == {"1": {"directions": 2}} and projected.summary()["positions"] == "custom"


def test_mean_ablation_with_means_from_a_capture(llama, char_tokenizer, tmp_path):
    tok, prompts = char_tokenizer, chat_prompts(char_tokenizer)
    out = generate(llama, tok, prompts, n=2, temperature=1.0, max_new_tokens=12, batch_size=4, seed=3)
    rows = [dict(rollout_id=i, problem_id=f"q{i // 2}", prompt_ids=g.prompt_ids, response_ids=g.response_ids,
                 step_ends=[], finish_reason=g.finish_reason, reward=0.0)
            for i, g in enumerate(g for samples in out for g in samples)]
    schema = pa.schema([("rollout_id", pa.int64()), ("problem_id", pa.string()), ("prompt_ids", pa.list_(pa.int32())),
                        ("response_ids", pa.list_(pa.int32())), ("step_ends", pa.list_(pa.int32())),
                        ("finish_reason", pa.string()), ("reward", pa.float32())])
    reader = CaptureReader(capture(llama, tok, pa.Table.from_pylist(rows, schema=schema), tmp_path, dtype="float32",
                                   shard_rows=16))
    means = capture_means(tmp_path, chunk_rows=5)
    assert sorted(means) == [0, 1, 2]
    for layer in means:
        torch.testing.assert_close(means[layer], reader.load(layer).double().mean(0).float(), rtol=1e-6, atol=1e-6)
    tokens = np.flatnonzero(reader.index["position_kind"].to_numpy(zero_copy_only=False) == "token")
    torch.testing.assert_close(capture_means(reader, [1], rows=tokens)[1], reader.load(1, tokens).mean(0))
    torch.testing.assert_close(capture_means(reader, [2], absolute=True)[2], reader.load(2).abs().mean(0))
    _, after = recorded(llama, tok, [1], ablate(llama, {1: DIMS}, "mean", means=means))
    for _, _, h in after[1]:
        assert torch.equal(h[..., DIMS], means[1][DIMS].expand(*h.shape[:-1], len(DIMS)))
    with pytest.raises(RewardscopeError, match="over no rows"):
        capture_means(reader, rows=[])


# ----------------------------------------------------------------------------------------------------------------
# Bad input: a RewardscopeError naming the layer, dim or width, when `ablate` is called


BAD_INPUT = [
    ("dim out of range", dict(targets={1: [3, 64]}), r"layer 1: dim 64 is out of range: .* width 64, valid 0..63"),
    ("negative dim", dict(targets={1: [-1]}), r"layer 1: dim -1 is out of range"),
    ("duplicate dims", dict(targets={2: [5, 9, 5]}), r"layer 2: dim 5 is listed 2 times; dims must be distinct"),
    ("empty dims", dict(targets={0: []}), r"layer 0: empty list of dims: nothing would be ablated .*allow_empty"),
    ("no layers", dict(targets={}), r"no layers given"),
    ("float dims", dict(targets={1: [1.5]}), r"layer 1: dims must be ints, got 1.5"),
    ("a bool mask as dims", dict(targets={1: torch.ones(WIDTH, dtype=torch.bool)}), r"layer 1: dims must be a 1-D"),
    ("a direction in mode zero", dict(targets={1: torch.randn(WIDTH)}), r"layer 1: dims must be a 1-D list of ints"),
    ("layer out of range", dict(targets={3: [1]}), r"layer 3 is out of range: the model has 3 decoder layers"),
    ("negative layer", dict(targets={-1: [1]}), r"layer -1 is out of range"),
    ("direction of the wrong width", dict(targets={1: torch.randn(32)}, mode="project"),
     r"layer 1: a direction must be a vector \[64\] .* got shape \(32,\)"),
    ("directions of the wrong width", dict(targets={0: torch.randn(2, 65)}, mode="project"),
     r"layer 0: a direction .* got shape \(2, 65\)"),
    ("zero direction", dict(targets={2: torch.zeros(WIDTH)}, mode="project"),
     r"layer 2: direction 0 is the zero vector"),
    ("dependent directions", dict(targets={1: torch.ones(2, WIDTH)}, mode="project"),
     r"layer 1: direction 1 lies in the span of the directions before it"),
    ("no directions", dict(targets={1: torch.zeros(0, WIDTH)}, mode="project"), r"layer 1: no directions"),
    ("nan direction", dict(targets={1: torch.full((WIDTH,), float("nan"))}, mode="project"), r"layer 1: .*non-finite"),
    ("mean without means", dict(targets={1: [2]}, mode="mean"), r"mode 'mean' needs means=\{layer: tensor\[d\]\}"),
    ("means of the wrong width", dict(targets={1: [2]}, mode="mean", means={1: torch.zeros(63)}),
     r"mode 'mean', layer 1: the mean has shape \(63,\), expected \(64,\)"),
    ("no mean for a layer", dict(targets={0: [2], 1: [2]}, mode="mean", means={1: torch.zeros(WIDTH)}),
     r"mode 'mean', layer 0: no mean given \(means has layers \[1\]\)"),
    ("means in another mode", dict(targets={1: [2]}, means={1: torch.zeros(WIDTH)}), r"means are only used by mode"),
    ("unknown mode", dict(targets={1: [2]}, mode="scale"), r"mode 'scale' is not one of \['zero', 'mean', 'project'\]"),
    ("unknown positions", dict(targets={1: [2]}, positions="response"), r"positions 'response' is not one of"),
    ("targets not a dict", dict(targets=[1, 2]), r"targets must be a dict"),
]


@pytest.mark.parametrize("case, kwargs, message", BAD_INPUT, ids=[case for case, _, _ in BAD_INPUT])
def test_bad_input_is_refused_when_ablate_is_called(llama, case, kwargs, message):
    before = hook_count(llama)
    with pytest.raises(RewardscopeError, match=message):
        ablate(llama, **kwargs)
    assert hook_count(llama) == before


def test_dims_as_arrays_and_tensors(llama):
    for dims in (np.array([4, 2]), torch.tensor([4, 2]), (4, 2), range(4, 1, -2)):
        assert ablate(llama, {1: dims}).dims[1].tolist() == [4, 2]
    assert ablate(llama, {np.int64(2): [1]}).layers == [2]
