"""Benchmark: batched vs one-by-one sampling with the Hugging Face backend, side by side in one process.

Generated tokens per second of each, their ratio, and the peak resident memory after each. On the demo
organism when its weights exist, otherwise on a tiny random Llama with the character tokenizer.

    .venv/bin/python bench/rollouts.py [--problems 32] [--n 4] [--batch-size 128] [--single 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from rewardscope.config import PromptConfig
from rewardscope.data import build_prompt
from rewardscope.models import DEMO_MODEL_DIR, load_model, tiny_model
from rewardscope.organism.task import generate_problems
from rewardscope.rollout import generate


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(model, tok, prompts, n, batch_size, args) -> tuple[int, int, float]:
    start = time.perf_counter()
    out = generate(model, tok, prompts, n=n, temperature=args.temperature, top_p=1.0,
                   max_new_tokens=args.max_new_tokens, batch_size=batch_size, seed=0)
    seconds = time.perf_counter() - start
    return sum(len(o) for o in out), sum(len(g.response_ids) for o in out for g in o), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", type=int, default=32, help="organism problems sampled in the batched run")
    p.add_argument("--n", type=int, default=4, help="rollouts per problem")
    p.add_argument("--batch-size", type=int, default=128, help="sequences per generate call, batched run")
    p.add_argument("--single", type=int, default=32, help="sequences of the one-by-one run (it is the slow one)")
    p.add_argument("--max-new-tokens", type=int, default=96)  # an organism response fits in ~70 tokens
    p.add_argument("--temperature", type=float, default=0.8)  # the demo recipe's
    # One thread: on models this small OpenMP synchronisation costs more than it gains, and on a shared
    # machine two threads can be 100x slower than one.
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    if (DEMO_MODEL_DIR / "config.json").exists():
        model, tok = load_model("demo", dtype="float32", device="cpu")
        name = "demo organism"
    else:
        from rewardscope.organism.tokenizer import build_char_tokenizer

        tok = build_char_tokenizer()
        model, name = tiny_model("llama", tok), "tiny random llama (demo organism not trained yet)"
    prompts = [build_prompt(q, tok, PromptConfig()) for q in generate_problems(args.problems, seed=1)]
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {name}, {params / 1e6:.2f}M parameters, {model.device}, torch threads {torch.get_num_threads()}")
    print(f"sampling: temperature {args.temperature}, max_new_tokens {args.max_new_tokens}")
    timed(model, tok, prompts[:2], 1, 2, args)  # warm-up: first-call allocations and lazy imports

    rows = []
    for label, prompts_used, n, batch_size in [
        ("batched", prompts, args.n, args.batch_size),
        ("one-by-one", prompts[: args.single], 1, 1),
    ]:
        sequences, tokens, seconds = timed(model, tok, prompts_used, n, batch_size, args)
        rows.append((label, batch_size, sequences, tokens, seconds, tokens / seconds, peak_rss_mib()))

    print(f"{'mode':<11} {'batch':>5} {'seqs':>5} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'peak RSS MiB':>13}")
    for label, batch_size, sequences, tokens, seconds, rate, rss in rows:
        print(f"{label:<11} {batch_size:>5} {sequences:>5} {tokens:>7} {seconds:>8.2f} {rate:>9.0f} {rss:>13.0f}")
    print(f"batched / one-by-one throughput: {rows[0][5] / rows[1][5]:.1f}x")


if __name__ == "__main__":
    main()
