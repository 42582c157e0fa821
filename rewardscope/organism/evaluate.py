"""How good is an organism: accuracy (greedy and sampled) and how well it flags its own slips.

Figures come from the package's step-level ground truth (`task.step_truth`) on problems drawn with a seed the
training stream never used, each rate with a Wilson 95% confidence interval and its n.
"""

from __future__ import annotations

from rewardscope.models import load_model
from rewardscope.organism.task import YES, generate_problems, step_truth
from rewardscope.organism.train import MAX_NEW_TOKENS
from rewardscope.rollout import hf
from rewardscope.stats import rate

EVAL_SEED = 1000  # training draws from its own stream ("organism-train-<seed>"); this one is held out


def generate(model, tokenizer, questions: list[str], temperature: float = 0.0, seed: int = 0,
             batch_size: int = 128) -> list[str]:
    """Responses to `questions` through the chat template, sampled by the rollout stage's own sampler (exact
    temperature, top-p 1, the checkpoint's other sampling settings off); temperature 0 is greedy."""
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in questions]
    generations = hf.generate(model, tokenizer, prompts, n=1, temperature=temperature, top_p=1.0,
                              max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size, seed=seed)
    return [samples[0].text for samples in generations]


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
