"""Stage `ablate`: task accuracy while each arm's coordinates are removed from one layer during generation, with
every control beside the value neurons (method.md 5, docs/ablation.md).

Reads the rollout, capture and probe artifacts (rewardscope.readers) and writes:
  plan.json           every arm to run: layer, fraction, draw, the dims or direction removed, how they were
                      chosen; the attention-sink dims excluded, the magnitude matching's quality
  arms/<arm>.parquet  one row per (problem, sample) of each arm: response, length, finish reason, grade
  results.json        per arm: accuracy with a 95% CI over problems, the paired difference to the unablated
                      model and to each control (CI, sign-flip p-value, Holm over the table), mean length,
                      EOS rate, share without an answer, the control token's rate; the paper-form table

Problems: the probe's held-out problems (split.json), so no arm is scored on a problem whose rollouts chose its
dims; `ablate.problems` keeps the first N. Every arm samples the same problems with the same seed. Statistics
that choose dims (activation RMS, the next-token probe, Wanda's input norms, the reward direction, means for mode
"mean") come from the training problems' captured states only.

Resume: plan.json is fixed on the first run; each arm's parquet is written atomically when it is graded, and a
rerun samples only the arms without one. results.json is written last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rewardscope.ablate import arms as A
from rewardscope.ablate.interventions import ablate, capture_means, residual_width
from rewardscope.config import Recipe
from rewardscope.data import build_prompt, load_task
from rewardscope.errors import RewardscopeError
from rewardscope.grading import Grader
from rewardscope.hooks import num_layers, residual_hooks
from rewardscope.io import read_json, read_parquet, write_json, write_parquet
from rewardscope.models import load_from_config
from rewardscope.readers import CaptureReader, ProbeReader, read_rollouts
from rewardscope.rollout.hf import derive_seed, generate
from rewardscope.stats import bootstrap_mean, holm, paired_difference_test

MAX_STAT_ROWS = 20000  # training states used for the rankings (RMS, next-token probe, reward direction)
WANDA_ROWS = 4096  # states pushed through the next block's norms for Wanda's input norms
SINK_PROMPTS = 8  # prompts whose first token's states decide the attention-sink dims
BASELINE = "none"


@dataclass
class Arm:
    key: str  # file name and table key, e.g. "L2-f0.01-random-d1"
    arm: str  # one of rewardscope.ablate.arms.ARMS, BASELINE, or "control" / "random_control"
    layer: int | None = None
    fraction: float | None = None
    draw: int | None = None
    dims: list[int] = field(default_factory=list)
    direction: list[float] | None = None
    note: str = ""


def run(ctx) -> dict:
    """The pipeline stage (rewardscope.stages)."""
    return experiment(ctx.recipe, ctx.inputs["rollout"], ctx.inputs["capture"], ctx.inputs["probe"], ctx.out)


def experiment(recipe: Recipe, rollout_dir: Path, capture_dir: Path, probe_dir: Path, out: Path) -> dict:
    out = Path(out)
    if (out / "results.json").exists():
        return read_json(out / "results.json")["summary"]
    cfg = recipe.ablate
    probe, capture = ProbeReader(probe_dir), CaptureReader(capture_dir)
    _check_layers(cfg, probe, capture)
    problems, prompts_of = _held_out_problems(recipe, probe)
    model, tokenizer = load_from_config(recipe.model)
    prompts = [prompts_of(p, tokenizer) for p in problems]
    token_id = _control_token(cfg.control_token, tokenizer)
    plan_path = out / "plan.json"
    if plan_path.exists():
        plan = read_json(plan_path)
    else:
        plan = _plan(recipe, model, tokenizer, probe, capture, read_rollouts(rollout_dir)[0], prompts, token_id)
        write_json(plan_path, plan)
    arms = [Arm(**a) for a in plan["arms"]]
    means = None
    if cfg.mode == "mean":
        train_rows = _rows_of(capture, set(probe.split["train"]))
        means = capture_means(capture, sorted({a.layer for a in arms if a.dims}), rows=train_rows)
    interventions = {a.key: _intervention(model, a, cfg, means) for a in arms}  # every check before sampling

    kinds = dict.fromkeys(recipe.grade.kind or p.kind for p in problems)
    graders = {kind: Grader(kind, timeout_s=recipe.grade.timeout_s, workers=recipe.grade.workers,
                            choice_fallback=recipe.grade.choice_fallback) for kind in kinds}
    try:
        for arm in arms:
            path = out / "arms" / f"{arm.key}.parquet"
            if not path.exists():
                write_parquet(path, _sample_arm(recipe, model, tokenizer, problems, prompts, interventions[arm.key],
                                                graders, token_id))
    finally:
        for grader in graders.values():
            grader.close()
    results = analyze(plan, {a.key: read_parquet(out / "arms" / f"{a.key}.parquet") for a in arms}, cfg.bootstrap,
                      kind=next(iter(kinds)), problems={p.id: p for p in problems})
    write_json(out / "results.json", results)
    return results["summary"]


# ----------------------------------------------------------------------------------------------------------
# Checks and inputs


def _check_layers(cfg, probe: ProbeReader, capture: CaptureReader) -> None:
    """Bad input fails here, before the model is loaded: a layer the probe never saw, an empty neuron file."""
    if not cfg.layers:
        raise RewardscopeError("ablate.layers: empty list (give the decoder blocks to ablate, one at a time)")
    for layer in cfg.layers:
        if layer not in probe.layers:
            raise RewardscopeError(f"ablate.layers: layer {layer} was never probed ({probe.directory} has probes of "
                                   f"layers {probe.layers}); probe it first or choose among those")
        if layer not in capture.layers:
            raise RewardscopeError(f"ablate.layers: layer {layer} is not in the capture {capture.capture_dir}")
    neurons = probe.value_neurons
    for layer in cfg.layers:
        if not neurons.get(str(layer)):
            raise RewardscopeError(f"{probe.directory / 'value_neurons.json'}: no value neurons for layer {layer} "
                                   f"(an empty list): the probe stage did not finish it; run `rewardscope probe` again")


def _held_out_problems(recipe: Recipe, probe: ProbeReader):
    split = probe.split
    chosen_on = set(split["train"]) | set(split["validation"])
    held_out = [p for p in split["held_out"] if p not in chosen_on][: recipe.ablate.problems]
    if not held_out:
        raise RewardscopeError(f"{probe.directory / 'split.json'}: no held-out problems to ablate on")
    problems, examples = load_task(recipe.data, recipe.prompt.few_shot)
    by_id = {p.id: p for p in problems}
    missing = [p for p in held_out if p not in by_id]
    if missing:
        raise RewardscopeError(f"held-out problem {missing[0]!r} of {probe.directory / 'split.json'} is not in "
                               f"data.dataset={recipe.data.dataset!r} as the recipe loads it ({len(missing)} missing): "
                               f"the recipe's data section must be the one the rollouts used")
    chosen = [by_id[p] for p in held_out]
    return chosen, lambda p, tok: build_prompt(p, tok, recipe.prompt, examples.get(p.id, ()))


def _control_token(text: str | None, tokenizer) -> int | None:
    if text is None:
        return None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise RewardscopeError(f"ablate.control_token: {text!r} is {len(ids)} tokens for this tokenizer; give a "
                               f"string that is exactly one token")
    return ids[0]


def _rows_of(capture: CaptureReader, problem_ids: set[str], limit: int | None = None, seed: int = 0) -> np.ndarray:
    names = capture.index["problem_id"].to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(np.isin(names, list(problem_ids)))
    if limit is not None and len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))
    return rows


def _next_tokens(capture: CaptureReader, rollouts: pa.Table, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows that have a next token, that token): the response token after each state (s_0: the first)."""
    response = dict(zip(rollouts["rollout_id"].to_pylist(), rollouts["response_ids"].to_pylist()))
    rollout_ids = capture.index["rollout_id"].to_numpy()[rows]
    token_index = capture.index["token_index"].to_numpy()[rows]
    keep, tokens = [], []
    for i, (rid, t) in enumerate(zip(rollout_ids, token_index)):
        ids = response[int(rid)]
        if t + 1 < len(ids):
            keep.append(i)
            tokens.append(ids[t + 1])
    return rows[keep], np.array(tokens, dtype=np.int64)


