"""Benchmark: hidden-state capture against a bare forward and against generate(output_hidden_states=True).

(a) capture time / bare forward time over the same padded batches (goal <= 1.15): "states" runs the hooked
    forward and copies the states out, "capture" also writes shards, index and metadata to disk. The bare
    forward is the model's own forward (logits of the last position only), no hooks.
(b) the usual route, generate(..., output_hidden_states=True), against generate + our capture: time, the
    memory the route holds, and how far its states are from ours (it cannot give the last token's state, and
    its last layer is after the final norm, so layers 0..L-2 are compared).
(c) peak RSS of a capture of N and 8N rollouts, each in a fresh process: the states are flushed per shard, so
    memory must not grow with the number of rollouts.

Models: the demo organism (a random Llama of its shape until its weights exist) and a random Qwen2-shaped model
(hidden 512, 8 layers) for more realistic ratios. Timings on a shared CPU are noisy (the same pass was seen to
take 2.7 to 12 s): runs are interleaved, the fastest round is kept, wall and CPU time are both reported, and
torch runs one thread by default (with two, every op waits for the more delayed thread).

    .venv/bin/python bench/capture.py [--rollouts 32] [--new-tokens 64] [--repeats 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would garble the tables

import numpy as np
import pyarrow as pa
import torch

from rewardscope.capture import capture
from rewardscope.capture.extract import iter_states, pad_batch, plan_capture
from rewardscope.config import PromptConfig
from rewardscope.data import build_prompt
from rewardscope.models import DEMO_MODEL_DIR, TinySpec, load_model, tiny_model
from rewardscope.organism.task import generate_problems
from rewardscope.organism.tokenizer import build_char_tokenizer
from rewardscope.rollout.steps import step_ends

ORGANISM_SHAPE = TinySpec(hidden=128, layers=4, heads=4, kv_heads=4, intermediate=512)
QWEN2_SHAPE = TinySpec(hidden=512, layers=8, heads=8, kv_heads=2, intermediate=1408)


def peak_rss_mib() -> float:
    """Peak resident memory of this process. VmHWM, unlike ru_maxrss, is not inherited from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def models():
    tok = build_char_tokenizer()
    if (DEMO_MODEL_DIR / "config.json").exists():
        model, tok = load_model("demo", dtype="float32", device="cpu")
        yield "demo organism", model, tok
    else:
        yield "organism-shaped random llama", tiny_model("llama", tok, spec=ORGANISM_SHAPE), tok
    yield "random qwen2 512x8", tiny_model("qwen2", tok, spec=QWEN2_SHAPE), tok


def generation(model, tok, prompts: list[str], new_tokens: int, hidden: bool):
    """Batched sampling (left padding), seeded so that both routes sample the same tokens."""
    batch = tok(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**batch, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=new_tokens,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         output_hidden_states=hidden, return_dict_in_generate=True)
    return out, batch


def rollouts_table(out, batch, tok) -> pa.Table:
    width = batch["input_ids"].shape[1]
    rows = []
    for i, (ids, mask) in enumerate(zip(batch["input_ids"], batch["attention_mask"])):
        response = out.sequences[i, width:].tolist()
        if tok.eos_token_id in response:
            response = response[: response.index(tok.eos_token_id) + 1]
        finished = response[-1:] == [tok.eos_token_id]
        rows.append(dict(
            rollout_id=i, problem_id=str(i), prompt_ids=ids[mask.bool()].tolist(), response_ids=response,
            step_ends=step_ends(tok, response, "\n"), finish_reason="eos" if finished else "length", reward=0.0,
        ))
    return pa.Table.from_pylist(rows)


def bare_forward(model, plan, batch_size: int, pad_id: int) -> None:
    with torch.inference_mode():
        for b0 in range(0, len(plan.sequences), batch_size):
            inputs, _ = pad_batch(plan.sequences[b0 : b0 + batch_size], pad_id, "right", model.device)
            model(**inputs, use_cache=False, logits_to_keep=1)


def quiet_capture(*args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):  # the disk estimate line
        return capture(*args, **kwargs)


def fastest(fns: dict, rounds: int) -> dict[str, float]:
    """Wall and CPU seconds per call of each function (keys `name` and `name_cpu`): interleaved rounds, the
    fastest kept, as contention on a shared machine only ever adds time."""
    best = {}
    for _ in range(rounds):
        for key, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            for k, seconds in ((key, time.perf_counter() - wall), (key + "_cpu", time.process_time() - cpu)):
                best[k] = min(best.get(k, float("inf")), seconds)
    return best


def route_difference(out, table: pa.Table, reader_dir: str, n_layers: int) -> float:
    """Max |generate-route state - our state| over layers 0..L-2, s_0 and every token whose state it has."""
    from rewardscope.capture import CaptureReader

    reader = CaptureReader(reader_dir)
    index = reader.index.to_pydict()
    worst = 0.0
    for layer in range(n_layers - 1):
        ours = reader.load(layer)
        for row, rid, tok_index in zip(index["row"], index["rollout_id"], index["token_index"]):
            step = tok_index + 1  # s_0 is the last prompt position of step 0; token t is read at step t + 1
            if step >= len(out.hidden_states):
                continue  # the last generated token is never read by generate: no state
            theirs = out.hidden_states[step][layer + 1][rid, -1]
            worst = max(worst, (theirs - ours[row]).abs().max().item())
    return worst


def held_bytes(hidden_states) -> int:
    return sum(t.numel() * t.element_size() for step in hidden_states for t in step)


def bench_model(name, model, tok, args) -> tuple[dict, dict]:
    prompts = [build_prompt(p, tok, PromptConfig()) for p in generate_problems(args.rollouts, seed=1)]
    routes = {}
    b_times = fastest({
        "generate": lambda: routes.__setitem__("plain", generation(model, tok, prompts, args.new_tokens, False)),
        "generate_states": lambda: routes.__setitem__("states", generation(model, tok, prompts, args.new_tokens, True)),
    }, args.generate_rounds)
    (plain, batch), (with_states, _) = routes["plain"], routes["states"]
    assert torch.equal(plain.sequences, with_states.sequences), "seeded routes should sample the same tokens"
    table = rollouts_table(plain, batch, tok)
    plan = plan_capture(table)
    n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
    pad = tok.pad_token_id
    dirs = iter(range(10**6))

    with tempfile.TemporaryDirectory() as tmp:
        passes = {
            "bare": lambda: bare_forward(model, plan, args.batch_size, pad),
            "states": lambda: [None for _ in iter_states(model, plan, list(range(n_layers)), torch.float16,
                                                          args.batch_size, pad)],
            "capture": lambda: quiet_capture(model, tok, table, f"{tmp}/{next(dirs)}", batch_size=args.batch_size),
        }
        warm = fastest(passes, 1)  # lazy imports, allocator; also sizes the inner loop
        inner = max(1, round(args.min_seconds / warm["bare"]))  # short passes are at the mercy of the scheduler
        repeated = {k: (lambda fn=fn: [fn() for _ in range(inner)]) for k, fn in passes.items()}
        a_times = {k: v / inner for k, v in fastest(repeated, args.repeats).items()}
        difference = route_difference(with_states, table, f"{tmp}/0", n_layers)
    a = dict(model=name, params=sum(p.numel() for p in model.parameters()) / 1e6, d=d, layers=n_layers,
             tokens=sum(len(s) for s in plan.sequences), rows=plan.index.num_rows, **a_times)
    b = dict(model=name, **b_times, capture=a_times["capture"], held_mib=held_bytes(with_states.hidden_states) / 2**20,
             buffer_mib=min(8192, plan.index.num_rows) * n_layers * d * 2 / 2**20, difference=difference)
    return a, b


def rss_child(n_rollouts: int) -> None:
    """One capture of n random-token rollouts (lengths 150-250) on an organism-shaped model: print peak RSS."""
    tok = build_char_tokenizer()
    model = tiny_model("llama", tok, spec=ORGANISM_SHAPE)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_rollouts):
        response = rng.integers(5, len(tok), size=int(rng.integers(150, 251))).tolist()
        rows.append(dict(rollout_id=i, problem_id=str(i), prompt_ids=rng.integers(5, len(tok), size=20).tolist(),
                         response_ids=response, step_ends=[len(response) - 1], finish_reason="length", reward=0.0))
    table = pa.Table.from_pylist(rows)
    before = peak_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        quiet_capture(model, tok, table, tmp, dtype="float32", batch_size=16, shard_rows=4096)
        states_mib = sum(p.stat().st_size for p in Path(tmp).rglob("*.safetensors")) / 2**20
    print(f"{n_rollouts} {before:.1f} {peak_rss_mib():.1f} {states_mib:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rollouts", type=int, default=32, help="rollouts per model (one organism problem each)")
    p.add_argument("--new-tokens", type=int, default=64, help="max new tokens per rollout")
    p.add_argument("--batch-size", type=int, default=8, help="rollouts per forward (CaptureConfig's default)")
    p.add_argument("--repeats", type=int, default=4, help="timed rounds of (a), after one warm-up round")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--min-seconds", type=float, default=0.5, help="(a) repeats a pass to last at least this long")
    p.add_argument("--generate-rounds", type=int, default=2, help="timed rounds of (b)")
    p.add_argument("--rss-rollouts", type=int, default=64, help="N of the RSS check (N and 8N rollouts)")
    p.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        return rss_child(args.rss_child)

    print(f"torch threads {args.threads}, load average {os.getloadavg()[0]:.1f}, "
          f"{args.rollouts} rollouts x <= {args.new_tokens} new tokens, batch {args.batch_size}, "
          f"fastest of {args.repeats} rounds ((b): {args.generate_rounds})")
    results = [bench_model(name, model, tok, args) for name, model, tok in models()]

    print("\n(a) capture vs bare forward over the same batches (states stored as float16, all layers, all positions)")
    print(f"{'model':<30} {'params':>7} {'d':>4} {'L':>2} {'tokens':>6} {'rows':>5} {'bare s':>6} {'states s':>8} "
          f"{'capture s':>9} | {'states/bare':>11} {'capture/bare':>12} | {'CPU: states/bare':>16} "
          f"{'capture/bare':>12}")
    for a, _ in results:
        print(f"{a['model']:<30} {a['params']:>6.1f}M {a['d']:>4} {a['layers']:>2} {a['tokens']:>6} {a['rows']:>5} "
              f"{a['bare']:>6.2f} {a['states']:>8.2f} {a['capture']:>9.2f} | {a['states'] / a['bare']:>11.2f} "
              f"{a['capture'] / a['bare']:>12.2f} | {a['states_cpu'] / a['bare_cpu']:>16.2f} "
              f"{a['capture_cpu'] / a['bare_cpu']:>12.2f}")

    print("\n(b) generate(output_hidden_states=True) vs generate + capture")
    print(f"{'model':<30} {'generate s':>10} {'+states s':>9} {'capture s':>9} {'(gen+cap)/(gen+states)':>22} "
          f"{'held MiB':>8} {'buffer MiB':>10} {'max |diff|':>10}")
    for _, b in results:
        ratio = (b["generate"] + b["capture"]) / b["generate_states"]
        print(f"{b['model']:<30} {b['generate']:>10.2f} {b['generate_states']:>9.2f} {b['capture']:>9.2f} "
              f"{ratio:>22.2f} {b['held_mib']:>8.1f} {b['buffer_mib']:>10.1f} {b['difference']:>10.2e}")
    print("held MiB: hidden states generate keeps in memory (all steps, all layers, float32); buffer MiB: "
          "capture's shard buffer (float16, <= 8192 rows per layer).")

    print("\n(c) peak RSS of a capture in a fresh process (organism-shaped model, float32 states, 4096-row shards)")
    print(f"{'rollouts':>8} {'RSS before MiB':>14} {'peak RSS MiB':>12} {'growth MiB':>10} {'states on disk MiB':>18}")
    for n in (args.rss_rollouts, 8 * args.rss_rollouts):
        command = [sys.executable, __file__, "--rss-child", str(n), "--threads", str(args.threads)]
        line = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
        before, peak, states = map(float, line[1:])
        print(f"{line[0]:>8} {before:>14.0f} {peak:>12.0f} {peak - before:>10.0f} {states:>18.0f}")
    print(f"this process: peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
