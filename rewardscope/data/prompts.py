"""Prompts: the problem's text with its options and instruction, through the model's chat template.

The user message is the question, then one `(A) text` line per option, then the instruction, one per line.
Models without a chat template (base models) get the plain format

    {bos}{system}\\n\\nQuestion: {text}\\nAnswer:

`Question:`/`Answer:` is the completion shape base models know from QA pretraining data. No space follows
`Answer:` because BPE tokenizers attach the space to the next word: a trailing space would be a token the
model rarely sees there. `{bos}` is the tokenizer's BOS token only if the tokenizer adds one itself when
encoding (Llama, Mistral, Gemma), so the plain prompt tokenizes as `tokenizer(text)` would; the system
message and its blank line appear only when a (non-empty) system message is set.

Few-shot prompts (prompt.few_shot, examples from rewardscope.data.loaders.load_task): each solved example is a
user turn (its question, options and instruction, as for the problem) and an assistant turn (`worked_answer`)
before the problem's own turn; in the plain format each is a `Question: ...\nAnswer: ...` block followed by a
blank line.
"""

from __future__ import annotations

import re
import warnings

from rewardscope.config import PromptConfig
from rewardscope.data.record import CHOICE_LETTERS, Problem
from rewardscope.errors import RewardscopeError

_BOXED = "Please reason step by step, and put your final answer within \\boxed{}."  # the paper's math prompt
DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "math": _BOXED,
    "number": _BOXED,
    "choice": "Please reason step by step, and end your answer with 'The answer is (X)', where X is the letter "
    "of the correct option.",
}  # any other kind (the organism, trained on the bare question; a registered kind): no instruction

_warned_no_template: set[str] = set()  # tokenizers already warned about (by name), to warn once


def format_question(problem: Problem, instruction: str | None = None) -> str:
    """Question, `(A) ...` option lines, instruction (None: DEFAULT_INSTRUCTIONS of its kind, none for a kind
    not in it; "" for none)."""
    if instruction is None:
        instruction = DEFAULT_INSTRUCTIONS.get(problem.kind, "")
    options = [f"({letter}) {text}" for letter, text in zip(CHOICE_LETTERS, problem.choices or ())]
    return "\n".join([problem.question, *options, *([instruction] if instruction else [])])


def worked_answer(example: Problem) -> str:
    """The answer shown for a few-shot example, ending the way the instruction asks: "The answer is (X)." for a
    choice; a number or math answer's worked solution where the dataset has one (GSM8K's without its
    `<<48/2=24>>` calculator notes, its `#### 72` line made "The answer is \\boxed{72}."), else the boxed answer;
    any other kind (the organism): the answer itself."""
    if example.kind == "choice":
        return f"The answer is ({example.answer})."
    if example.kind not in ("number", "math"):
        return example.answer
    final = f"The answer is \\boxed{{{example.answer}}}."
    solution = example.metadata.get("solution")
    if not isinstance(solution, str) or not solution.strip():
        return final
    if "####" in solution:
        return re.sub(r"<<[^>]*>>", "", solution.rsplit("####", 1)[0]).strip() + "\n" + final
    return solution.strip() if "\\boxed" in solution else f"{solution.strip()}\n{final}"


def build_prompt(problem: Problem, tokenizer, cfg: PromptConfig, examples: list[Problem] = ()) -> str:
    """The exact prompt text. Tokenize it with `add_special_tokens=False`: it already holds any BOS.

    `cfg.template` "chat" applies the tokenizer's chat template (with a system message if `cfg.system` is not
    None, even ""), falling back to the plain format, with a warning, if the tokenizer has none; "plain"
    always uses the plain format (see the module docstring). `examples`: solved examples shown first.
    """
    text = format_question(problem, cfg.instruction)
    shots = [(format_question(e, cfg.instruction), worked_answer(e)) for e in examples]
    if cfg.template == "chat" and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": cfg.system}] if cfg.system is not None else []
        for question, answer in shots:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": text})
        from jinja2 import TemplateError

        try:
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except TemplateError as e:  # raised by the template itself, e.g. "System role not supported" (Gemma 2)
            raise RewardscopeError(f"the chat template of {tokenizer.name_or_path or 'the tokenizer'} failed: {e}"
                                   + ("; unset prompt.system" if cfg.system is not None else "")) from e
    if cfg.template == "chat" and tokenizer.name_or_path not in _warned_no_template:
        _warned_no_template.add(tokenizer.name_or_path)
        warnings.warn(f"tokenizer {tokenizer.name_or_path!r} has no chat template: prompts use the plain "
                      f"'Question: ...\\nAnswer:' format (set prompt.template=plain to silence this)", stacklevel=2)
    return plain_prompt(text, tokenizer, cfg.system, shots)


def plain_prompt(text: str, tokenizer, system: str | None = None, shots: list[tuple[str, str]] = ()) -> str:
    """`{bos}{system}\\n\\n{shots}Question: {text}\\nAnswer:` (see the module docstring)."""
    preamble = f"{system}\n\n" if system else ""
    solved = "".join(f"Question: {question}\nAnswer: {answer}\n\n" for question, answer in shots)
    return f"{_own_bos(tokenizer)}{preamble}{solved}Question: {text}\nAnswer:"


def _own_bos(tokenizer) -> str:
    """The BOS token if the tokenizer prepends it when encoding, else ""."""
    bos = tokenizer.bos_token_id
    with_special, without = (tokenizer.encode("a", add_special_tokens=flag)[:1] for flag in (True, False))
    adds_bos = bos is not None and with_special == [bos] and without != [bos]
    return tokenizer.bos_token if adds_bos else ""
