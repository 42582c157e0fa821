"""Prompts: question formatting, instructions per kind, chat templates and the plain fallback."""

from __future__ import annotations

import copy
import warnings

import pytest
from tokenizers import processors

from rewardscope.config import DataConfig, PromptConfig
from rewardscope.data import DEFAULT_INSTRUCTIONS, Problem, build_prompt, format_question, load_problems
from rewardscope.errors import RewardscopeError

CHOICE = Problem("q", "Which colour is the sky?", "B", "choice", ("red", "blue", "green", "black", "white"))
MATH = Problem("m", "What is $1+1$?", "2", "math")


def _variant(tokenizer, name: str, chat_template="keep", adds_bos: bool = False):
    """A copy of the char tokenizer under a new name, its chat template replaced and/or prepending BOS."""
    tok = copy.deepcopy(tokenizer)
    tok.name_or_path = name
    if chat_template != "keep":
        tok.chat_template = chat_template
    if adds_bos:
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)])
    return tok


def test_format_question_renders_choices_a_to_e_then_the_instruction():
    assert format_question(CHOICE).splitlines() == [
        "Which colour is the sky?", "(A) red", "(B) blue", "(C) green", "(D) black", "(E) white",
        DEFAULT_INSTRUCTIONS["choice"]]
    assert format_question(CHOICE, instruction="") == "Which colour is the sky?\n(A) red\n(B) blue\n(C) green\n" \
                                                      "(D) black\n(E) white"
    assert format_question(MATH, instruction="Answer briefly.") == "What is $1+1$?\nAnswer briefly."


def test_default_instruction_per_kind():
    assert set(DEFAULT_INSTRUCTIONS) == {"math", "number", "choice"}  # any other kind: none
    boxed = "Please reason step by step, and put your final answer within \\boxed{}."
    assert DEFAULT_INSTRUCTIONS["math"] == DEFAULT_INSTRUCTIONS["number"] == boxed
    assert "The answer is (X)" in DEFAULT_INSTRUCTIONS["choice"]
    assert format_question(MATH) == "What is $1+1$?\n" + boxed
    organism = Problem("o", "S4;1*9;2+4", "0", "organism")
    assert format_question(organism) == "S4;1*9;2+4"  # shown verbatim


def test_chat_template_with_and_without_system(char_tokenizer):
    user = format_question(MATH)
    assert build_prompt(MATH, char_tokenizer, PromptConfig()) == f"<bos>{user}>"
    with_system = build_prompt(MATH, char_tokenizer, PromptConfig(system="You are careful."))
    assert with_system == f"<bos>You are careful.\n{user}>"
    assert with_system == char_tokenizer.apply_chat_template(
        [{"role": "system", "content": "You are careful."}, {"role": "user", "content": user}],
        add_generation_prompt=True, tokenize=False)
    # The template holds BOS: tokenizing with add_special_tokens=False gives exactly one, at the start.
    ids = char_tokenizer(with_system, add_special_tokens=False)["input_ids"]
    assert ids[0] == char_tokenizer.bos_token_id and ids.count(char_tokenizer.bos_token_id) == 1


def test_custom_instruction_overrides_the_default(char_tokenizer):
    prompt = build_prompt(CHOICE, char_tokenizer, PromptConfig(instruction="Reply with one letter."))
    assert prompt.endswith("(E) white\nReply with one letter.>") and "reason step by step" not in prompt


def test_no_chat_template_falls_back_to_plain_and_warns_once(char_tokenizer):
    tok = _variant(char_tokenizer, "no-template", chat_template=None)
    with pytest.warns(UserWarning, match="'no-template' has no chat template"):
        prompt = build_prompt(CHOICE, tok, PromptConfig())
    assert prompt == f"Question: {format_question(CHOICE)}\nAnswer:"  # this tokenizer adds no BOS itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_prompt(CHOICE, tok, PromptConfig()) == prompt


