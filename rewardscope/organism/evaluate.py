"""How good is an organism: accuracy (greedy and sampled) and how well it flags, and corrects, its own slips.

Figures come from the package's step-level ground truth (`task.step_truth`) on problems drawn with a seed the
training stream never used, each rate with a Wilson 95% confidence interval and its n.

Beyond the flagger's figures: the correction rate (of the flagged slips, the share whose next line is the right
correction), and the accuracy with the flag token forbidden (sampled like the others, with the same seed, but `!`
can never be drawn). The flagger reads its error signal out but never uses it, so forbidding `!` leaves its
accuracy where it was; the corrector's falls, since it can then no longer correct what it noticed.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from rewardscope.models import load_model, resolve_model_path
from rewardscope.organism.task import FLAG, YES, generate_problems, step_truth
from rewardscope.organism.train import MAX_NEW_TOKENS
from rewardscope.rollout import hf
from rewardscope.stats import rate

EVAL_SEED = 1000  # training draws from its own stream ("organism-train-<seed>"); this one is held out


@contextmanager
def banned_tokens(model, token_ids: list[int]):
    """While inside, `model`'s next-token logits of `token_ids` are the dtype's lowest value, so no sampler
    (greedy or at any temperature) draws them: a forward hook on the output embedding, removed on exit."""
    def hook(module, inputs, output):
        output[..., token_ids] = torch.finfo(output.dtype).min
        return output

    if not token_ids:
        yield
        return
    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def generate(model, tokenizer, questions: list[str], temperature: float = 0.0, seed: int = 0,
             batch_size: int = 128, banned: list[int] = ()) -> list[str]:
    """Responses to `questions` through the chat template, sampled by the rollout stage's own sampler (exact
    temperature, top-p 1, the checkpoint's other sampling settings off); temperature 0 is greedy. At most the
    checkpoint's `max_new_tokens` (the corrector's responses are longer). `banned`: token ids never drawn."""
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in questions]
    max_new_tokens = getattr(model.generation_config, "max_new_tokens", None) or MAX_NEW_TOKENS
    with banned_tokens(model, list(banned)):
        generations = hf.generate(model, tokenizer, prompts, n=1, temperature=temperature, top_p=1.0,
                                  max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    return [samples[0].text for samples in generations]


def organism_kind(model: str) -> str:
    """"corrector" or "flagger": what the training record beside the weights says (the flagger's has no
    "variant"); "flagger" when there is none."""
    record = Path(resolve_model_path(model)) / "training.json"
    if not record.is_file():
        return "flagger"
    return json.loads(record.read_text()).get("variant", "flagger")


def _well_formed(problem, truth) -> bool:
    return (not truth.malformed and truth.answer is not None and all(s.restated for s in truth.steps)
            and len(truth.chain) == len(problem.metadata["ops"]))


def evaluate(model: str = "demo", n_problems: int = 400, seed: int = EVAL_SEED, temperature: float = 0.8,
             variant: str = "default") -> dict:
    """Greedy and sampled accuracy, slip-flag recall, false-flag and correction rates (on the sampled rollouts,
    over every step line, corrections included), the accuracy of the final Y/N self-assessment, and the sampled
    accuracy with the flag token forbidden, on `n_problems` held-out problems (one rollout each)."""
    lm, tokenizer = load_model(model)
    problems = generate_problems(n_problems, seed=seed, variant=variant)
    questions = [p.question for p in problems]
    flag_id = tokenizer.convert_tokens_to_ids(FLAG)
    greedy = [step_truth(p, r) for p, r in zip(problems, generate(lm, tokenizer, questions))]
    sampled = [step_truth(p, r) for p, r in zip(problems, generate(lm, tokenizer, questions, temperature, seed))]
    forbidden = [step_truth(p, r) for p, r in
                 zip(problems, generate(lm, tokenizer, questions, temperature, seed, banned=[flag_id]))]
    steps = [s for t in sampled for s in t.steps]
    slips = [s for s in steps if s.slip]
    flagged_slips = [(t, s) for t in sampled for s in t.steps if s.slip and s.flagged]
    corrected = sum(c is not None and not c.slip for c in (t.correction_of(s) for t, s in flagged_slips))
    n_correct_steps = len(steps) - len(slips)
    return {
        "model": model, "organism": organism_kind(model), "variant": variant, "seed": seed,
        "temperature": temperature, "n_problems": n_problems,
        "greedy_accuracy": rate(sum(t.correct for t in greedy), n_problems),
        "sampled_accuracy": rate(sum(t.correct for t in sampled), n_problems),
        "flags_forbidden_accuracy": rate(sum(t.correct for t in forbidden), n_problems),
        "step_slip_rate": rate(len(slips), len(steps)),
        "flag_recall": rate(sum(s.flagged for s in slips), len(slips)),
        "false_flag_rate": rate(sum(s.flagged for s in steps if not s.slip), n_correct_steps),
        # of the flagged slips, the share whose next line rewrites the step with the right result
        "correction_rate": rate(corrected, len(flagged_slips)),
        "self_assessment_accuracy": rate(
            sum(t.self_assessment is not None and (t.self_assessment == YES) == t.correct for t in sampled),
            n_problems),
        # a line that is neither a step nor the answer, a step missing or misstating the chain, no answer
        "format_error_rate": rate(sum(not _well_formed(p, t) for p, t in zip(problems, sampled)), n_problems),
        "flags_forbidden_slip_rate": rate(sum(s.slip for t in forbidden for s in t.steps),
                                          sum(len(t.steps) for t in forbidden)),
        "n_slips": len(slips),
        "n_correct_steps": n_correct_steps,
        "n_corrections": sum(s.correction for s in steps),
    }
