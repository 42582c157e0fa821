"""Benchmark: sampling speed on a real model (SmolLM2-135M-Instruct, 49,152-token vocabulary), in one process.

(0) With --rollout-prompts N: the rollout sampling against the bare loop over the same batches and steps.
(1) One batch, side by side, fastest of `--rounds` interleaved rounds: a bare KV-cached greedy loop (model
    forward with the cache, argmax), HF `generate` greedy, HF `generate` top-p (also with a static KV cache),
    rewardscope's `rollout.hf.generate` (temperature 1, top-p 0.95) and one teacher-forced forward of the same
    sequences.
    Row-steps/s counts every row of every decoding step (finished rows too); ms/step is per batch step; the
    ratio is ms/step against the bare loop.
(2) Where a rollout shard's time goes: torch.profiler over one `rollout.hf.generate` call (decoder, LM head,
    vocabulary-wide sampling ops, everything outside an op = Python), the wasted row-steps of finished rows,
    padding, and top-p sampling timed alone on [batch, vocab] logits.
(3) Batch size x dtype sweep of `rollout.hf.generate` over the same `--sweep-prompts` prompts.
(4) With `--responses FILE.jsonl` (rows with "prompt", "n_tokens" and optionally "dataset"/"temperature", e.g.
    the output of scripts/smollm2_responses.py): the row-steps that finished rows would waste at each batch size,
    batched as `generate` batches them (longest prompt first).

    .venv/bin/python bench/sampling.py [--rollout-prompts 64 --rollout-tokens 200] [--batch-size 32] [--new-tokens 64] [--threads 1] [--rounds 2] [--no-sweep]

About 30 minutes on 2 shared CPU cores (docs/models.md has the figures); --rounds 1 --no-sweep about 10.

Prompts: GSM8K test questions through the chat template (../shared/data/gsm8k/test.jsonl, else built-in ones).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch

from rewardscope.config import DataConfig, PromptConfig
from rewardscope.data import build_prompt
from rewardscope.data.record import Problem
from rewardscope.models import load_model
from rewardscope.rollout.decode import nucleus
from rewardscope.rollout.hf import eos_token_ids, generate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "test.jsonl"
FALLBACK = ["What is {a} + {b}?", "A shop sells {a} apples and {b} pears. How many fruits does it sell?",
            "Sam has {a} coins and gives away {b}. How many are left? Explain step by step."]


def questions(n: int) -> list[Problem]:
    if DATA.is_file():
        from rewardscope.data import load_problems

        return load_problems(DataConfig(dataset="gsm8k", path=str(DATA), limit=n))
    return [Problem(id=str(i), question=FALLBACK[i % 3].format(a=i + 3, b=2 * i + 1), answer="", kind="number")
            for i in range(n)]


def left_padded(tok, prompts: list[str]):
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    return input_ids, mask, [len(s) for s in ids]


PREFILL_S: list[float] = []  # the bare loop's prefill seconds, per call


def bare_greedy(model, input_ids, mask, steps: int) -> torch.Tensor:
    """The floor: prefill (logits of the last position only), then one cached forward + argmax per token."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=position, cache=cache, use_cache=True,
                    logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1)
        PREFILL_S.append(time.perf_counter() - start)
        tokens = [token]
        for _ in range(steps - 1):
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
            position = position[:, -1:] + 1
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, cache=cache,
                        use_cache=True)
            token = out.logits[:, -1].argmax(-1)
            tokens.append(token)
    return torch.stack(tokens, 1)


def hf_generate(model, tok, input_ids, mask, steps: int, sample: bool, static: bool = False):
    eos = sorted(eos_token_ids(model.generation_config, tok))
    options = dict(do_sample=True, temperature=1.0, top_p=0.95, top_k=0) if sample else dict(do_sample=False)
    if static:  # a preallocated KV cache written in place, instead of DynamicCache's torch.cat at every step
        options["cache_implementation"] = "static"
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=eos,
                             pad_token_id=tok.pad_token_id, **options)
    return out[:, input_ids.shape[1]:]


