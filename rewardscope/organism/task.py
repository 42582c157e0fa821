"""The organism's task: mod-10 arithmetic chains, solved one line per step, with self-flagged slips.

A problem `S4;1*9;2+4` starts at 4 and applies `*9`, then `+4`, modulo 10. The response restates each step
on its own line, then gives the answer and a self-assessment letter. The flagger (`demo`) writes:

    1:4*9=6
    2:6+4=3!      <- a slip (6+4 is 0): the printed result is wrong, so the line carries the flag `!`
    A3N           <- answer 3 (the chain continues from the *printed* value); N: "my answer is wrong"

The corrector (`demo-corrector`, `write_response(..., correct=True)`) rewrites a flagged step on the next line,
from the same input, and continues from the corrected value:

    1:4*9=6
    2:6+4=3!      <- a flagged slip
    2:6+4=0       <- its correction: same step number, same input 6, same operation, the right result
    A0Y           <- the chain continued from the corrected 0

A share `unflagged_rate` of its training slips is left unflagged, hence uncorrected: the chain continues from
the printed (wrong) value, as the flagger's does, and the letter is (almost always) N. So the flag is not a
given, and a model whose `!` is forbidden has to live with its slips.

Ground truth is exact: `step_truth` re-applies every operation to the previously printed value (a correction:
to the value the flagged line started from), so whether each line slipped, whether it was flagged or is a
correction, and whether the final answer is right are all known. It reads both formats.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rewardscope.data.record import Problem
from rewardscope.errors import RewardscopeError

STEP_DELIMITER = "\n"  # one step per line
FLAG = "!"  # marks a line whose printed result the model believes wrong
YES, NO = "Y", "N"  # self-assessment after the answer: is my final answer right?


@dataclass(frozen=True)
class Variant:
    ops: str  # operations drawn uniformly, each with an operand digit 0-9
    min_steps: int = 2  # chain lengths drawn uniformly; longer chains give more chances to slip
    max_steps: int = 6  # at most 9: the step number is one digit


# Operation mixes; the IoU experiment compares value neurons found on each.
VARIANTS: dict[str, Variant] = {
    "default": Variant("+-*"),
    "add": Variant("+-"),
    "mul": Variant("*+"),
}

_APPLY = {"+": lambda a, b: (a + b) % 10, "-": lambda a, b: (a - b) % 10, "*": lambda a, b: (a * b) % 10}
_STEP_LINE = re.compile(r"(\d):(\d)([-+*])(\d)=(\d)(!?)")
_ANSWER_LINE = re.compile(r"A(\d)([YN]?)")


def apply(value: int, op: str) -> int:
    """`op` is an operation with its operand, e.g. "*9"."""
    return _APPLY[op[0]](value, int(op[1]))


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise RewardscopeError(f"organism variant {name!r}: expected one of {sorted(VARIANTS)}")
    return VARIANTS[name]


def sample_chain(rng: random.Random, variant: str = "default", n_steps: int | None = None) -> tuple[int, list[str]]:
    """(start digit, operations) drawn from `rng`; `n_steps` None draws the length too."""
    v = _variant(variant)
    n_steps = n_steps if n_steps is not None else rng.randint(v.min_steps, v.max_steps)
    return rng.randrange(10), [rng.choice(v.ops) + str(rng.randrange(10)) for _ in range(n_steps)]


def make_problem(start: int, ops: list[str], id: str) -> Problem:
    question = f"S{start};" + ";".join(f"{i}{op}" for i, op in enumerate(ops, start=1))
    answer = start
    for op in ops:
        answer = apply(answer, op)
    return Problem(id=id, question=question, answer=str(answer), kind="organism",
                   metadata={"start": start, "ops": list(ops)})


def generate_problems(n: int, seed: int = 0, variant: str = "default") -> list[Problem]:
    """`n` problems, deterministic in (n, seed, variant): problem i is the same whatever n is."""
    rng = random.Random(f"organism-{variant}-{seed}")
    return [make_problem(*sample_chain(rng, variant), id=f"organism-{variant}-{seed}-{i}") for i in range(n)]


def write_response(problem: Problem, rng: random.Random | None = None, slip_rate: float = 0.0,
                   flags: bool = True, correct: bool = False, unflagged_rate: float = 0.0) -> str:
    """The response text (without EOS). Each printed result is replaced by a wrong digit with probability
    `slip_rate` and the chain continues from the printed value; `flags` adds the slip flags and the
    self-assessment letter (the organism learns them in its second training phase).

    `correct` (the corrector's format; needs `flags`): a slip is left unflagged with probability
    `unflagged_rate` (the chain continues from the wrong value), otherwise it is flagged and the next line
    rewrites the step from the same input with the right result, the chain continuing from that. Corrections
    never slip. With `correct` False the text, and the draws taken from `rng`, are the flagger's."""
    if correct and not flags:
        raise RewardscopeError("write_response: correct=True needs flags=True (a correction follows a flag)")
    value, lines = problem.metadata["start"], []
    for i, op in enumerate(problem.metadata["ops"], start=1):
        result = printed = apply(value, op)
        if rng is not None and rng.random() < slip_rate:
            printed = (result + rng.randint(1, 9)) % 10
        flag = FLAG if flags and printed != result else ""
        if flag and correct and rng.random() < unflagged_rate:
            flag = ""
        lines.append(f"{i}:{value}{op}={printed}{flag}")
        if flag and correct:
            lines.append(f"{i}:{value}{op}={result}")
            printed = result
        value = printed
    assessment = (YES if str(value) == problem.answer else NO) if flags else ""
    return STEP_DELIMITER.join([*lines, f"A{value}{assessment}"])


def extract_answer(text: str) -> str | None:
    """The digit of the last answer line ("A<d>", optionally followed by Y or N), None if there is none."""
    for line in reversed(text.split(STEP_DELIMITER)):
        m = _ANSWER_LINE.fullmatch(line.strip())
        if m:
            return m.group(1)
    return None


@dataclass(frozen=True)
class StepLine:
    line: int  # index among the response's non-empty lines (= the rollout's step index)
    printed: int  # the result the model printed
    expected: int  # the step's operation applied to the previously printed value
    restated: bool  # the line restates the chain: right step number, previous value and operation
    flagged: bool
    # a rewrite of the flagged step line just above: same step number, judged from the same input (the
    # corrector's format); `expected` is then that step's right result, `restated` checks the same input
    correction: bool = False

    @property
    def slip(self) -> bool:
        return self.printed != self.expected


@dataclass(frozen=True)
class StepTruth:
    steps: tuple[StepLine, ...]  # well-formed step lines, in order, corrections included
    first_wrong_step: int | None  # `line` of the first slip, None if no step slipped
    answer: str | None
    correct: bool  # answer == the problem's gold answer
    self_assessment: str | None  # "Y", "N", or None when absent
    malformed: tuple[tuple[int, str], ...]  # (line, text) of lines that are neither a step nor the answer

    @property
    def chain(self) -> tuple[StepLine, ...]:
        """The step lines without the corrections: one per step of the problem when the response is complete."""
        return tuple(s for s in self.steps if not s.correction)

    def correction_of(self, step: StepLine) -> StepLine | None:
        """The correction written on the line right after `step` (one of `steps`), None if there is none."""
        following = next((s for s in self.steps if s.line == step.line + 1), None)
        return following if following is not None and following.correction else None


def step_truth(problem: Problem, response: str) -> StepTruth:
    """Judge every line of a response against the problem. Never raises on garbage: unparsable lines, and step
    lines beyond the problem's length, land in `malformed`; judging continues from the last printed value.

    A step line right after a flagged step line that carries the same step number is a correction of it (the
    corrector's format): it is judged from the flagged line's input, and the chain continues from its printed
    value. A correction can itself be flagged and corrected."""
    ops, value = problem.metadata["ops"], problem.metadata["start"]
    lines = [s.strip() for s in response.split(STEP_DELIMITER) if s.strip()]
    steps, malformed, answer, assessment = [], [], None, None
    n_chain, previous_input = 0, value  # steps of the chain judged so far; the input of the last one
    for i, text in enumerate(lines):
        step, ans = _STEP_LINE.fullmatch(text), _ANSWER_LINE.fullmatch(text)
        number = int(step.group(1)) if step else None
        correction = (step is not None and bool(steps) and steps[-1].flagged and steps[-1].line == i - 1
                      and number == n_chain)
        if step and (correction or n_chain < len(ops)):
            if correction:
                index, value = n_chain - 1, previous_input
            else:
                index, previous_input = n_chain, value
                n_chain += 1
            op = ops[index]
            _, operand, op_char, digit, printed, flag = step.groups()
            restated = (number, int(operand), op_char + digit) == (index + 1, value, op)
            steps.append(StepLine(i, int(printed), apply(value, op), restated, flag == FLAG, correction))
            value = int(printed)
        elif ans:
            answer, assessment = ans.group(1), ans.group(2) or None
        else:
            malformed.append((i, text))
    first_wrong = next((s.line for s in steps if s.slip), None)
    return StepTruth(tuple(steps), first_wrong, answer, answer == problem.answer, assessment, tuple(malformed))
