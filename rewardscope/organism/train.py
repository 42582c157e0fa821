"""Train the demo organism: a ~1M-parameter Llama that solves arithmetic chains and flags its own slips.

Why slips and flags: a model trained on clean chains is either right or wrong for reasons its hidden states
barely encode (probes reach AUROC 0.53-0.59). Here 70% of training chains carry injected slips, so the organism
learns to slip at a known rate when sampling, and it learns to mark each wrong printed result with `!` and to
end with Y/N (is my answer right?). Flagging needs the true result beside the printed one, so the residual
stream has to carry "am I still on track", which is the value signal the toolkit should find.
Two phases: arithmetic first (no flags, no self-assessment), then the same chains with them.

    rewardscope demo-model train            # CPU, fixed seed, a few minutes; writes rewardscope/organism/weights
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

from rewardscope.models import DEMO_MODEL_DIR
from rewardscope.organism.task import VARIANTS, make_problem, sample_chain, write_response
from rewardscope.organism.tokenizer import build_char_tokenizer

MAX_NEW_TOKENS = 64  # longest response: 6 flagged step lines of 9 characters, "A<d><Y|N>" and EOS


def build_model(tokenizer):
    """The organism's architecture: Llama, width 128, 4 layers of 4 heads, tied embeddings (1.05M parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def training_batch(tokenizer, rng: random.Random, size: int, flags: bool, slip_rate: float,
                   slip_chain_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels), right-padded; the loss covers the response and its EOS, not the prompt.
    All chains of a batch have the same length, so that padding wastes (almost) no compute."""
    prompts, fulls = [], []
    n_steps = rng.randint(VARIANTS["default"].min_steps, VARIANTS["default"].max_steps)
    for _ in range(size):
        problem = make_problem(*sample_chain(rng, n_steps=n_steps), id="train")
        rate = slip_rate if rng.random() < slip_chain_fraction else 0.0
        response = write_response(problem, rng, rate, flags=flags)
        messages = [{"role": "user", "content": problem.question}]
        prompts.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        fulls.append(tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": response}], tokenize=False))
    ids = tokenizer(fulls, add_special_tokens=False, padding="longest", padding_side="right",
                    return_tensors="pt")
    input_ids, labels = ids["input_ids"], ids["input_ids"].clone()
    labels[ids["attention_mask"] == 0] = -100
    for row, prompt_ids in enumerate(tokenizer(prompts, add_special_tokens=False)["input_ids"]):
        labels[row, : len(prompt_ids)] = -100
    return input_ids, labels


def train(
    out_dir: str | Path | None = None,
    seed: int = 0,
    steps_plain: int = 1000,  # phase 1: arithmetic with slips, no flags (the earlier study's schedule)
    steps_flagged: int = 700,  # phase 2: flags and self-assessment
    batch_size: int = 64,
    lr: float = 3e-3,  # high for a tiny model; warmup then cosine to 10%
    warmup: int = 100,
    slip_rate: float = 0.15,  # per-step probability that a slipping chain prints a wrong digit
    slip_chain_fraction: float = 0.7,  # the other 30% of chains are clean
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    total = steps_plain + steps_flagged

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    start, losses = time.perf_counter(), {"plain": [], "flagged": []}
    bar = tqdm(range(total), desc="training organism", disable=not progress)
    for step in bar:
        phase = "plain" if step < steps_plain else "flagged"
        input_ids, labels = training_batch(tokenizer, rng, batch_size, phase == "flagged", slip_rate,
                                           slip_chain_fraction)
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses[phase].append(loss.item())
        bar.set_postfix(phase=phase, loss=f"{loss.item():.3f}")
    info = {
        "seed": seed, "steps_plain": steps_plain, "steps_flagged": steps_flagged, "batch_size": batch_size,
        "lr": lr, "slip_rate": slip_rate, "slip_chain_fraction": slip_chain_fraction, "threads": threads,
        "parameters": sum(p.numel() for p in model.parameters()),
        "wall_seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
        # mean of the last 50 steps of each phase: the loss floor is set by the injected slips
        "final_loss": {k: round(sum(v[-50:]) / len(v[-50:]), 4) for k, v in losses.items() if v},
    }
    save(model.eval(), tokenizer, out_dir, info)
    return out_dir


def save(model, tokenizer, out_dir: Path, info: dict) -> None:
    """Write the organism in Hugging Face format into a fresh sibling folder, then swap it in, so that an
    interrupted save never leaves a half-written organism behind."""
    from transformers import GenerationConfig

    tmp, old = out_dir.with_name(out_dir.name + ".tmp"), out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_new_tokens=MAX_NEW_TOKENS,
    ).save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