def _first_token_states(model, tokenizer, prompts: list[str], layer: int) -> np.ndarray:
    states = []
    with torch.inference_mode():
        for prompt in prompts[:SINK_PROMPTS]:
            ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=model.device)
            with residual_hooks(model, {layer: lambda h, hook: states.append(h[0, 0].float().cpu().numpy())},
                                stop_after=layer):
                model(input_ids=ids)
    return np.stack(states)


def _plan(recipe, model, tokenizer, probe: ProbeReader, capture: CaptureReader, rollouts: pa.Table,
          prompts: list[str], token_id: int | None) -> dict:
    """Every arm with the dims or direction it removes, chosen from the training problems' states."""
    cfg = recipe.ablate
    d = residual_width(model)
    if d != capture.hidden_size:
        raise RewardscopeError(f"the model's residual width is {d}, the capture's {capture.hidden_size}: another model")
    train = set(probe.split["train"])
    rows = _rows_of(capture, train, MAX_STAT_ROWS, cfg.seed)
    rewards = torch.tensor(capture.index["reward"].to_numpy()[rows], dtype=torch.float32)
    arms = [Arm(BASELINE, BASELINE, note="no intervention")]
    layers_info = {}
    main = probe.main
    for layer in cfg.layers:
        states = capture.load(layer, rows).float()
        rms = states.pow(2).mean(0).sqrt().numpy()
        sinks = A.sink_dims(_first_token_states(model, tokenizer, prompts, layer), cfg.sink_ratio)
        scores = {"value": probe.probes([layer])[0].feature_scores_[0].cpu().numpy(), "magnitude": rms}
        notes = {"value": f"main probe ({main}): L1 norm of first-layer weights per input dim",
                 "magnitude": "activation RMS over the training problems' states",
                 "terminal": "Monte-Carlo probe (terminal reward only): L1 norm of first-layer weights"}
        if "terminal" in cfg.arms:
            scores["terminal"] = probe.probes([layer], label="Monte-Carlo")[0].feature_scores_[0].cpu().numpy()
        if "next_token" in cfg.arms:
            nt_rows, nt = _next_tokens(capture, rollouts, rows)
            keep = np.isin(rows, nt_rows)
            scores["next_token"] = A.next_token_scores(states[keep], torch.tensor(nt), seed=cfg.seed).numpy()
            notes["next_token"] = f"linear next-token probe ({len(nt)} states, 32 classes): L1 norm of its weights"
        if "wanda" in cfg.arms:
            wanda, where = A.wanda_scores(model, layer, states[:WANDA_ROWS].to(model.device))
            scores["wanda"] = wanda.cpu().numpy()
            notes["wanda"] = f"sum |W| x input norm over {where}"
        matching = {}
        for fraction in cfg.fractions:
            k = A.count(fraction, d)
            value = A.top(scores["value"], k)
            tag = f"L{layer}-f{fraction:g}"
            for arm in cfg.arms:
                if arm in scores:
                    arms.append(Arm(f"{tag}-{arm}", arm, layer, fraction, dims=A.top(scores[arm], k),
                                    note=notes.get(arm, "")))
                if arm == "random":
                    for draw in range(cfg.random_draws):
                        arms.append(Arm(f"{tag}-random-d{draw}", "random", layer, fraction, draw,
                                        A.random_dims(d, k, sinks, seed=cfg.seed, layer=layer, draw=draw),
                                        note="uniform, attention-sink dims excluded"))
                if arm == "magnitude_matched":
                    quality = []
                    for draw in range(cfg.random_draws):
                        dims, q = A.magnitude_matched(rms, value, seed=cfg.seed, layer=layer, draw=draw,
                                                      excluded=sinks)
                        quality.append(q)
                        arms.append(Arm(f"{tag}-magnitude_matched-d{draw}", "magnitude_matched", layer, fraction,
                                        draw, dims, note="matched on activation RMS to the value dims, attention-sink dims excluded"))
                    matching[f"{fraction:g}"] = quality
        if "direction" in cfg.arms:
            direction = A.reward_direction(states, rewards)
            arms.append(Arm(f"L{layer}-direction", "direction", layer, direction=direction.tolist(),
                            note="linear (ridge) reward direction of the training states, projected out"))
        if "random_direction" in cfg.arms:
            for draw in range(cfg.random_draws):
                arms.append(Arm(f"L{layer}-random_direction-d{draw}", "random_direction", layer, draw=draw,
                                direction=A.random_direction(d, seed=cfg.seed, layer=layer, draw=draw).tolist(),
                                note="uniform on the sphere, projected out"))
        layers_info[str(layer)] = {"sink_dims": sinks, "sink_rule": f"first-token |activation| > {cfg.sink_ratio:g}"
                                   f" x the median dim's, over {min(len(prompts), SINK_PROMPTS)} prompts",
                                   "magnitude_matching": matching, "rms_median": float(np.median(rms)),
                                   "value_dims_rms": {f"{f:g}": float(rms[A.top(scores['value'], A.count(f, d))].mean())
                                                      for f in cfg.fractions}}
    if token_id is not None:
        last = num_layers(model) - 1
        arms.append(Arm("control", "control", last, direction=A.unembedding_direction(model, token_id).tolist(),
                        note=f"positive control: the unembedding direction of {cfg.control_token!r} (through the "
                             f"final norm) projected out of the last block"))
        for draw in range(cfg.random_draws):
            arms.append(Arm(f"control-random-d{draw}", "random_control", last, draw=draw,
                            direction=A.random_direction(d, seed=cfg.seed + 1, layer=last, draw=draw).tolist(),
                            note="random direction projected out of the last block"))
    return {"arms": [a.__dict__ for a in arms], "layers": layers_info, "hidden_size": d,
            "problems": len(prompts), "settings": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}


