"""A run directory: one process at a time (a lock), leftovers of killed runs removed and never counted, and a
finished recipe that says so and rewrites nothing. Real processes, the demo organism, real files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from rewardscope.config import Recipe, load_recipe
from rewardscope.errors import RewardscopeError
from rewardscope.io import is_temporary, read_json
from rewardscope.pipeline import LOCK_NAME, run, run_lock, run_stage

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
    run_stage("rollout", recipe, run_dir)
    killed_mid_write(run_dir / "capture" / "layer_000" / "shard-00000.safetensors", 1 << 20)
    killed_mid_write(run_dir / "rollouts" / "summary.json", 10)
    leftovers = [p for p in run_dir.rglob("*") if is_temporary(p)]
    assert len(leftovers) == 2 and leftovers[0].name.startswith(".")

    summary = run_stage("extract", recipe, run_dir)
    assert not [p for p in run_dir.rglob("*") if is_temporary(p)]
    on_disk = sum(p.stat().st_size for p in (run_dir / "capture").rglob("*") if p.is_file())
    assert summary["bytes"] <= on_disk < summary["bytes"] + 4096  # metadata.json grew by its own "bytes" entry
    assert summary["bytes"] < 1 << 20  # the 1 MiB leftover is not in it


def test_a_finished_recipe_says_so_and_rewrites_nothing(tmp_path, capsys):
    recipe = small_recipe(tmp_path)
    run_dir = run(recipe)
    first = capsys.readouterr().out
    files = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    assert run_dir / "results.json" in files
    assert run(recipe) == run_dir
    assert f"{run_dir}: complete (rollout, extract already done); nothing rewritten" in capsys.readouterr().out
    assert "complete" not in first
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == files
    assert set(read_json(run_dir / "results.json")) == {"rollout", "extract"}


def test_a_recipe_built_in_python_is_checked_before_any_work(tmp_path):
    recipe = Recipe(out_dir=str(tmp_path))
    recipe.capture.batch_size = 0
    with pytest.raises(RewardscopeError, match=r"^capture.batch_size: expected at least 1, got 0"):
        run_stage("rollout", recipe)
    recipe.capture.batch_size, recipe.model.device = 8, "gpu"
    with pytest.raises(RewardscopeError, match=r"model.device: 'gpu'"):
        run(recipe)
    assert not any(tmp_path.iterdir())
