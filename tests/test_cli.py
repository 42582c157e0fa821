"""The command line, run as a real process: every subcommand exists, overrides mean what was typed, and user
errors are one clear line naming the file or key with exit code 2, never a traceback, before any work."""

import argparse
import subprocess
import sys

import pytest
import torch
import yaml

from rewardscope.cli import build_parser

COMMANDS = {"run", "rollout", "capture", "extract", "probe", "ablate", "config", "report", "grade", "transfer", "demo-model"}


def rewardscope(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rewardscope.cli", *args], capture_output=True, text=True, cwd=cwd)


def refused(res, message: str) -> bool:
    """Exit code 2, no traceback, and a last line `rewardscope: error: ...` holding `message` (progress bars of
    model loading may come before it)."""
    last = res.stderr.rstrip("\n").rsplit("\n", 1)[-1]
    return (res.returncode == 2 and "Traceback" not in res.stderr and last.startswith("rewardscope: error: ")
            and message in last)


def resolved(*args) -> dict:
    """The recipe `rewardscope config ARGS` prints (the same loading path as every stage command)."""
    res = rewardscope("config", *args)
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_subcommand_is_in_the_parser_and_answers_help():
    """The parser's own subcommands, not words in help text (which a deleted subcommand would leave behind)."""
    commands = subcommands(build_parser())
    assert set(commands) == COMMANDS
    from rewardscope.stages import STAGES

    assert set(STAGES) <= set(commands)  # a stage's subcommand comes from the registry
    assert commands["extract"] is commands["capture"]  # the old name of the capture stage still works
    assert set(subcommands(commands["demo-model"])) == {"train", "evaluate"}
    listed = rewardscope("--help").stdout
    for command in COMMANDS - {"extract"}:  # an alias prints its stage's usage
        res = rewardscope(command, "--help")
        assert res.returncode == 0 and res.stdout.startswith(f"usage: rewardscope {command}"), command
        assert command in listed.split("{", 1)[1].split("}", 1)[0]  # the usage line's list of choices
    assert rewardscope("demo-model", "train", "--help").stdout.startswith("usage: rewardscope demo-model train")


def test_unknown_recipe_key_is_one_clear_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("rollout:\n  temprature: 0.5\n")
    assert refused(rewardscope("rollout", str(recipe)), f"recipe {recipe}: unknown key 'rollout.temprature'")


def test_bad_override_type():
    assert refused(rewardscope("run", "--rollout.n=many"), "rollout.n: expected int, got 'many'")


def test_unknown_stage(tmp_path):
    assert refused(rewardscope("run", f"--out_dir={tmp_path}", "--stages=[rollout, dance]"), "unknown stage 'dance'")
    assert not any(tmp_path.iterdir()), "nothing may run before the recipe is checked"


def test_overrides_are_cast_by_the_declared_type():
    """YAML 1.1 would read 1e-4 as a string (refused for a float), 2024 and 123456 as ints and no as false
    (refused for a string): each value means what was typed."""
    r = resolved("--probe.lr=1e-4", "--name=2024", "--model.revision=123456", "--rollout.step_delimiter=no",
                 "--rollout.top_p=5E-1", "--model.threads=null", "--capture.layers=[0, 2]", "--data.fields={q: a}")
    assert r["probe"]["lr"] == 1e-4 and isinstance(r["probe"]["lr"], float)
    assert r["name"] == "2024" and r["model"]["revision"] == "123456" and r["rollout"]["step_delimiter"] == "no"
    assert r["rollout"]["top_p"] == 0.5 and r["model"]["threads"] is None
    assert r["capture"]["layers"] == [0, 2] and r["data"]["fields"] == {"q": "a"}
    assert resolved("--model.revision=None")["model"]["revision"] is None  # `X | None` takes null and None
    assert resolved("--name=null")["name"] == "null"  # a plain str is the text as typed


def test_a_typed_backslash_n_is_refused_with_the_reason():
    res = rewardscope("config", r"--rollout.step_delimiter=\n")
    assert refused(res, r"rollout.step_delimiter: '\\n' has a backslash, so it is not a newline")
    assert "$'\\n'" in res.stderr
    assert resolved("--rollout.step_delimiter=\n")["rollout"]["step_delimiter"] == "\n"  # bash's $'\n'


def test_float_in_a_recipe_file_that_yaml_reads_as_a_string(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("probe:\n  lr: 1e-4\nsweep:\n  ratios: [0.0, 5e-1]\n")
    assert yaml.safe_load(path.read_text())["probe"]["lr"] == "1e-4"  # what PyYAML makes of it
    r = resolved(str(path))
    assert r["probe"]["lr"] == 1e-4 and r["sweep"]["ratios"] == [0.0, 0.5]


def test_bad_recipe_files_are_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: demo\n# caf\u00e9\n".encode("latin-1"))
    assert refused(rewardscope("run", str(path)), f"recipe {path}: line 2 (byte 16): not UTF-8 text")
    assert refused(rewardscope("run", str(tmp_path)), f"recipe {tmp_path}: is a folder, not a YAML file")
    assert refused(rewardscope("run", str(tmp_path / "none.yaml")), "none.yaml: file not found")


@pytest.mark.parametrize("value", ["0", "-2"])
def test_thread_counts_below_one_are_refused(value, tmp_path):
    res = rewardscope("rollout", f"--out_dir={tmp_path}", f"--model.threads={value}")
    assert refused(res, f"model.threads: expected at least 1, got {value}")
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_fails_before_any_work(tmp_path):
    res = rewardscope("run", f"--out_dir={tmp_path}", "--model.device=cuda", "--stages=[rollout, extract]")
    assert refused(res, "model.device: 'cuda' but CUDA is not available")
    assert not any(tmp_path.iterdir()), "the run directory must not even be made"


def test_a_device_that_does_not_exist_is_refused(tmp_path):
    assert refused(rewardscope("extract", f"--out_dir={tmp_path}", "--model.device=gpu"), "model.device: 'gpu'")
    assert refused(rewardscope("rollout", f"--out_dir={tmp_path}", "--model.device=cuda:64"), "model.device: 'cuda:64'")
    assert not any(tmp_path.iterdir())


def test_a_prompt_beyond_the_context_is_refused_naming_the_problem(tmp_path):
    """The demo organism has 128 positions: 120 new tokens after a prompt of ~20 cannot fit."""
    res = rewardscope("rollout", f"--out_dir={tmp_path}", "--data.n_problems=3", "--rollout.max_new_tokens=120")
    assert refused(res, "problem 'organism-default-0-0' (index 0): its prompt has")
    assert "Nothing was sampled: set rollout.max_new_tokens <= " in res.stderr
    assert not list(tmp_path.rglob("shard-*"))


def test_a_finished_recipe_says_so_and_rewrites_nothing(tmp_path):
    args = ("rollout", f"--out_dir={tmp_path}", "--data.n_problems=2", "--rollout.n=2", "--rollout.max_new_tokens=96",
            "--rollout.step_delimiter=\n", "--grade.workers=1")
    first = rewardscope(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = rewardscope(*args)
    assert again.returncode == 0 and "rollout: already complete; nothing rewritten" in again.stdout
    assert "already complete" not in first.stdout
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == files