def _intervention(model, arm: Arm, cfg, means):
    if arm.arm == BASELINE:
        return None
    positions = cfg.positions
    if arm.direction is not None:
        return ablate(model, {arm.layer: torch.tensor(arm.direction)}, mode="project", positions=positions)
    return ablate(model, {arm.layer: arm.dims}, mode=cfg.mode, positions=positions,
                  means=None if cfg.mode != "mean" else {arm.layer: means[arm.layer]})


# ----------------------------------------------------------------------------------------------------------
# Sampling


ARM_SCHEMA = pa.schema([
    ("problem_id", pa.string()), ("sample", pa.int32()), ("response", pa.string()), ("n_tokens", pa.int32()),
    ("finish_reason", pa.string()), ("extracted", pa.string()), ("reward", pa.float32()),
    ("reward_reason", pa.string()), ("control_token_count", pa.int32()),
])


def _sample_arm(recipe, model, tokenizer, problems, prompts, intervention, graders, token_id) -> pa.Table:
    cfg = recipe.ablate
    started = time.perf_counter()
    temperature = recipe.rollout.temperature if cfg.temperature is None else cfg.temperature
    out = generate(model, tokenizer, prompts, n=cfg.n, temperature=temperature, top_p=recipe.rollout.top_p,
                   max_new_tokens=cfg.max_new_tokens or recipe.rollout.max_new_tokens,
                   batch_size=recipe.rollout.batch_size, seed=derive_seed(cfg.seed, 0),
                   hooks=None if intervention is None else intervention.hooks)
    rows = []
    for problem, samples in zip(problems, out):
        kind = recipe.grade.kind or problem.kind
        verdicts = graders[kind].grade([g.text for g in samples], [problem.answer] * len(samples),
                                       choices=[problem.choices] * len(samples))
        for s, (g, v) in enumerate(zip(samples, verdicts)):
            rows.append(dict(problem_id=problem.id, sample=s, response=g.text, n_tokens=len(g.response_ids),
                             finish_reason=g.finish_reason, extracted=v.extracted, reward=float(v.equal),
                             reward_reason=v.reason,
                             control_token_count=0 if token_id is None else g.response_ids.count(token_id)))
    table = pa.Table.from_pylist(rows, schema=ARM_SCHEMA)
    return table.replace_schema_metadata({b"rewardscope.elapsed_s": f"{time.perf_counter() - started:.3f}"})