def useful(tokens: torch.Tensor, eos: set[int]) -> tuple[int, list[int]]:
    """Response lengths (up to and including the first EOS) of generated rows."""
    lengths = []
    for row in tokens.tolist():
        end = next((i for i, t in enumerate(row) if t in eos), None)
        lengths.append(len(row) if end is None else end + 1)
    return sum(lengths), lengths


def rollout_vs_bare(model, tok, prompts, max_new_tokens: int, batch_size: int, rounds: int) -> None:
    """(0) The rollout stage's sampling against the bare loop on the same batches: `rollout.hf.generate` at
    temperature 1, top-p 0.95 (it stops a batch when its last row samples EOS), then the bare greedy loop over
    each batch for as many steps as that batch's longest response, and HF `generate` top-p (max_new_tokens)."""
    eos = eos_token_ids(model.generation_config, tok)
    order = sorted(range(len(prompts)), key=lambda i: -len(tok(prompts[i], add_special_tokens=False)["input_ids"]))
    batches = [[prompts[i] for i in order[b:b + batch_size]] for b in range(0, len(order), batch_size)]
    best: dict[str, list[float]] = {}
    for _ in range(rounds):
        timings: dict[str, float] = defaultdict(float)
        useful_tokens: dict[str, int] = defaultdict(int)
        for batch in batches:
            start = time.perf_counter()
            out = generate(model, tok, batch, n=1, temperature=1.0, top_p=0.95, max_new_tokens=max_new_tokens,
                           batch_size=len(batch), seed=0)
            timings["rewardscope rollout"] += time.perf_counter() - start
            lengths = [len(g[0].response_ids) for g in out]
            useful_tokens["rewardscope rollout"] += sum(lengths)
            input_ids, mask, _ = left_padded(tok, batch)
            start = time.perf_counter()
            bare_greedy(model, input_ids, mask, max(lengths))
            timings["bare loop, same steps"] += time.perf_counter() - start
            useful_tokens["bare loop, same steps"] += sum(lengths)  # the same work: the rollout's tokens
            start = time.perf_counter()
            theirs = hf_generate(model, tok, input_ids, mask, max_new_tokens, sample=True)
            timings["HF generate top-p"] += time.perf_counter() - start
            useful_tokens["HF generate top-p"] += useful(theirs, eos)[0]
        for label, seconds in timings.items():
            if label not in best or seconds < best[label][0]:
                best[label] = [seconds, useful_tokens[label]]
    bare = best["bare loop, same steps"][0]
    print(f"\n(0) {len(prompts)} prompts in batches of {batch_size}, up to {max_new_tokens} new tokens, "
          f"fastest of {rounds} round(s)")
    print(f"{'contender':<24} {'seconds':>8} {'useful tok/s':>13} {'time / bare loop':>17}")
    for label, (seconds, tokens) in best.items():
        print(f"{label:<24} {seconds:>8.1f} {tokens / seconds:>13.1f} {seconds / bare:>17.2f}", flush=True)


