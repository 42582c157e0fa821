"""The `rollout` stage: n sampled responses per problem, graded, with their step boundaries.

Files (docs/artifacts.md): `rollouts/shard-<k>.parquet` holds problems [k * P, (k + 1) * P) with
P = rollout.problems_per_shard, written atomically once its rows are graded; `rollouts.parquet` is their
concatenation, written when every shard exists; `rollouts/summary.json` marks the stage finished.
`rollouts/recipe.json` keeps the recipe sections the rows depend on, the weights' fingerprint
(rewardscope.models.model_fingerprint), the data file's content (rewardscope.data.data_fingerprint) and the
grading rules' versions: resuming with a different recipe, a model retrained under the same name, an edited data
file or changed grading rules fails instead of mixing two; rollouts.parquet carries the fingerprint in its
metadata for later stages. Resume: existing shards are skipped. Shard k is sampled with a seed derived from
(rollout.seed, k), so a resumed run writes the same table as an uninterrupted one (on the same hardware, with the
same batch size: batch composition changes the order of random draws).
"""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from rewardscope.config import Recipe, results_dict
from rewardscope.data import build_prompt, data_fingerprint, graded_kind, load_task
from rewardscope.errors import RewardscopeError
from rewardscope.grading import Grader
from rewardscope.grading.grader import rules_versions
from rewardscope.io import read_json, read_parquet, write_json, write_parquet
from rewardscope.models import context_length, load_from_config, model_fingerprint
from rewardscope.readers import ELAPSED_KEY, MODEL_KEY, ROLLOUTS_FILE
from rewardscope.rollout import hf, vllm_backend
from rewardscope.rollout.steps import step_ends
from rewardscope.stats import wilson_interval  # noqa: F401 (re-exported: tests and callers import it here)

SCHEMA = pa.schema([
    ("rollout_id", pa.int64()),
    ("problem_id", pa.string()),
    ("problem_index", pa.int32()),
    ("sample", pa.int32()),
    ("prompt", pa.string()),
    ("response", pa.string()),
    ("prompt_ids", pa.list_(pa.int32())),
    ("response_ids", pa.list_(pa.int32())),
    ("step_ends", pa.list_(pa.int32())),
    ("finish_reason", pa.string()),
    ("gold", pa.string()),
    ("kind", pa.string()),
    ("extracted", pa.string()),
    ("reward", pa.float32()),
    ("reward_reason", pa.string()),
])
RECIPE_SECTIONS = ("model", "data", "prompt", "rollout", "grade")  # what the rows depend on


def run(ctx) -> dict:
    """The pipeline stage (rewardscope.stages): this rollout artifact."""
    return sample(ctx.recipe, ctx.out)


def sample(recipe: Recipe, run_dir: Path) -> dict:
    """rollouts.parquet and its summary in `run_dir`; a finished stage returns its saved summary."""
    summary_path = Path(run_dir) / "rollouts" / "summary.json"
    if summary_path.exists():  # rollout() makes the same check when there is work left
        fingerprint = model_fingerprint(recipe.model.name, recipe.model.revision, recipe.model.gguf_file)
        _claim(summary_path.with_name("recipe.json"), recipe, fingerprint)
        return read_json(summary_path)
    summary = summarize(rollout(recipe, run_dir))
    write_json(summary_path, summary)
    return summary


