"""A run directory: per-stage keyed artifacts reused across recipes, one process at a time (a lock), leftovers of
killed runs removed and never counted, and a finished recipe that says so and rewrites nothing. Real processes,
the demo organism, real files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from rewardscope.config import Recipe, load_recipe
from rewardscope.errors import RewardscopeError
from rewardscope.io import is_temporary, read_json
from rewardscope import stages
from rewardscope.pipeline import ARTIFACTS, LOCK_NAME, STAGE_FILE, run, run_lock, run_stage

SMALL = {"data.n_problems": 3, "rollout.n": 2, "rollout.max_new_tokens": 96, "rollout.step_delimiter": "\n",
         "rollout.problems_per_shard": 2, "grade.workers": 1, "capture.shard_rows": 16, "capture.batch_size": 4}


def small_recipe(tmp_path, **extra) -> Recipe:
    return load_recipe(overrides={"out_dir": str(tmp_path), "stages": ["rollout", "extract"], **SMALL, **extra})


def cli(*args):
    return subprocess.run([sys.executable, "-m", "rewardscope.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def overrides_of(recipe_args: dict) -> list[str]:
    return [f"--{k}={v}" for k, v in recipe_args.items()]


def test_a_second_process_is_refused_while_the_first_holds_the_lock(tmp_path):
    recipe = small_recipe(tmp_path)
    args = ["rollout", *overrides_of({"out_dir": tmp_path, **SMALL})]
    with run_lock(recipe.run_dir()):  # this process is the first run
        second = cli(*args)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"{recipe.run_dir()}: another rewardscope process is running this recipe" in second.stderr
        assert sorted(p.name for p in recipe.run_dir().iterdir()) == [LOCK_NAME], "the second run wrote nothing"
        with run_lock(recipe.run_dir()):  # re-entrant in its own process (run() holds it around run_stage)
            pass
    assert cli(*args).returncode == 0  # released: the same command runs


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "run"
    script = ("import os, signal, sys\nfrom rewardscope.pipeline import run_lock\n"
              "with run_lock(sys.argv[1]):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    child = subprocess.run([sys.executable, "-c", script, str(run_dir)], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL and (run_dir / LOCK_NAME).exists()
    with run_lock(run_dir):  # the kernel dropped the dead process's lock
        pass


def killed_mid_write(path, size: int) -> None:
    """A process killed (SIGKILL) inside io.atomic_path, `size` bytes into its temporary file: a real leftover."""
    script = ("import os, signal, sys\nfrom rewardscope.io import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_bytes(bytes(int(sys.argv[2])))\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    child = subprocess.run([sys.executable, "-c", script, str(path), str(size)], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr


def test_leftovers_of_killed_runs_are_removed_and_never_counted(tmp_path):
    recipe = small_recipe(tmp_path)
    run_dir = recipe.run_dir()
    run_stage("rollout", recipe)
    capture_dir = tmp_path / ARTIFACTS / f"capture-{stages.keys(recipe, stages.closure(['capture']))['capture']}"
    killed_mid_write(capture_dir / "layer_000" / "shard-00000.safetensors", 1 << 20)
    killed_mid_write(run_dir / "rollout" / "rollouts" / "summary.json", 10)
    leftovers = [p for p in tmp_path.rglob("*") if is_temporary(p)]
    assert len(leftovers) == 2 and leftovers[0].name.startswith(".")

    run(recipe)  # the next run: every artifact it touches is cleaned under that artifact's lock
    summary = read_json(run_dir / "results.json")["capture"]
    assert not [p for p in tmp_path.rglob("*") if is_temporary(p)]
    on_disk = sum(p.stat().st_size for p in capture_dir.rglob("*") if p.is_file() and p.name != STAGE_FILE)
    assert summary["bytes"] <= on_disk < summary["bytes"] + 4096  # metadata.json grew by its own "bytes" entry
    assert summary["bytes"] < 1 << 20  # the 1 MiB leftover is not in it


def test_a_finished_recipe_says_so_and_rewrites_nothing(tmp_path, capsys):
    recipe = small_recipe(tmp_path)
    run_dir = run(recipe)
    first = capsys.readouterr().out
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert run_dir / "results.json" in files
    assert run(recipe) == run_dir
    assert f"{run_dir}: complete (rollout, capture already done); nothing rewritten" in capsys.readouterr().out
    assert "complete" not in first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == files
    assert set(read_json(run_dir / "results.json")) == {"rollout", "capture"}


def artifacts(root):
    return {p.name: p.stat().st_mtime_ns for p in (root / ARTIFACTS).iterdir()}


def test_changing_only_probe_settings_reuses_the_rollouts_and_the_capture(tmp_path):
    probe = {"stages": ["probe"], "probe.hidden": 8, "probe.epochs": 2, "probe.bootstrap": 20,
             "sweep.ratios": [0.0], "sweep.random_draws": 0, "data.n_problems": 6}
    first = run(small_recipe(tmp_path, **probe))
    before = artifacts(tmp_path)
    assert sorted(name.split("-")[0] for name in before) == ["capture", "probe", "rollout"]
    second = run(small_recipe(tmp_path, **{**probe, "probe.hidden": 4}))
    after = artifacts(tmp_path)
    new = set(after) - set(before)
    assert len(new) == 1 and new.pop().startswith("probe-")  # only the probe ran again
    assert {k: after[k] for k in before} == before  # the rollouts and the capture were not touched
    assert second != first and (second / "rollout").resolve() == (first / "rollout").resolve()
    assert (second / "probe").resolve() != (first / "probe").resolve()
    assert read_json(second / "run.json")["capture"]["key"] == read_json(first / "run.json")["capture"]["key"]
    # `rewardscope probe` alone with other probe settings: a new run directory, whose inputs come from the store
    third = small_recipe(tmp_path, **{**probe, "probe.hidden": 2})
    run_stage("probe", third)
    assert (third.run_dir() / "capture").resolve() == (first / "capture").resolve()
    assert len(set(artifacts(tmp_path)) - set(after)) == 1


def test_adding_a_recipe_section_or_a_stage_changes_no_existing_key():
    import dataclasses

    @dataclasses.dataclass
    class Ablation:
        fraction: float = 0.01

    @dataclasses.dataclass
    class Extended(Recipe):  # a later version of the recipe, with a section for a new stage
        ablate: Ablation = dataclasses.field(default_factory=Ablation)

    base, extended = Recipe(), Extended()
    registered = list(stages.STAGES.values())
    new_stage = stages.Stage("ablate", "zero neurons", sections=("ablate",), inputs=("probe",), run="x:y")
    assert stages.keys(extended, [*registered, new_stage]) == {**stages.keys(base, registered),
                                                              "ablate": stages.keys(extended, [*registered, new_stage])["ablate"]}
    changed = load_recipe(overrides={"probe.hidden": 7})
    keys_base, keys_changed = stages.keys(base, registered), stages.keys(changed, registered)
    assert keys_changed["rollout"] == keys_base["rollout"] and keys_changed["capture"] == keys_base["capture"]
    assert keys_changed["probe"] != keys_base["probe"]
    faster = load_recipe(overrides={"grade.workers": 1})  # cannot change a result: in no key
    assert stages.keys(faster, registered) == keys_base


def test_a_run_directory_of_the_old_layout_says_what_to_do(tmp_path):
    old = tmp_path / "demo-demo-organism-0123abcd"
    old.mkdir()
    (old / "rollouts.parquet").write_bytes(b"")
    with pytest.raises(RewardscopeError, match=r"made by rewardscope 0.1 .* run `rewardscope run .*config.yaml`"):
        run_stage("rollout", small_recipe(tmp_path), old)
    for command in (["report", str(old)], ["transfer", str(old), str(old)]):
        res = cli(*command)
        assert res.returncode == 2 and "made by rewardscope 0.1" in res.stderr, command


def test_a_finished_stage_of_other_settings_is_refused_in_a_run_assembled_by_hand(tmp_path):
    recipe = small_recipe(tmp_path)
    run_stage("rollout", recipe, tmp_path / "by-hand")
    assert (tmp_path / "by-hand" / "rollout" / STAGE_FILE).exists() and not (tmp_path / ARTIFACTS).exists()
    with pytest.raises(RewardscopeError, match=r"a finished rollout stage made with other settings"):
        run_stage("rollout", small_recipe(tmp_path, **{"rollout.seed": 1}), tmp_path / "by-hand")
    with pytest.raises(RewardscopeError, match=r"no finished `capture` stage for this recipe: run `rewardscope capture`"):
        run_stage("probe", recipe, tmp_path / "by-hand")


def test_a_recipe_built_in_python_is_checked_before_any_work(tmp_path):
    recipe = Recipe(out_dir=str(tmp_path))
    recipe.capture.batch_size = 0
    with pytest.raises(RewardscopeError, match=r"^capture.batch_size: expected at least 1, got 0"):
        run_stage("rollout", recipe)
    recipe.capture.batch_size, recipe.model.device = 8, "gpu"
    with pytest.raises(RewardscopeError, match=r"model.device: 'gpu'"):
        run(recipe)
    assert not any(tmp_path.iterdir())
