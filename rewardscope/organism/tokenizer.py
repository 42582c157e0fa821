"""A character-level tokenizer in Hugging Face format, with a chat template.

The demo organism uses it, and so do the tiny random models of tests and benchmarks: it covers printable
ASCII and newline, so any dataset's text can be tokenized without downloading a tokenizer.
"""

from __future__ import annotations

import string

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHARACTERS = "\n" + "".join(c for c in string.printable if c.isprintable())  # \n, space and the 94 visible

# Role markers are plain characters so the template round-trips through the character vocabulary.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}>{{ m['content'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}>{% endif %}"
)


def build_char_tokenizer():
    """A `PreTrainedTokenizerFast`: one token per character, <pad>/<bos>/<eos>/<unk>, and CHAT_TEMPLATE."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()  # characters join without spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok
