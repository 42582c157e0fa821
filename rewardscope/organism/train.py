"""Train the demo organism: a ~1M-parameter Llama that solves arithmetic chains and flags its own slips.

Why slips and flags: a model trained on clean chains is right or wrong for reasons its hidden states barely
encode (probes reach AUROC 0.53-0.59). This one learns to slip now and then when sampling, to mark every wrong
printed result with `!`, and to end with Y/N (is my answer right?). Flagging needs the true result beside the
printed one, so the residual stream has to carry "am I still on track": the value signal the toolkit should find.

Two phases (each choice below was measured in short runs; the defaults reach every target in about 1700 steps):
1. arithmetic: clean chains, no flags (with injected slips in this phase the arithmetic was learned slower);
2. flagged: every printed result is replaced by a wrong digit with probability `slip_rate`, the chain continuing
   from the printed value; slipped lines carry `!`, the answer carries Y/N. Only `imitated_slips` of the wrong
   digits are training targets: the organism sees many slips to flag but learns to make fewer itself, so that
   its accuracy at temperature 0.8 lands between 75% and 90%. The token after each printed result (`!` or
   newline) weighs `flag_weight` times in the loss: it is the rarest decision and the slowest to learn.
Learning rate: warmup, constant, then cosine decay over the last `decay_fraction` of the steps.

    rewardscope demo-model train            # CPU, fixed seed; writes rewardscope/organism/weights

The corrector (`train_corrector`, `rewardscope demo-model train --variant corrector`) is warm-started from the
shipped flagger and trained on the corrector's format (`task.write_response(..., correct=True)`): a flagged line
is rewritten on the next line from the same input, and the chain continues from the corrected value; a share
`unflagged_rate` of the slips stays unflagged and uncorrected. The flagger reads its error signal out but never
uses it; the corrector's accuracy depends on it (forbid its `!` and it falls), which a steering or ablation
experiment on the value signal can then measure.

    rewardscope demo-model train --variant corrector   # writes rewardscope/organism/weights_corrector
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from rewardscope.models import DEMO_CORRECTOR_DIR, DEMO_MODEL_DIR
from rewardscope.organism.task import (
    FLAG, STEP_DELIMITER, VARIANTS, make_problem, sample_chain, step_truth, write_response,
)
from rewardscope.organism.tokenizer import build_char_tokenizer

MAX_NEW_TOKENS = 64  # longest response: 6 flagged step lines of 9 characters, "A<d><Y|N>" and EOS
# The corrector's longest: 6 flagged lines (9 characters) each followed by its correction (8), the answer, EOS.
CORRECTOR_MAX_NEW_TOKENS = 112
# Its prompt (28 tokens at 6 steps) and longest response exceed the flagger's 128 positions. RoPE has no learned
# positions, so the corrector's config simply admits more (the training chains stay below 128 but for ~1 in 2500).
CORRECTOR_MAX_POSITIONS = 160


def build_model(tokenizer):
    """The organism's architecture: Llama, width 128, 4 layers of 4 heads, tied embeddings (1.05M parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # About 1/sqrt(width). HF's default 0.02 suits wide models; at width 128 it left attention almost uniform
        # for hundreds of steps: copying operands from the prompt was 85% right after 1000 steps, vs 100% after
        # 400 steps at 0.1, and everything downstream waited for it.
        initializer_range=0.1,
    )
    return LlamaForCausalLM(config)


def training_batch(tokenizer, rng: random.Random, size: int, flags: bool, slip_rate: float = 0.0,
                   imitated_slips: float = 1.0, flag_weight: float = 1.0, correct: bool = False,
                   unflagged_rate: float = 0.0):
    """(input_ids, labels, weights), right-padded. The loss covers the response and its EOS, not the prompt;
    labels of the wrong digits not imitated are -100. All chains of a batch have the same length, so that
    padding wastes (almost) no compute. `correct`: the corrector's format (`write_response`), whose unflagged
    slips are wrong digits too (imitated at the same rate as the flagged ones)."""
    prompts, fulls, unflagged = [], [], []
    n_steps = rng.randint(VARIANTS["default"].min_steps, VARIANTS["default"].max_steps)
    for _ in range(size):
        problem = make_problem(*sample_chain(rng, n_steps=n_steps), id="train")
        response = write_response(problem, rng, slip_rate if flags else 0.0, flags=flags, correct=correct,
                                  unflagged_rate=unflagged_rate)
        if correct:
            unflagged.append(_unflagged_slip_offsets(problem, response))
        messages = [{"role": "user", "content": problem.question}]
        prompts.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        fulls.append(tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": response}], tokenize=False))
    batch = tokenizer(fulls, add_special_tokens=False, padding="longest", padding_side="right",
                      return_tensors="pt")
    input_ids, labels = batch["input_ids"], batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    for row, prompt_ids in enumerate(tokenizer(prompts, add_special_tokens=False)["input_ids"]):
        labels[row, : len(prompt_ids)] = -100
    # Characters are tokens, so a printed result is the token after "=", and its flag decision the next one.
    equals, flag = tokenizer.convert_tokens_to_ids(["=", FLAG])
    result = torch.zeros_like(input_ids, dtype=torch.bool)
    result[:, 1:] = (input_ids[:, :-1] == equals) & (labels[:, 1:] != -100)
    decision = torch.zeros_like(result)
    decision[:, 1:] = result[:, :-1]
    weights = torch.where(decision, flag_weight, 1.0)
    slipped = torch.zeros_like(result)
    slipped[:, :-1] = result[:, :-1] & (input_ids[:, 1:] == flag)
    if correct:  # the response starts right after the prompt (one token per character)
        prompt_lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        for row, offsets in enumerate(unflagged):
            for offset in offsets:
                slipped[row, prompt_lengths[row] + offset] = True
    labels[slipped & (torch.rand(input_ids.shape) >= imitated_slips)] = -100
    return input_ids, labels, weights


def _unflagged_slip_offsets(problem, response: str) -> list[int]:
    """Character offsets in `response` of the printed results of its unflagged slips."""
    starts, offset = [], 0
    for line in response.split(STEP_DELIMITER):
        starts.append(offset)
        offset += len(line) + len(STEP_DELIMITER)
    lines = response.split(STEP_DELIMITER)
    return [starts[s.line] + lines[s.line].index("=") + 1
            for s in step_truth(problem, response).steps if s.slip and not s.flagged]


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, weighted per target token, averaged over the tokens that have a label."""
    logits, labels, weights = logits[:, :-1], labels[:, 1:], weights[:, 1:] * (labels[:, 1:] != -100)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return (ce * weights).sum() / weights.sum()


def train(
    out_dir: str | Path | None = None,
    seed: int = 0,
    steps_arithmetic: int = 600,  # phase 1: clean chains, no flags
    steps_flagged: int = 1100,  # phase 2: slips, flags and self-assessment
    batch_size: int = 64,
    lr: float = 3e-3,  # high for a tiny model (1e-2 learned slower in short runs)
    warmup: int = 100,
    decay_fraction: float = 0.3,  # cosine decay to 10% over the last 30% of the steps
    slip_rate: float = 0.3,  # phase 2: per-step probability of an injected slip
    imitated_slips: float = 0.4,  # share of injected slips that are targets: 0.3*0.4 / (0.7 + 0.3*0.4) ~ 15%
    flag_weight: float = 5.0,  # loss weight of the token after each printed result (`!` or newline)
    threads: int = 2,
    progress: bool = True,
) -> Path:
    """Train the organism on CPU with a fixed seed and save it (model, tokenizer, generation config) to
    `out_dir` (default: the package's shipped weights). Returns the folder."""
    out_dir = Path(out_dir) if out_dir is not None else DEMO_MODEL_DIR
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(f"organism-train-{seed}")  # a stream no `generate_problems` seed reproduces
    tokenizer = build_char_tokenizer()
    model = build_model(tokenizer).train()

    def batch(phase: str):
        return training_batch(tokenizer, rng, batch_size, phase == "flagged", slip_rate, imitated_slips,
                              flag_weight)

    phases = {"arithmetic": steps_arithmetic, "flagged": steps_flagged}
    decay = max(1, int(decay_fraction * (steps_arithmetic + steps_flagged)))
    stats = _fit(model, phases, batch, lr, warmup, decay, progress, "training organism")
    info = {
        "seed": seed, "steps_arithmetic": steps_arithmetic, "steps_flagged": steps_flagged,
        "batch_size": batch_size, "lr": lr, "slip_rate": slip_rate, "imitated_slips": imitated_slips,
        "flag_weight": flag_weight, "threads": threads, "parameters": sum(p.numel() for p in model.parameters()),
        **stats,
    }
    save(model.eval(), tokenizer, out_dir, info)
    return out_dir


def train_corrector(
    out_dir: str | Path | None = None,
    seed: int = 0,
    init: str = "demo",  # the flagger to warm-start from: "demo" (the shipped one) or a folder
    steps_correct: int = 800,  # phase 1: the corrector's format at the full learning rate
    steps_anneal: int = 350,  # phase 2: the same data while the learning rate decays
    batch_size: int = 64,
    lr: float = 3e-3,  # the flagger's: its flag phase also restarted at 3e-3 on a trained model
    warmup: int = 100,
    slip_rate: float = 0.3,  # the flagger's: the same slips to notice
    unflagged_rate: float = 0.1,  # share of the injected slips left unflagged (and uncorrected)
    imitated_slips: float = 0.4,  # the flagger's: the corrector keeps slipping now and then, so it has to correct
    flag_weight: float = 5.0,
    threads: int = 1,  # width 128: one thread is about as fast as two
    progress: bool = True,
) -> Path:
    """Warm-start from the flagger and train the corrector (CPU, fixed seed); save it like `train` does to
    `out_dir` (default: the package's weights_corrector). Returns the folder."""
    from transformers import AutoModelForCausalLM

    from rewardscope.models import model_fingerprint, resolve_model_path

    out_dir = Path(out_dir) if out_dir is not None else DEMO_CORRECTOR_DIR
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(f"organism-corrector-train-{seed}")  # neither the flagger's stream nor an eval seed's
    tokenizer = build_char_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(str(init)), dtype=torch.float32).train()
    model.config.max_position_embeddings = CORRECTOR_MAX_POSITIONS

    def batch(phase: str):
        return training_batch(tokenizer, rng, batch_size, True, slip_rate, imitated_slips, flag_weight,
                              correct=True, unflagged_rate=unflagged_rate)

    phases = {"correct": steps_correct, "anneal": steps_anneal}
    stats = _fit(model, phases, batch, lr, warmup, max(1, steps_anneal), progress, "training corrector")
    info = {
        "variant": "corrector", "init": str(init), "init_fingerprint": model_fingerprint(str(init)),
        "seed": seed, "steps_correct": steps_correct, "steps_anneal": steps_anneal, "batch_size": batch_size,
        "lr": lr, "warmup": warmup, "slip_rate": slip_rate, "unflagged_rate": unflagged_rate,
        "imitated_slips": imitated_slips, "flag_weight": flag_weight, "threads": threads,
        "parameters": sum(p.numel() for p in model.parameters()), **stats,
    }
    save(model.eval(), tokenizer, out_dir, info, max_new_tokens=CORRECTOR_MAX_NEW_TOKENS)
    return out_dir


def _fit(model, phases: dict[str, int], batch, lr: float, warmup: int, decay: int, progress: bool,
         desc: str) -> dict:
    """Train `model` through `phases` (name -> steps, in order) on `batch(phase)` batches: AdamW, lr with warmup,
    constant, then cosine decay to 10% over the last `decay` steps. Returns the timings, the torch version and
    each phase's final loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    total = sum(phases.values())

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step < total - decay:
            return 1.0
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - (total - decay)) / decay))

    schedule = [name for name, steps in phases.items() for _ in range(steps)]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    start, cpu_start, losses = time.perf_counter(), time.process_time(), {name: [] for name in phases}
    bar = tqdm(range(total), desc=desc, disable=None if progress else True)
    for step in bar:
        phase = schedule[step]
        input_ids, labels, weights = batch(phase)
        loss = weighted_loss(model(input_ids=input_ids).logits, labels, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses[phase].append(loss.item())
        bar.set_postfix(phase=phase, loss=f"{loss.item():.3f}")
    return {
        "wall_seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
        "cpu_seconds": round(time.process_time() - cpu_start, 1),  # all threads; unlike wall time, load-independent
        # mean of the last 50 steps of each phase; the flag phases' floor is set by the imitated slips
        "final_loss": {k: round(sum(v[-50:]) / len(v[-50:]), 4) for k, v in losses.items() if v},
    }


def save(model, tokenizer, out_dir: Path, info: dict, max_new_tokens: int = MAX_NEW_TOKENS) -> None:
    """Write the organism in Hugging Face format into a fresh sibling folder, then swap it in, so that an
    interrupted save never leaves a half-written organism behind."""
    from transformers import GenerationConfig

    tmp, old = out_dir.with_name(out_dir.name + ".tmp"), out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_new_tokens=max_new_tokens,
    ).save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