def rollout(recipe: Recipe, run_dir: Path, model=None, tokenizer=None,
            on_shard: Callable[[int], None] | None = None) -> Path:
    """Sample, grade and write every missing shard, then rollouts.parquet; returns its path.

    `model` and `tokenizer` (a vllm.LLM for backend "vllm") skip loading recipe.model. `on_shard(k)` is called
    after shard k is written.
    """
    cfg, run_dir = recipe.rollout, Path(run_dir)
    out, shard_dir = run_dir / ROLLOUTS_FILE, run_dir / "rollouts"
    if model is None:
        fingerprint = model_fingerprint(recipe.model.name, recipe.model.revision, recipe.model.gguf_file)
    else:  # a model object: its own folder if it came from one
        source = getattr(model, "name_or_path", None)
        fingerprint = model_fingerprint(source) if source and Path(source).is_dir() else None
    fingerprint = _claim(shard_dir / "recipe.json", recipe, fingerprint)
    if out.exists():
        return out
    hf.check_sampling(cfg.n, cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    if cfg.problems_per_shard < 1:
        raise RewardscopeError(f"rollout.problems_per_shard: expected at least 1, got {cfg.problems_per_shard}")
    problems, examples = load_task(recipe.data, recipe.prompt.few_shot)
    size = cfg.problems_per_shard
    shards = [problems[start : start + size] for start in range(0, len(problems), size)]
    paths = [shard_dir / f"shard-{k:05d}.parquet" for k in range(len(shards))]
    todo = [k for k, path in enumerate(paths) if not path.exists()]
    if todo:
        # One grader per kind, made before any sampling so that a bad grade.kind fails at once; reused across
        # shards (a math grader's worker processes take about a second to start).
        kinds = dict.fromkeys(recipe.grade.kind or problem.kind for problem in problems)
        graders = {kind: Grader(kind, timeout_s=recipe.grade.timeout_s, workers=recipe.grade.workers,
                                choice_fallback=recipe.grade.choice_fallback)
                   for kind in kinds}
        try:
            generate, tokenizer, context = _backend(recipe, model, tokenizer)
            # Every prompt is built and measured before the first draw: one that cannot fit fails now, not mid-run.
            prompts = {k: [build_prompt(problem, tokenizer, recipe.prompt, examples.get(problem.id, ()))
                            for problem in shards[k]] for k in todo}
            check_context({k * size + i: p for k in todo for i, p in enumerate(prompts[k])}, problems, tokenizer,
                          cfg.max_new_tokens, context)
            done = len(problems) - sum(len(shards[k]) for k in todo)
            with tqdm(total=len(problems), initial=done, unit="problem", desc="rollout", disable=None) as bar:
                for k in todo:
                    table = _shard(recipe, shards[k], prompts[k], k * size, k, generate, tokenizer, graders)
                    write_parquet(paths[k], table)
                    bar.update(len(shards[k]))
                    if on_shard is not None:
                        on_shard(k)
        finally:
            for grader in graders.values():
                grader.close()
    tables = [read_parquet(path) for path in paths]
    elapsed = sum(float(t.schema.metadata[ELAPSED_KEY]) for t in tables)
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    metadata = {ELAPSED_KEY: f"{elapsed:.3f}", MODEL_KEY: fingerprint or ""}
    write_parquet(out, table.replace_schema_metadata(metadata))
    return out


def _claim(path: Path, recipe: Recipe, fingerprint: str | None) -> str | None:
    """Record the recipe, weights, data content and grading rules the shards come from, or check that they are
    the ones already recorded (as the stage keys do for a pipeline run; a direct call has only this record).

    Returns the weights' fingerprint on record (None: unknown)."""
    # Keys marked changes_results=False (grade.workers: how fast grading runs, not what it gives) are left out.
    sections = {k: v for k, v in results_dict(recipe).items() if k in RECIPE_SECTIONS}
    content, rules = data_fingerprint(recipe.data), rules_versions(graded_kind(recipe.data, recipe.grade.kind))
    if not path.exists():
        write_json(path, {**sections, "model_fingerprint": fingerprint, "data_content": content,
                          "grading_rules": rules})
        return fingerprint
    saved = read_json(path)
    # Absent: recorded before the rules were, so graded by older rules wherever a kind is above version 1 now.
    if saved.get("grading_rules", {}) != rules:
        raise RewardscopeError(
            f"{path}: the shards beside it were graded with other rules ({saved.get('grading_rules', {})}, now "
            f"{rules}: rewardscope.grading.grader.RULES_VERSIONS); use another run directory (or delete this one)")
    if "data_content" in saved and saved["data_content"] != content:
        raise RewardscopeError(f"{path}: the shards beside it were sampled from another content of data.path "
                               f"({recipe.data.path}: edited since); use another run directory (or delete this one)")
    recorded = saved.get("model_fingerprint")
    if fingerprint is not None and recorded is not None and recorded != fingerprint:
        raise RewardscopeError(
            f"{path}: the shards beside it were sampled from other weights of {recipe.model.name!r} "
            f"({recorded}, now {fingerprint}: retrained or replaced); use another run directory (or delete this one)")
    # First seen now: a hub model cached by the first run; data recorded before its content was (taken as it is).
    first_seen = {**({"model_fingerprint": fingerprint} if recorded is None and fingerprint is not None else {}),
                  **({"data_content": content} if "data_content" not in saved else {})}
    if first_seen:
        write_json(path, {**saved, **first_seen})
    changed = [f"{s}.{k}" for s in RECIPE_SECTIONS for k in set(saved.get(s, {})) | set(sections[s])
               if saved.get(s, {}).get(k) != sections[s].get(k)]
    if changed:
        raise RewardscopeError(f"{path}: the shards beside it come from a recipe that differs in "
                               f"{', '.join(sorted(changed))}; use another run directory (or delete this one)")
    return recorded or fingerprint


def _backend(recipe: Recipe, model, tokenizer):
    """generate(prompts, seed=...) for recipe.rollout, the tokenizer used for prompts and steps, and the model's
    context length (None: unknown)."""
    cfg = recipe.rollout
    if cfg.backend == "vllm":
        if model is None:
            model, tokenizer = vllm_backend.load(recipe.model)
        generate = vllm_backend.generate
    else:
        if model is None:
            model, tokenizer = load_from_config(recipe.model)
        generate = partial(hf.generate, batch_size=cfg.batch_size)
    if tokenizer is None:
        raise RewardscopeError("rollout(): a model was given without its tokenizer")
    options = dict(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    return partial(generate, model, tokenizer, **options), tokenizer, context_length(model)


def check_context(prompts: dict[int, str], problems: list, tokenizer, max_new_tokens: int, context: int | None):
    """Refuse a problem whose prompt plus rollout.max_new_tokens exceeds the model's context, naming it.

    Past its context a model with learned positions (GPT-2) fails mid-generation, and any model is outside what
    it was trained on; a prompt is never truncated (that would change the problem). `prompts`: index -> text."""
    if context is None:
        return
    lengths = {i: len(tokenizer(text, add_special_tokens=False)["input_ids"]) for i, text in prompts.items()}
    over = [i for i, n in lengths.items() if n + max_new_tokens > context]
    if not over:
        return
    i, longest = over[0], max(lengths.values())
    fits = context - longest
    advice = (f"set rollout.max_new_tokens <= {fits} (the longest prompt has {longest} tokens)" if fits >= 1
              else "its prompt alone fills the context: leave the problem out (data.limit, or a smaller dataset)")
    raise RewardscopeError(
        f"problem {problems[i].id!r} (index {i}): its prompt has {lengths[i]} tokens, so with "
        f"rollout.max_new_tokens={max_new_tokens} a rollout could reach {lengths[i] + max_new_tokens} positions, "
        f"beyond the model's context of {context} (max_position_embeddings); {len(over)} problem(s) in all. "
        f"Nothing was sampled: {advice}")


def _shard(recipe: Recipe, problems: list, prompts: list[str], first_index: int, k: int, generate, tokenizer,
           graders: dict) -> pa.Table:
    """The graded rows of one shard, in (problem_index, sample) order."""
    started = time.perf_counter()
    cfg, n = recipe.rollout, recipe.rollout.n
    generations = generate(prompts, seed=hf.derive_seed(cfg.seed, k))
    rows, choices = [], []
    for offset, (problem, prompt, samples) in enumerate(zip(problems, prompts, generations)):
        index = first_index + offset
        for sample, g in enumerate(samples):
            rows.append(dict(
                rollout_id=index * n + sample, problem_id=problem.id, problem_index=index, sample=sample,
                prompt=prompt, response=g.text, prompt_ids=g.prompt_ids, response_ids=g.response_ids,
                step_ends=step_ends(tokenizer, g.response_ids, cfg.step_delimiter), finish_reason=g.finish_reason,
                gold=problem.answer, kind=recipe.grade.kind or problem.kind,
            ))
            choices.append(problem.choices)
    for kind in dict.fromkeys(row["kind"] for row in rows):
        index = [i for i, row in enumerate(rows) if row["kind"] == kind]
        verdicts = graders[kind].grade([rows[i]["response"] for i in index], [rows[i]["gold"] for i in index],
                                       choices=[choices[i] for i in index])
        for i, verdict in zip(index, verdicts):
            rows[i].update(extracted=verdict.extracted, reward=1.0 if verdict.equal else 0.0,
                           reward_reason=verdict.reason)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    return table.replace_schema_metadata({ELAPSED_KEY: f"{time.perf_counter() - started:.3f}"})


def summarize(path: Path) -> dict:
    """Accuracy with a 95% CI, mixed problems, lengths, finish and reward reasons, time, of rollouts.parquet."""
    table = read_parquet(path)
    index = table["problem_index"].to_numpy()
    reward = table["reward"].to_numpy().astype(float)
    _, problem_of = np.unique(index, return_inverse=True)
    per_problem = np.bincount(problem_of, weights=reward) / np.bincount(problem_of)
    accuracy = float(per_problem.mean())
    tokens = pc.list_value_length(table["response_ids"]).to_numpy()
    elapsed = float(table.schema.metadata[ELAPSED_KEY])
    reasons = Counter(r.split(":")[0] for r in table["reward_reason"].to_pylist())  # "error: <msg>" -> "error"
    return {
        "n_problems": len(per_problem),
        "n_rollouts": table.num_rows,
        "accuracy": accuracy,
        # Problems, not rollouts, are the independent units: rollouts of one problem are correlated, so the
        # interval over problems is conservative where an interval over rollouts would be too narrow.
        "accuracy_ci95": list(wilson_interval(accuracy, len(per_problem))),
        "accuracy_ci_method": "Wilson score interval over problems",
        "mixed_problem_share": float(np.mean((per_problem > 0) & (per_problem < 1))),
        "mean_response_tokens": float(tokens.mean()),
        "finish_reasons": dict(Counter(table["finish_reason"].to_pylist())),
        "reward_reasons": dict(reasons),
        "elapsed_s": elapsed,
        "generated_tokens_per_s": float(tokens.sum() / elapsed) if elapsed > 0 else None,
        "path": str(path),
    }
