"""The command line: user errors are one clear line and exit code 2, never a traceback."""

import subprocess
import sys


def rewardscope(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rewardscope.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_unknown_recipe_key_is_one_clear_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("rollout:\n  temprature: 0.5\n")
    res = rewardscope("rollout", str(recipe))
    assert res.returncode == 2
    assert "unknown key 'rollout.temprature'" in res.stderr and "Traceback" not in res.stderr


def test_bad_override_type(tmp_path):
    res = rewardscope("run", "--rollout.n=many")
    assert res.returncode == 2 and "rollout.n: expected int" in res.stderr


def test_unknown_stage(tmp_path):
    res = rewardscope("run", f"--out_dir={tmp_path}", "--stages=[rollout, dance]")
    assert res.returncode == 2 and "unknown stage 'dance'" in res.stderr
    assert not any(tmp_path.iterdir()), "nothing may run before the recipe is checked"


def test_help_lists_every_stage():
    out = rewardscope("--help").stdout
    for command in ("run", "rollout", "grade", "demo-model", "extract", "probe", "transfer"):
        assert command in out
