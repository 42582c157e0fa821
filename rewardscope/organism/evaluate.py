"""How good is an organism: accuracy (greedy and sampled) and how well it flags its own slips.

Figures come from the package's step-level ground truth (`task.step_truth`) on problems drawn with a seed the
training stream never used, each rate with a Wilson 95% confidence interval and its n.
"""

from __future__ import annotations

import torch
from scipy.stats import binomtest

from rewardscope.models import load_model
from rewardscope.organism.task import YES, generate_problems, step_truth
from rewardscope.organism.train import MAX_NEW_TOKENS

EVAL_SEED = 1000  # training draws from its own stream ("organism-train-<seed>"); this one is held out


def rate(successes: int, n: int) -> dict:
    """{"value", "ci95": [low, high] (Wilson), "n"}; value None when n is 0."""
    if n == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"value": successes / n, "ci95": [float(ci.low), float(ci.high)], "n": n}


@torch.no_grad()
def generate(model, tokenizer, questions: list[str], temperature: float = 0.0, seed: int = 0,
             batch_size: int = 128) -> list[str]:
    """Responses (special tokens removed) to `questions`, batched with left padding; temperature 0 is greedy."""
    torch.manual_seed(seed)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in questions]
    sampling = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0) if temperature > 0 else \
        dict(do_sample=False)
    responses = []
    for i in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[i : i + batch_size], add_special_tokens=False, padding=True,
                          padding_side="left", return_tensors="pt").to(model.device)
        out = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, **sampling)
        responses += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return responses


def _well_formed(problem, truth) -> bool:
    return (not truth.malformed and truth.answer is not None and all(s.restated for s in truth.steps)
            and len(truth.steps) == len(problem.metadata["ops"]))


def evaluate(model: str = "demo", n_problems: int = 400, seed: int = EVAL_SEED, temperature: float = 0.8,
             variant: str = "default") -> dict:
    """Greedy and sampled accuracy, slip-flag recall and false-flag rate (on the sampled rollouts), and the
    accuracy of the final Y/N self-assessment, on `n_problems` held-out problems (one rollout each)."""
    lm, tokenizer = load_model(model)
    problems = generate_problems(n_problems, seed=seed, variant=variant)
    questions = [p.question for p in problems]
    greedy = [step_truth(p, r) for p, r in zip(problems, generate(lm, tokenizer, questions))]
    sampled = [step_truth(p, r) for p, r in zip(problems, generate(lm, tokenizer, questions, temperature, seed))]
    steps = [s for t in sampled for s in t.steps]
    slips = [s for s in steps if s.slip]
    n_correct_steps = len(steps) - len(slips)
    return {
        "model": model, "variant": variant, "seed": seed, "temperature": temperature, "n_problems": n_problems,
        "greedy_accuracy": rate(sum(t.correct for t in greedy), n_problems),
        "sampled_accuracy": rate(sum(t.correct for t in sampled), n_problems),
        "step_slip_rate": rate(len(slips), len(steps)),
        "flag_recall": rate(sum(s.flagged for s in slips), len(slips)),
        "false_flag_rate": rate(sum(s.flagged for s in steps if not s.slip), n_correct_steps),
        "self_assessment_accuracy": rate(
            sum(t.self_assessment is not None and (t.self_assessment == YES) == t.correct for t in sampled),
            n_problems),
        # a line that is neither a step nor the answer, a step missing or misstating the chain, no answer
        "format_error_rate": rate(sum(not _well_formed(p, t) for p, t in zip(problems, sampled)), n_problems),
        "n_slips": len(slips),
        "n_correct_steps": n_correct_steps,
    }