# ----------------------------------------------------------------------------------------------------------
# Statistics


def _per_problem(table: pa.Table, column: str, order: list[str]) -> np.ndarray:
    names = np.asarray(table["problem_id"].to_pylist())
    values = np.asarray(table[column].to_pylist(), dtype=np.float64)
    return np.array([values[names == p].mean() for p in order])


def _arm_stats(table: pa.Table, accuracy: np.ndarray, n_boot: int, problems: dict, kind: str) -> dict:
    stats = {"accuracy": bootstrap_mean(accuracy, n_boot),
             "rollouts": table.num_rows,
             "mean_tokens": float(np.mean(table["n_tokens"].to_pylist())),
             "eos_rate": float(np.mean([f == "eos" for f in table["finish_reason"].to_pylist()])),
             "no_answer_rate": float(np.mean([e is None for e in table["extracted"].to_pylist()])),
             "control_token_rate": float(np.mean([c > 0 for c in table["control_token_count"].to_pylist()]))}
    if kind == "organism":
        stats.update(_organism_stats(table, problems))
    return stats


def _organism_stats(table: pa.Table, problems: dict) -> dict:
    """Slips, flags and corrections of the organism's responses (exact ground truth, rewardscope.organism): a
    flagged slip counts as corrected when the next line rewrites the step with the right result."""
    from rewardscope.organism.task import step_truth

    slips = flagged = corrected = false_flags = steps = 0
    for pid, response in zip(table["problem_id"].to_pylist(), table["response"].to_pylist()):
        truth = step_truth(problems[pid], response)
        for s in truth.chain:
            steps += 1
            slips += s.slip
            false_flags += s.flagged and not s.slip
            if s.slip and s.flagged:
                flagged += 1
                fix = truth.correction_of(s)
                corrected += fix is not None and not fix.slip
    return {"slips": slips, "steps": steps, "flag_recall": flagged / slips if slips else None,
            "false_flags": false_flags, "corrections": corrected,
            "correction_rate": corrected / flagged if flagged else None}