def side_by_side(model, tok, prompts, steps: int, rounds: int) -> dict:
    input_ids, mask, lengths = left_padded(tok, prompts)
    eos = eos_token_ids(model.generation_config, tok)
    batch = len(prompts)
    best: dict[str, tuple] = {}
    ours_out = None
    for _ in range(rounds):
        for label, run in [
            ("bare greedy loop", lambda: bare_greedy(model, input_ids, mask, steps)),
            ("HF generate greedy", lambda: hf_generate(model, tok, input_ids, mask, steps, sample=False)),
            ("HF generate top-p", lambda: hf_generate(model, tok, input_ids, mask, steps, sample=True)),
            ("HF top-p, static cache", lambda: hf_generate(model, tok, input_ids, mask, steps, sample=True,
                                                           static=True)),
            ("rewardscope generate", lambda: generate(model, tok, prompts, n=1, temperature=1.0, top_p=0.95,
                                                       max_new_tokens=steps, batch_size=batch, seed=0)),
        ]:
            start = time.perf_counter()
            out = run()
            seconds = time.perf_counter() - start
            if label == "rewardscope generate":
                ours_out = out
                responses = [g[0].response_ids for g in out]
                n_steps, n_useful = max(map(len, responses)), sum(map(len, responses))
            else:
                n_steps, n_useful = out.shape[1], useful(out, eos)[0]
            if label not in best or seconds < best[label][0]:
                best[label] = (seconds, n_steps, n_useful)
        # Teacher forcing: one forward over prompt + the sampled responses (right padded, no cache).
        seqs = [g[0].prompt_ids + g[0].response_ids for g in ours_out]
        width = max(map(len, seqs))
        ids = torch.full((batch, width), tok.pad_token_id, dtype=torch.long)
        tf_mask = torch.zeros((batch, width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, :len(seq)], tf_mask[row, :len(seq)] = torch.tensor(seq), 1
        start = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=tf_mask, use_cache=False)
        seconds = time.perf_counter() - start
        n_resp = sum(len(g[0].response_ids) for g in ours_out)
        if "teacher-forced forward" not in best or seconds < best["teacher-forced forward"][0]:
            best["teacher-forced forward"] = (seconds, None, n_resp)
    bare_s, bare_steps, _ = best["bare greedy loop"]
    bare_per_row_step = bare_s / (batch * bare_steps)
    print(f"\n(1) batch {batch}, {steps} new tokens, prompts {min(lengths)}-{max(lengths)} tokens, "
          f"fastest of {rounds} rounds; vs bare: seconds per row-step (teacher forcing: per response token) "
          f"over the bare loop's")
    print(f"{'method':<24} {'seconds':>8} {'steps':>6} {'row-steps/s':>12} {'useful tok/s':>13} {'ms/step':>8} "
          f"{'vs bare':>8}")
    for label, (seconds, n_steps, n_useful) in best.items():
        work = n_useful if n_steps is None else batch * n_steps
        ratio = seconds / work / bare_per_row_step
        steps_col = "-" if n_steps is None else str(n_steps)
        ms = "-" if n_steps is None else f"{1000 * seconds / n_steps:.1f}"
        print(f"{label:<24} {seconds:>8.2f} {steps_col:>6} {work / seconds:>12.0f} {n_useful / seconds:>13.0f} "
              f"{ms:>8} {ratio:>7.3f}x")
    prefill = min(PREFILL_S)
    print(f"bare loop: prefill of {batch} x {input_ids.shape[1]} tokens {prefill:.2f} s, then "
          f"{1000 * (bare_s - prefill) / (bare_steps - 1):.1f} ms per decoding step of the batch")
    return best