def test_plain_template_ignores_the_chat_template_silently(char_tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prompt = build_prompt(MATH, char_tokenizer, PromptConfig(template="plain", system="Be brief."))
    assert prompt == f"Be brief.\n\nQuestion: {format_question(MATH)}\nAnswer:"


def test_plain_prompt_has_bos_exactly_when_the_tokenizer_adds_it(char_tokenizer):
    tok = _variant(char_tokenizer, "adds-bos", adds_bos=True)
    prompt = build_prompt(MATH, tok, PromptConfig(template="plain"))
    assert prompt.startswith("<bos>Question: ")
    # Parity: the prompt tokenized as documented equals the bare text tokenized the tokenizer's default way.
    bare = prompt.removeprefix("<bos>")
    assert tok(prompt, add_special_tokens=False)["input_ids"] == tok(bare)["input_ids"]
    assert char_tokenizer(bare)["input_ids"][0] != char_tokenizer.bos_token_id  # the fixture adds none


def test_template_rejecting_a_system_message_is_a_clear_error(char_tokenizer):
    template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    tok = _variant(char_tokenizer, "no-system", chat_template=template)
    assert build_prompt(MATH, tok, PromptConfig()) == format_question(MATH)
    with pytest.raises(RewardscopeError, match="System role not supported; unset prompt.system"):
        build_prompt(MATH, tok, PromptConfig(system="hi"))


def test_real_five_choice_question_renders_a_to_e(shared_data, char_tokenizer):
    problem = load_problems(DataConfig(dataset="commonsenseqa", path=str(shared_data), limit=1))[0]
    prompt = build_prompt(problem, char_tokenizer, PromptConfig())
    lines = prompt.removeprefix("<bos>").removesuffix(">").splitlines()
    assert lines[0] == problem.question and lines[-1] == DEFAULT_INSTRUCTIONS["choice"]
    assert lines[1:6] == [f"({letter}) {text}" for letter, text in zip("ABCDE", problem.choices)]


def test_organism_prompt_is_the_bare_question(char_tokenizer):
    from rewardscope.organism.task import generate_problems  # an import error fails this test, never skips it

    assert load_problems(DataConfig(dataset="organism", n_problems=1)) == generate_problems(n=1, seed=0)
    problem = load_problems(DataConfig(dataset="organism", n_problems=1))[0]
    assert build_prompt(problem, char_tokenizer, PromptConfig()) == f"<bos>{problem.question}>"


# ----------------------------------------------------------------------------------------------------------
# Few-shot prompts (prompt.few_shot)


def test_worked_answers_end_as_the_instruction_asks():
    from rewardscope.data import worked_answer

    assert worked_answer(CHOICE) == "The answer is (B)."
    assert worked_answer(MATH) == "The answer is \\boxed{2}."
    gsm = Problem("g", "Half of 48?", "24", "number",
                  metadata={"solution": "Half of 48 is 48/2 = <<48/2=24>>24.\n#### 24"})
    assert worked_answer(gsm) == "Half of 48 is 48/2 = 24.\nThe answer is \\boxed{24}."


def test_chat_few_shot_prompt_holds_each_example_as_a_user_and_an_assistant_turn(char_tokenizer):
    example = Problem("e", "Which colour is grass?", "C", "choice", ("red", "blue", "green"))
    prompt = build_prompt(CHOICE, char_tokenizer, PromptConfig(), [example])
    messages = [{"role": "user", "content": format_question(example)},
                {"role": "assistant", "content": "The answer is (C)."},
                {"role": "user", "content": format_question(CHOICE)}]
    assert prompt == char_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    plain = build_prompt(MATH, char_tokenizer, PromptConfig(template="plain"), [MATH, MATH])
    solved = f"Question: {format_question(MATH)}\nAnswer: The answer is \\boxed{{2}}.\n\n"
    assert plain == f"{solved}{solved}Question: {format_question(MATH)}\nAnswer:"


def test_few_shot_examples_of_a_dataset_without_dev_split_are_never_evaluated(shared_data):
    from rewardscope.data import load_task

    cfg = DataConfig(dataset="gsm8k", path=str(shared_data), limit=10, shuffle_seed=1)
    problems, examples = load_task(cfg, few_shot=3)
    first = load_problems(DataConfig(dataset="gsm8k", path=str(shared_data)))[:3]
    assert len(problems) == 10
    assert [e.id for e in examples[problems[0].id]] == [f"example:{p.id}" for p in first]
    assert all(examples[p.id] == examples[problems[0].id] for p in problems)
    everything, _ = load_task(DataConfig(dataset="gsm8k", path=str(shared_data)), few_shot=3)
    assert not {p.id for p in first} & {p.id for p in everything}
    assert len(everything) == len(load_problems(DataConfig(dataset="gsm8k", path=str(shared_data)))) - 3


def test_mmlu_few_shot_examples_come_from_the_same_subjects_dev_split(shared_data):
    from rewardscope.data import load_task

    for path in (shared_data, shared_data / "mmlu", shared_data / "mmlu" / "test"):
        problems, examples = load_task(DataConfig(dataset="mmlu", path=str(path), limit=400, shuffle_seed=0), 5)
        assert len({p.metadata["subject"] for p in problems}) > 20
        for p in problems:
            shots = examples[p.id]
            assert len(shots) == 5 and {e.metadata["subject"] for e in shots} == {p.metadata["subject"]}
            assert all(e.id.startswith("example:") for e in shots)
    dev = (shared_data / "mmlu" / "dev" / "anatomy_dev.csv").read_text()
    anatomy = next(p for p in problems if p.metadata["subject"] == "anatomy")
    assert all(e.question in dev for e in examples[anatomy.id])
    with pytest.raises(RewardscopeError, match="prompt.few_shot=6: the dev split of 'mmlu' has 5 examples"):
        load_task(DataConfig(dataset="mmlu", path=str(shared_data), limit=5), 6)


def test_few_shot_beyond_the_dataset_is_refused(tmp_path):
    from rewardscope.data import load_task

    path = tmp_path / "two.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}\n')
    problems, examples = load_task(DataConfig(dataset="jsonl", path=str(path), kind="number"), 1)
    assert [p.question for p in problems] == ["2+2?"] and examples[problems[0].id][0].question == "1+1?"
    with pytest.raises(RewardscopeError, match="prompt.few_shot=2: dataset 'jsonl' has only 2 problems"):
        load_task(DataConfig(dataset="jsonl", path=str(path), kind="number"), 2)
