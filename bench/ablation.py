"""Benchmark: generation throughput with an ablation hook against without, in one process (goal >= 0.95).

Contenders, interleaved in each of `--rounds` rounds (the fastest round of each is kept): `rollout.hf.generate`
greedy with no hook; with `ablate(model, {layer: 1% of dims})` (mode zero, every position); the same in mode
mean; a direction projected out. Greedy decoding, so every contender decodes exactly as many tokens (unless the
ablation changes where EOS comes; the table shows the tokens). Prints tokens/s and the ratio to no hook.

    .venv/bin/python bench/ablation.py [--model smollm2-135m-instruct] [--prompts 16] [--new-tokens 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from rewardscope.ablate import ablate
from rewardscope.config import PromptConfig
from rewardscope.data import build_prompt
from rewardscope.data.record import Problem
from rewardscope.models import load_model
from rewardscope.rollout import generate

QUESTIONS = ["What is {a} + {b}?", "Name {a} animals that live in the sea.", "Explain in {a} sentences why the sky is blue."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--layer", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, dtype="float32", device="cpu", threads=args.threads)
    d = model.config.hidden_size
    problems = [Problem(str(i), QUESTIONS[i % 3].format(a=i % 7 + 2, b=3 * i + 1), "", "number")
                for i in range(args.prompts)]
    prompts = [build_prompt(q, tok, PromptConfig(instruction="")) for q in problems]
    dims = list(range(0, d, 100))[: max(1, d // 100)]  # 1% of the width, spread over it
    direction = torch.randn(d, generator=torch.Generator().manual_seed(0))
    contenders = {
        "no hook": None,
        "zero, 1% of dims": ablate(model, {args.layer: dims}),
        "mean, 1% of dims": ablate(model, {args.layer: dims}, mode="mean", means={args.layer: torch.zeros(d)}),
        "project, 1 direction": ablate(model, {args.layer: direction}, mode="project"),
    }
    generate(model, tok, prompts[:2], temperature=0, max_new_tokens=4)  # warm-up
    best: dict[str, tuple[float, int]] = {}
    for _ in range(args.rounds):
        for label, ablation in contenders.items():
            start = time.perf_counter()
            out = generate(model, tok, prompts, temperature=0, max_new_tokens=args.new_tokens,
                           batch_size=len(prompts), hooks=None if ablation is None else ablation.hooks)
            seconds = time.perf_counter() - start
            tokens = sum(len(g[0].response_ids) for g in out)
            if label not in best or seconds < best[label][0]:
                best[label] = (seconds, tokens)
    base = best["no hook"][1] / best["no hook"][0]
    print(f"{args.model}: {args.prompts} prompts x up to {args.new_tokens} new tokens, greedy, layer {args.layer}, "
          f"{torch.get_num_threads()} thread(s), fastest of {args.rounds} rounds")
    print(f"{'contender':<22} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'ratio to no hook':>17}")
    for label, (seconds, tokens) in best.items():
        print(f"{label:<22} {seconds:>8.2f} {tokens:>7} {tokens / seconds:>9.1f} {tokens / seconds / base:>17.3f}")


if __name__ == "__main__":
    main()