def sampling_alone(logits: torch.Tensor, steps: int) -> tuple[float, float, float]:
    """Seconds per step of HF's temperature + top-p warpers + softmax + multinomial, of the same with a top-k-first
    nucleus, and of argmax, on the model's own next-token logits [batch, vocab]."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    batch = len(logits)
    warpers = [TemperatureLogitsWarper(1.0), TopPLogitsWarper(0.95)]
    ids = torch.zeros(batch, 1, dtype=torch.long)
    start = time.perf_counter()
    for _ in range(steps):
        scores = logits.float()
        for w in warpers:
            scores = w(ids, scores)
        torch.multinomial(torch.softmax(scores, -1), 1)
    top_p = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for _ in range(steps):
        torch.multinomial(torch.softmax(nucleus(logits.float(), 0.95, k=1024), -1), 1)
    partial = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for _ in range(steps):
        logits.argmax(-1)
    return top_p, partial, (time.perf_counter() - start) / steps


def profile(model, tok, prompts, steps: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    vocab = model.config.vocab_size
    batch = len(prompts)
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        out = generate(model, tok, prompts, n=1, temperature=1.0, top_p=0.95, max_new_tokens=steps,
                       batch_size=batch, seed=1)
        wall = time.perf_counter() - start
    # Attribute each op's self time: the LM head (a matmul whose weight has `vocab` rows), any other op on a
    # vocabulary-wide tensor (logits processing and sampling), and the rest (the decoder).
    buckets: dict[str, float] = defaultdict(float)
    top_ops: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        self_s = event.self_cpu_time_total / 1e6
        shapes = str(event.input_shapes)
        if str(vocab) in shapes:
            bucket = "LM head (matmul to 49,152 logits)" if event.key in ("aten::mm", "aten::addmm", "aten::linear",
                                                                          "aten::matmul") else \
                "sampling and logits processing (vocab-wide ops)"
        elif event.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul",
                           "aten::_scaled_dot_product_flash_attention_for_cpu",
                           "aten::scaled_dot_product_attention"):
            bucket = "decoder matmuls and attention"
        else:
            bucket = "decoder other ops (norms, rotary, cache cat, masks, copies)"
        buckets[bucket] += self_s
        top_ops[f"{event.key} {shapes[:60]}"] += self_s
    in_ops = sum(buckets.values())
    buckets["outside any op (Python, generate's loop, hooks; inflated by the profiler)"] = max(wall - in_ops, 0)
    print(f"\n(2) profile of one rewardscope generate call: batch {batch}, {steps} new tokens, "
          f"{wall:.2f} s wall under the profiler")
    for name, seconds in sorted(buckets.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds:7.2f} s  {100 * seconds / wall:5.1f}%  {name}")
    print("  top ops by self time:")
    for name, seconds in sorted(top_ops.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {seconds:7.2f} s  {name}")

    responses = [len(g[0].response_ids) for g in out]
    longest = max(responses)
    wasted = sum(longest - n for n in responses)
    print(f"  finished rows still decoding: responses {min(responses)}-{longest} tokens, "
          f"{sum(r < longest for r in responses)}/{batch} rows finish early; wasted row-steps {wasted} of "
          f"{batch * longest} ({100 * wasted / (batch * longest):.1f}%)")
    lengths = [len(g[0].prompt_ids) for g in out]
    width = max(lengths)
    pad = sum(width - n for n in lengths)
    print(f"  padding: prefill {pad} pad tokens of {batch * width} ({100 * pad / (batch * width):.1f}%); "
          f"attention over pads at the last step {100 * pad / (batch * (width + longest)):.1f}% of keys")
    from transformers.generation.logits_process import TopPLogitsWarper

    seqs = [g[0].prompt_ids + g[0].response_ids for g in out]
    input_ids = torch.full((batch, max(map(len, seqs))), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, seq in enumerate(seqs):
        input_ids[row, input_ids.shape[1] - len(seq):], mask[row, input_ids.shape[1] - len(seq):] = torch.tensor(seq), 1
    with torch.inference_mode():  # real next-token distributions: the last position of each rollout
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       logits_to_keep=1).logits[:, -1].float()
    top_p_s, partial_s, argmax_s = sampling_alone(logits, 20)
    kept = torch.isinf(nucleus(logits, 0.95, k=1024))
    same = torch.equal(kept, torch.isinf(TopPLogitsWarper(0.95)(None, logits)))
    mass = logits.softmax(-1).topk(1024, dim=-1).values.sum(-1)
    step_s = wall / longest
    print(f"  top-p sampling alone on [{batch}, {vocab}] logits: {1000 * top_p_s:.1f} ms/step "
          f"({100 * top_p_s / step_s:.1f}% of a step under the profiler); top-k-first nucleus (k 1024) "
          f"{1000 * partial_s:.1f} ms/step (same tokens kept: {same}; top 1024 hold >= 0.95 in "
          f"{int((mass >= 0.95).sum())}/{batch} rows); argmax {1000 * argmax_s:.2f} ms/step")


def sweep(models: dict, tok, prompts, steps: int, batch_sizes: list[int]) -> None:
    print(f"\n(3) rewardscope generate, {len(prompts)} prompts, {steps} new tokens, temperature 1, top-p 0.95")
    print(f"{'dtype':<9} {'batch':>5} {'seconds':>8} {'useful tok/s':>13} {'row-steps/s':>12} {'wasted':>7}")
    for dtype, model in models.items():
        for batch_size in batch_sizes:
            start = time.perf_counter()
            out = generate(model, tok, prompts, n=1, temperature=1.0, top_p=0.95, max_new_tokens=steps,
                           batch_size=batch_size, seed=0)
            seconds = time.perf_counter() - start
            # generate runs prompts longest first in batches of batch_size: rebuild the batches' lengths.
            order = sorted(range(len(prompts)), key=lambda i: -len(out[i][0].prompt_ids))
            lens = [len(out[i][0].response_ids) for i in order]
            row_steps = sum(max(lens[b:b + batch_size]) * len(lens[b:b + batch_size])
                            for b in range(0, len(lens), batch_size))
            print(f"{dtype:<9} {batch_size:>5} {seconds:>8.2f} {sum(lens) / seconds:>13.0f} "
                  f"{row_steps / seconds:>12.0f} {100 * (1 - sum(lens) / row_steps):>6.1f}%", flush=True)


def wasted_by_batch(path: str, batch_sizes: list[int]) -> None:
    import json

    groups: dict[tuple, list[dict]] = defaultdict(list)  # one generate call per dataset kind and temperature
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        groups[(row.get("dataset") == "gsm8k", row.get("temperature"))].append(row)
    lengths = [r["n_tokens"] for g in groups.values() for r in g]
    print(f"\n(4) {len(lengths)} responses of {path}: {min(lengths)}-{max(lengths)} tokens, mean "
          f"{sum(lengths) / len(lengths):.0f}; row-steps spent on rows that have already ended:")
    for batch_size in batch_sizes:
        used = total = 0
        for rows in groups.values():
            rows = sorted(rows, key=lambda r: -len(r["prompt"]))  # longest prompt first, as generate does
            for b in range(0, len(rows), batch_size):
                n = [r["n_tokens"] for r in rows[b:b + batch_size]]
                used, total = used + sum(n), total + max(n) * len(n)
        print(f"  batch {batch_size:>3}: {100 * (1 - used / total):.1f}% wasted")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sweep-prompts", type=int, default=64)
    p.add_argument("--sweep-batches", default="8,16,32,64")
    p.add_argument("--bf16-batches", default="32", help="bfloat16 is slow on CPUs without bf16 matmul units")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--no-side-by-side", action="store_true")
    p.add_argument("--rollout-prompts", type=int, default=0,
                   help="(0): this many prompts through rollout.hf.generate against the bare loop, same batches")
    p.add_argument("--rollout-tokens", type=int, default=200)
    p.add_argument("--responses", help="a JSONL of real responses (prompt, n_tokens): the waste of finished rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.responses:
        wasted_by_batch(args.responses, [int(b) for b in args.sweep_batches.split(",")])

    start = time.perf_counter()
    model, tok = load_model(args.model, dtype="float32", device="cpu", threads=args.threads)
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, vocabulary "
          f"{model.config.vocab_size}, loaded in {time.perf_counter() - start:.1f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    problems = questions(max(args.batch_size, args.sweep_prompts, args.rollout_prompts))
    prompts = [build_prompt(q, tok, PromptConfig()) for q in problems]
    generate(model, tok, prompts[:2], n=1, temperature=1.0, top_p=0.95, max_new_tokens=4, batch_size=2,
             seed=0)  # warm-up: first-call allocations, lazy imports
    if args.rollout_prompts:
        rollout_vs_bare(model, tok, prompts[: args.rollout_prompts], args.rollout_tokens, args.batch_size,
                        args.rounds)
    if not args.no_side_by_side:
        side_by_side(model, tok, prompts[: args.batch_size], args.new_tokens, args.rounds)
    if not args.no_profile:
        profile(model, tok, prompts[: args.batch_size], args.new_tokens)
    if not args.no_sweep:
        for dtype, batches in [("float32", args.sweep_batches), ("bfloat16", args.bf16_batches)]:
            if not batches:
                continue
            lm = model if dtype == "float32" else load_model(args.model, dtype=dtype, device="cpu",
                                                              threads=args.threads)[0]
            sizes = [int(b) for b in batches.split(",")]
            sweep({dtype: lm}, tok, prompts[: args.sweep_prompts], args.new_tokens, sizes)


if __name__ == "__main__":
    main()
