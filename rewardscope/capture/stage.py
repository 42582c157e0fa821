"""The `capture` stage: a rollout artifact -> a capture artifact (see rewardscope.capture.extract)."""

from __future__ import annotations

from pathlib import Path

from rewardscope.capture.extract import S0, capture, check_compatible, check_disk, plan_capture
from rewardscope.config import Recipe
from rewardscope.errors import RewardscopeError
from rewardscope.hooks import resolve_layers
from rewardscope.io import read_json
from rewardscope.models import load_config, load_from_config, model_fingerprint
from rewardscope.readers import ROLLOUTS_FILE, read_rollouts


def run(ctx) -> dict:
    """The pipeline stage (rewardscope.stages): the rollout artifact -> this capture artifact."""
    return capture_rollouts(ctx.recipe, ctx.inputs["rollout"], ctx.out)


def capture_rollouts(recipe: Recipe, rollout_dir: Path, out_dir: Path) -> dict:
    """Capture the states of every rollout of the artifact in `rollout_dir` (any rollout artifact: the rollout
    stage's, or one an ablation or search stage wrote) into `out_dir`; a finished capture returns its summary
    without loading the model.

    Everything that can refuse the capture (other settings in the directory, rollouts of other weights, a disk
    too small) is checked before the model is loaded: loading a large model takes minutes."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "metadata.json"
    cfg = recipe.capture
    fingerprint = model_fingerprint(recipe.model.name, recipe.model.revision, recipe.model.gguf_file)
    if meta_path.exists():
        # capture() repeats the check with every setting.
        expected = dict(model=recipe.model.name, revision=recipe.model.revision, model_fingerprint=fingerprint,
                        dtype=cfg.dtype, positions=cfg.positions, shard_rows=cfg.shard_rows, s0=S0)
        if cfg.layers != "all":
            expected["layers"] = sorted(set(cfg.layers))
        meta = read_json(meta_path)
        check_compatible(meta, expected, out_dir)
        if meta.get("complete"):
            return _summary(meta, out_dir)
    rollouts, sampled_by = read_rollouts(rollout_dir)
    rollouts_path = Path(rollout_dir) / ROLLOUTS_FILE
    if None not in (sampled_by, fingerprint) and sampled_by != fingerprint:
        raise RewardscopeError(
            f"{rollouts_path}: sampled from other weights of {recipe.model.name!r} ({sampled_by}, now {fingerprint}: "
            f"retrained or replaced); capturing them now would pair responses with a model that did not write them")
    plan = plan_capture(rollouts, cfg.positions)
    config = load_config(recipe.model)  # layers and width from config.json alone
    layers = resolve_layers(cfg.layers, config.num_hidden_layers)
    check_disk(out_dir, plan, len(layers), config.hidden_size, cfg.dtype, cfg.shard_rows)
    model, tokenizer = load_from_config(recipe.model)
    capture(model, tokenizer, rollouts, out_dir, cfg.layers, cfg.positions, cfg.dtype, cfg.batch_size,
            cfg.shard_rows, model_name=recipe.model.name, revision=recipe.model.revision,
            model_fingerprint=fingerprint, plan=plan)
    return _summary(read_json(meta_path), out_dir)


def _summary(meta: dict, out_dir: Path) -> dict:
    stats = meta["stats"]
    return dict(
        rows=meta["n_rows"], rollouts=meta["n_rollouts"], layers=meta["layers"], hidden_size=meta["hidden_size"],
        dtype=meta["dtype"], positions=meta["positions"], bytes=meta["bytes"], tokens=stats["tokens"],
        tokens_per_s=stats["tokens_per_s"], elapsed_s=stats["elapsed_s"], path=str(out_dir),
    )