def analyze(plan: dict, tables: dict[str, pa.Table], n_boot: int, kind: str, problems: dict) -> dict:
    """results.json: every arm's figures, paired differences, the paper-form table and the summary."""
    arms = [Arm(**a) for a in plan["arms"]]
    order = sorted(set(tables[BASELINE]["problem_id"].to_pylist()))
    acc = {a.key: _per_problem(tables[a.key], "reward", order) for a in arms}
    per_arm = {a.key: {"arm": a.arm, "layer": a.layer, "fraction": a.fraction, "draw": a.draw,
                       "removed": len(a.dims) if a.direction is None else "1 direction", "note": a.note,
                       **_arm_stats(tables[a.key], acc[a.key], n_boot, problems, kind)} for a in arms}
    comparisons = []  # one family for Holm: every test below

    def compare(name: str, a: np.ndarray, b: np.ndarray, where: dict) -> dict:
        test = paired_difference_test(a, b, n_boot)
        comparisons.append(test)
        where[name] = test
        return test

    table: dict = {}
    groups: dict[tuple, list[Arm]] = {}
    for a in arms:
        if a.arm != BASELINE:
            groups.setdefault((a.layer, a.fraction, a.arm), []).append(a)
    for (layer, fraction, arm), members in groups.items():
        mean = np.mean([acc[m.key] for m in members], axis=0)  # a drawn arm: the mean over draws per problem
        cell = {"accuracy": bootstrap_mean(mean, n_boot), "draws": [per_arm[m.key]["accuracy"]["value"]
                                                                    for m in members],
                "keys": [m.key for m in members]}
        compare("minus_unablated", mean, acc[BASELINE], cell)
        for name in ("mean_tokens", "eos_rate", "no_answer_rate", "control_token_rate"):
            cell[name] = float(np.mean([per_arm[m.key][name] for m in members]))
        slot = f"{fraction:g}" if fraction is not None else "positive_control" if "control" in arm else "directions"
        table.setdefault(str(layer), {}).setdefault(slot, {})[arm] = (cell, mean)
    for layer, slots in table.items():
        for slot, cells in slots.items():
            reference = {"directions": "direction", "positive_control": "control"}.get(slot, "value")
            if reference in cells:
                ref_mean = cells[reference][1]
                for arm, (cell, mean) in cells.items():
                    if arm != reference:
                        compare(f"{reference}_minus_this", ref_mean, mean, cell)
            slots[slot] = {arm: cell for arm, (cell, _) in cells.items()}
    for test, significant in zip(comparisons, holm([t["p_value"] for t in comparisons])):
        test["holm_significant"] = significant
    baseline = per_arm[BASELINE]
    summary = {"problems": len(order), "unablated_accuracy": baseline["accuracy"],
               "family_size": len(comparisons),
               "significant_after_holm": sum(bool(t["holm_significant"]) for t in comparisons)}
    control = table.get(str(next((a.layer for a in arms if a.arm == "control"), None)), {}).get("positive_control", {})
    if "control" in control:
        summary["positive_control"] = {
            "control_token_rate": control["control"]["control_token_rate"],
            "random_directions_token_rate": control.get("random_control", {}).get("control_token_rate"),
            "unablated_token_rate": baseline["control_token_rate"]}
    return {"summary": summary, "arms": per_arm, "table": table, "layers": plan["layers"],
            "multiple_comparisons": {"method": "Holm-Bonferroni", "alpha": 0.05, "family_size": len(comparisons),
                                     "family": "every paired test of the table (vs unablated and vs the reference "
                                               "arm of its cell)"},
            "settings": plan["settings"]}
