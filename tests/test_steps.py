"""Step boundaries on a character tokenizer (exact cases) and on a byte-level BPE trained here, whose tokens
merge the delimiter with neighbouring text and split multi-byte characters."""

from __future__ import annotations

import math

import pytest

from rewardscope.errors import RewardscopeError
from rewardscope.rollout.steps import step_ends


def ids_of(tok, text: str, eos: bool = True) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])


@pytest.mark.parametrize("text, delimiter, expected", [
    ("a\n\nb", "\n\n", [2, 3]),  # "a\n\n" ends at its second newline; the last step at the last token
    ("ab", "\n\n", [1]),
    ("a\n\nb\n\n", "\n\n", [2, 5]),  # a final delimiter ends the last step
    ("a\n\n\n\nb", "\n\n", [4, 5]),  # the empty step joins the one before it
    ("\n\na\n\nb", "\n\n", [4, 5]),  # a leading empty step joins the one after it
    ("a\n\n  \n\nb  ", "\n\n", [6, 9]),  # whitespace-only steps are empty
    ("a\n\nb\n\n  ", "\n\n", [2, 7]),  # trailing whitespace belongs to the last step
    ("a\n\nb", "\n", [2, 3]),  # "\n\n" with delimiter "\n": the second line is empty
    ("1:4*9=6\n2:6+4=0!\nA0N", "\n", [7, 16, 19]),  # the organism: one step per line
    ("", "\n\n", []),
    ("  \n\n ", "\n\n", []),  # no visible text, no steps
])
def test_char_tokenizer_cases(char_tokenizer, text, delimiter, expected):
    assert step_ends(char_tokenizer, ids_of(char_tokenizer, text), delimiter) == expected


def test_eos_is_never_a_step_end_and_length_cut_ends_at_last_token(char_tokenizer):
    ids = ids_of(char_tokenizer, "x\n\ny", eos=False)
    assert step_ends(char_tokenizer, ids, "\n\n") == [2, 3]
    assert step_ends(char_tokenizer, ids + [char_tokenizer.eos_token_id], "\n\n") == [2, 3]
    assert step_ends(char_tokenizer, [char_tokenizer.eos_token_id], "\n\n") == []


def test_empty_delimiter_is_an_error(char_tokenizer):
    with pytest.raises(RewardscopeError, match="step_delimiter"):
        step_ends(char_tokenizer, ids_of(char_tokenizer, "a"), "")


# ----------------------------------------------------------------------------------------------------------
# A byte-level BPE trained in the test (no download)

CORPUS = [
    "First we add the numbers.\n\nThen we carry the one.\n\nSo the answer is 42.\n\n",
    "Café au lait coûte 3 €.\n\nÉtape deux: 😀 fin.\n\n",
    "Step 1: x = 2.\nStep 2: y = 3.\n\nDone.",
]


@pytest.fixture(scope="module")
def bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    # No pre-tokenizer regex, so merges may cross word and line boundaries, as ".\n\nThen" can in real BPEs.
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=330, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<eos>")


TEXTS = [
    "First we add the numbers.\n\nThen we carry the one.\n\nSo the answer is 42.",
    "Café au lait coûte 3 €.\n\nÉtape deux: 😀 fin.\n\n\n\nDone.\n\n",
    "\n\nStep 1: x = 2.\nStep 2: y = 3.\n\n   \n\nSo the answer is 42",
    "no delimiter at all, just café 😀",
]


def test_bpe_merges_delimiters_with_text(bpe_tokenizer):
    # The point of this tokenizer: some tokens hold a delimiter and other text, some split a character.
    pieces = [bpe_tokenizer.decode([i]) for t in TEXTS for i in ids_of(bpe_tokenizer, t, eos=False)]
    assert any("\n\n" in p and p.strip() for p in pieces)
    assert any("\ufffd" in p for p in pieces)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("delimiter", ["\n\n", "\n"])
def test_bpe_step_ends_complete_each_delimiter(bpe_tokenizer, text, delimiter):
    tok = bpe_tokenizer
    ids = ids_of(tok, text)
    ends = step_ends(tok, ids, delimiter)
    content = len(ids) - 1  # without EOS

    def prefix(k):
        return tok.decode(ids[:k], skip_special_tokens=True)

    # Reference by linear scan over the text: where each step's last delimiter (empty steps merged) ends.
    steps, step_start, found = [], 0, text.find(delimiter)
    while found != -1:
        char_end = found + len(delimiter)
        if text[step_start:found].strip():
            steps.append(char_end)
            step_start = char_end
        elif steps:
            steps[-1] = step_start = char_end
        found = text.find(delimiter, char_end)
    has_tail = bool(text[step_start:].strip())
    assert len(ends) == len(steps) + has_tail
    assert ends == sorted(set(ends)) and ends[-1] == content - 1
    for end, char_end in zip(ends[:-1], steps):  # the last step ends at the last token in any case
        assert len(prefix(end)) < char_end <= len(prefix(end + 1))


def test_bpe_decodes_only_o_steps_log_t_prefixes(bpe_tokenizer):
    class CountingTokenizer:
        """The real tokenizer, counting decode calls."""

        def __init__(self, tok):
            self.tok, self.calls = tok, 0

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def decode(self, *args, **kwargs):
            self.calls += 1
            return self.tok.decode(*args, **kwargs)

    text = "\n\n".join(f"Step {i}: we add the numbers and carry the one." for i in range(40))
    counting = CountingTokenizer(bpe_tokenizer)
    ids = ids_of(bpe_tokenizer, text)
    ends = step_ends(counting, ids, "\n\n")
    assert len(ends) == 40
    assert counting.calls <= 1 + 39 * (math.ceil(math.log2(len(ids))) + 1)
