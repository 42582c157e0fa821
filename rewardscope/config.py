"""Recipes: typed configuration, YAML files, `--key=value` overrides and run directories.

A recipe is one `Recipe` dataclass. YAML files and dotted command-line overrides are merged into it and
checked against the dataclass types, so an unknown key or a wrong type fails *before* any work starts, with
the key named. The resolved recipe is hashed; its run directory is `{out_dir}/{name}-{model}-{dataset}-{hash}`
and `config.yaml` is saved there, so a finished run can always be reproduced from its own directory.

Values are cast by the field's declared type, not by YAML's guess: `--name=2024` and `--rollout.step_delimiter=no`
are strings, `--probe.lr=1e-4` is a float (YAML 1.1 reads `1e-4` as a string, in a file too). Numeric fields
carry their bounds (`_field(check=...)`), checked when a recipe is loaded and again before a stage runs. Fields
marked `changes_results=False` (where and how fast a run goes) are left out of the hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from rewardscope.errors import RewardscopeError


def _field(default: Any = dataclasses.MISSING, *, check=None, changes_results: bool = True, factory=None):
    """A dataclass field with a value check (a function returning the reason a value is bad, or None) and a
    marker for keys that cannot change what a run computes (left out of Recipe.hash and rollouts/recipe.json)."""
    metadata = {"check": check, "changes_results": changes_results}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _at_least(low: int):
    return lambda v: None if v >= low else f"expected at least {low}, got {v!r}"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else f"expected >= 0, got {v!r}"  # NaN fails too


def _positive(v: float) -> str | None:
    return None if v > 0 else f"expected > 0, got {v!r}"


def _fraction(v: float) -> str | None:
    return None if 0 < v <= 1 else f"expected a value in (0, 1], got {v!r}"


def _delimiter(v: str) -> str | None:
    if not v:
        return "must not be empty"
    if "\\" in v:  # no delimiter needs one; a \n typed on a command line is a backslash and an n
        return (f"{v!r} has a backslash, so it is not a newline or a tab: on the command line type the character "
                f"itself (bash: --rollout.step_delimiter=$'\\n'), in YAML write \"\\n\" in double quotes")
    return None


@dataclass
class ModelConfig:
    name: str = "demo"  # Hugging Face hub id, local directory, or "demo" (the organism shipped in the package)
    revision: str | None = None  # hub revision (branch, tag or commit); recorded in every artifact
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    device: str = "auto"  # auto: cuda if available, else cpu
    trust_remote_code: bool = False  # off unless asked: remote code runs arbitrary Python
    attn_implementation: str | None = None  # None lets transformers choose (sdpa); "eager" for exact parity work
    threads: int | None = _field(None, check=_at_least(1))  # CPU threads; None: 1 for tiny models (hidden <= 256),
    # where threads only add synchronisation (up to 100x slower on a busy machine), else torch's default. It stays
    # in the hash: the thread count can change the order of float reductions, so the sampled tokens.
    gguf_file: str | None = None  # a GGUF checkpoint: a path, or a file in `name`'s folder or hub repo (docs/models.md)


@dataclass
class DataConfig:
    dataset: str = "organism"  # gsm8k | math500 | arc-challenge | arc-easy | commonsenseqa | mmlu | organism | jsonl
    path: str | None = None  # local file or folder in the original format; None loads the hub id
    hf_id: str | None = None  # override the default hub id of `dataset`
    hf_config: str | None = None  # override the default hub config of `dataset` (e.g. an MMLU subject)
    split: str | None = None  # hub split; None: the dataset's test split
    fields: dict[str, str] = field(default_factory=dict)  # custom JSONL: record field -> column name
    kind: str | None = None  # grader for custom JSONL: math | number | choice
    limit: int | None = _field(None, check=_at_least(1))  # keep the first N problems (after shuffling, if any)
    shuffle_seed: int | None = None  # shuffle problems before `limit`; None keeps file order
    # Synthetic organism task only:
    n_problems: int = _field(200, check=_at_least(1))
    seed: int = 0
    variant: str = "default"  # operation mix of the organism task (see rewardscope.organism.task.VARIANTS)


@dataclass
class PromptConfig:
    template: Literal["chat", "plain"] = "chat"  # chat: tokenizer.apply_chat_template; plain: documented fallback
    system: str | None = None  # optional system message
    instruction: str | None = None  # None: the default for the dataset's kind (\boxed{} for math, a letter for choices)
    few_shot: int = _field(0, check=_at_least(0))  # solved examples before each question: the dataset's dev split
    # (MMLU: the same subject's), else its first few_shot problems in file order, which are then never evaluated


@dataclass
class RolloutConfig:
    backend: Literal["hf", "vllm"] = "hf"  # these defaults are also generate's (rewardscope.rollout.hf, vllm_backend)
    n: int = _field(4, check=_at_least(1))  # rollouts per problem: a problem needs both right and wrong answers
    temperature: float = _field(1.0, check=_non_negative)  # paper: 1.0 (reported by a replication); 0: greedy
    top_p: float = _field(0.95, check=_fraction)  # paper: 0.95 (reported by a replication)
    max_new_tokens: int = _field(1024, check=_at_least(1))
    seed: int = _field(0, check=_at_least(0))
    batch_size: int = _field(32, check=_at_least(1))  # sequences per generate call; changes the random draws
    problems_per_shard: int = _field(16, check=_at_least(1))  # resume granularity: one parquet shard per this many
    step_delimiter: str = _field("\n\n", check=_delimiter)  # paragraphs in the paper; the organism: one line a step


@dataclass
class GradeConfig:
    kind: str | None = None  # None: the dataset's own grader; or one of rewardscope.grading.grader_kinds()
    timeout_s: float = _field(5.0, check=_positive)  # per-answer deadline for math-verify (kills the worker)
    workers: int = _field(2, check=_at_least(1), changes_results=False)  # grading processes: only speed
    choice_fallback: bool = True  # multiple choice: as a last resort the last standalone option letter, with its
    # own reason "(fallback)" so it can be audited; off: such responses get no answer


@dataclass
class CaptureConfig:
    layers: list[int] | Literal["all"] = "all"  # decoder block indices (0 = first block's output, not embeddings)
    positions: Literal["all", "steps"] = "all"  # all: s_0 + every generated token; steps: s_0 + step ends only
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"  # storage dtype of the states
    batch_size: int = _field(8, check=_at_least(1))  # rollouts per teacher-forced forward; batch composition
    # moves float32 states at rounding level, so it stays in the hash (a resume must use the same batches)
    shard_rows: int = _field(8192, check=_at_least(1))  # states per safetensors shard (per layer)


@dataclass
class ProbeConfig:
    arch: Literal["mlp", "linear"] = "mlp"  # these defaults are also LayerwiseValueProbes' (but patience: None)
    hidden: int = 1024  # paper: Linear(d, 1024) -> ReLU -> Linear(1024, 1)
    output: Literal["sigmoid", "linear"] = "sigmoid"  # unknown in the paper: option
    level: Literal["token", "step"] = "token"  # states the TD targets run over
    td_lambda: float = 0.0  # 0: the paper's TD(0); 1: Monte-Carlo (every state regresses on the reward)
    gamma: float = 1.0 - 1e-5  # paper's discount
    standardize: bool = True  # z-score each input dim with train statistics (L1 ranking is not scale invariant)
    lr: float = 1e-4  # paper
    weight_decay: float = 0.01
    batch_trajectories: int = 4
    epochs: int = 100  # the cap: training stops earlier when the validation loss stops improving
    patience: int | None = 10  # epochs without a better validation loss before a probe stops; null: exactly
    # `epochs` epochs, the paper's protocol (an undertrained probe weakens every later claim)
    tol: float = 1e-4  # an epoch improves when its validation loss is lower than the best by more than this
    test_fraction: float = 0.2  # held-out share of *problems* (never split a problem's rollouts)
    validation_fraction: float = 0.15  # share of the training problems set apart for early stopping and for
    # choosing the headline layer (never chosen on the held-out problems it is reported on)
    split_seed: int = 0  # draws the split alone: another probe.seed keeps the same held-out problems
    seed: int = 0  # initial weights, batch order and random dims
    repeats: int = 1  # refits with seeds seed+1.. on the same split: the probe's own variance beside the CI
    bootstrap: int = 1000  # bootstrap resamples (over problems) for 95% CIs
    layers: list[int] | Literal["all"] = "all"  # which captured layers to probe


@dataclass
class SweepConfig:
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99])
    random_draws: int = 3  # random-dims control: independent draws per ratio
    value_neuron_fraction: float = 0.01  # value neurons = top 1% dims by first-layer L1 norm
    layers: list[int] | Literal["all"] = "all"


def _fractions(v: list[float]) -> str | None:
    return None if v and all(0 < f < 1 for f in v) else f"expected a non-empty list of values in (0, 1), got {v!r}"


def _arm_names() -> tuple[str, ...]:
    from rewardscope.ablate.arms import ARMS  # their one home, imported only when a recipe is built

    return ARMS


def _known_arms(v: list[str]) -> str | None:
    unknown = [a for a in v if a not in _arm_names()]
    return f"unknown arm {unknown[0]!r} (known: {', '.join(_arm_names())})" if unknown else None


@dataclass
class AblateConfig:
    layers: list[int] = field(default_factory=lambda: [0])  # blocks ablated, one at a time (each must be probed)
    fractions: list[float] = _field(factory=lambda: [0.01], check=_fractions)  # share of the width per arm
    # (paper: 1%; 0.05, 0.1 as options)
    arms: list[str] = _field(factory=lambda: list(_arm_names()), check=_known_arms)  # default: every arm of
    # rewardscope.ablate.arms.ARMS; the unablated model always runs
    random_draws: int = _field(3, check=_at_least(1))  # draws of each random arm
    mode: Literal["zero", "mean"] = "zero"  # paper: zero; mean: the training states' mean of each dim
    positions: Literal["all", "generated"] = "all"  # paper: every position (prompt and generated tokens)
    problems: int | None = _field(None, check=_at_least(1))  # the first N of the probe's held-out problems
    n: int = _field(4, check=_at_least(1))  # samples per problem, the same sampling seed for every arm
    temperature: float | None = _field(None, check=_non_negative)  # None: rollout.temperature
    max_new_tokens: int | None = _field(None, check=_at_least(1))  # None: rollout.max_new_tokens
    seed: int = _field(0, check=_at_least(0))  # sampling seed and the random arms' draws
    sink_ratio: float = _field(20.0, check=_positive)  # attention-sink dims: first-token |activation| over this
    # many times the median dim's (excluded from the uniform random arm and listed)
    control_token: str | None = None  # positive control: this token's unembedding direction (through the final
    # norm) projected out of the last block, against random directions; its rate in the responses is reported
    bootstrap: int = _field(2000, check=_at_least(100))  # paired bootstrap resamples over problems


def _known_stages(stages: list[str]) -> str | None:
    from rewardscope.stages import ALIASES, STAGES  # the registry: one list of stages

    unknown = [s for s in stages if s not in STAGES and s not in ALIASES]
    return f"unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})" if unknown else None


@dataclass
class Recipe:
    name: str = "run"
    out_dir: str = _field("runs", changes_results=False)  # where, not what
    stages: list[str] = _field(factory=lambda: ["rollout"], check=_known_stages, changes_results=False)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    grade: GradeConfig = field(default_factory=GradeConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    ablate: AblateConfig = field(default_factory=AblateConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """The run key: a hash of every stage's artifact key (rewardscope.stages), so it covers every key that
        can change a result (not those marked changes_results=False) and nothing else."""
        from rewardscope import stages

        keys = stages.keys(self, list(stages.STAGES.values()))
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:8]

    def run_name(self) -> str:
        model = Path(self.model.name.rstrip("/")).name or "model"
        return _slug(f"{self.name}-{model}-{self.data.dataset}") + f"-{self.hash()}"

    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.run_name()


# ----------------------------------------------------------------------------------------------------------
# Loading and checking


def load_recipe(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Recipe:
    """Recipe from a YAML file (or defaults) plus overrides (`["--rollout.n=8"]` or `{"rollout.n": 8}`)."""
    raw: dict = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for key, value in _parse_overrides(overrides).items():
        _set_dotted(raw, key, value)
    try:
        recipe = from_dict(Recipe, raw)
        check_recipe(recipe)
    except RewardscopeError as e:
        raise RewardscopeError(f"recipe {path}: {e}" if path else str(e)) from None
    return recipe


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise RewardscopeError(f"recipe {path}: file not found")
    if path.is_dir():
        raise RewardscopeError(f"recipe {path}: is a folder, not a YAML file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RewardscopeError(f"recipe {path}: line {line} (byte {e.start}): not UTF-8 text ({e.reason})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise RewardscopeError(f"recipe {path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise RewardscopeError(f"recipe {path}: expected a mapping at top level")
    return raw


def results_dict(cfg: Any) -> dict:
    """The fields of a config dataclass that can change results (changes_results=False ones left out)."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("changes_results", True):
            value = getattr(cfg, f.name)
            out[f.name] = results_dict(value) if dataclasses.is_dataclass(value) else value
    return json.loads(json.dumps(out))  # plain lists and dicts: comparisons with saved JSON are exact


def check_recipe(cfg: Any, prefix: str = "") -> None:
    """Run every field's value check (`_field(check=...)`); the error names the dotted key."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_recipe(value, prefix + f.name + ".")
        elif value is not None and f.metadata.get("check") is not None:
            reason = f.metadata["check"](value)
            if reason:
                raise RewardscopeError(f"{prefix}{f.name}: {reason}")


def from_dict(cls: type, raw: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a dict, checking every key and type; errors name the dotted key."""
    if not isinstance(raw, dict):
        raise RewardscopeError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        dotted = prefix + key
        if key not in known:
            raise RewardscopeError(f"unknown key {dotted!r} (known: {', '.join(sorted(known))})")
        kwargs[key] = _check(hints[key], value, dotted)
    return cls(**kwargs)


class _Typed(str):
    """A value as typed on the command line: cast by the field's declared type, never by YAML's guess."""


_NULL = ("null", "None", "~")
_BOOL = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # what YAML 1.1 misses: 1e-4, 5E3


def _yaml(text: str, key: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RewardscopeError(f"{key}: {text!r} is not valid YAML ({getattr(e, 'problem', e)})") from None


def _check(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    typed = isinstance(value, _Typed)
    if dataclasses.is_dataclass(tp):
        value = _yaml(value, key) if typed else value
        return from_dict(tp, value if value is not None else {}, prefix=key + ".")
    if origin in (Union, types.UnionType):
        if typed and type(None) in args and value in _NULL:
            return None
        for option in args:
            try:
                return _check(option, value, key)
            except RewardscopeError:
                pass
        hint = ": quote it in YAML" if str in args and isinstance(value, (int, float, bool)) else ""
        raise RewardscopeError(f"{key}: {str(value) if typed else value!r} is not {_type_name(tp)}{hint}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is Literal:
        if value in args:
            return args[args.index(value)]
        raise RewardscopeError(f"{key}: {value!r} is not one of {list(args)}")
    elif origin is list:
        value = _yaml(value, key) if typed else value
        if isinstance(value, (list, tuple)):
            return [_check(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        value = _yaml(value, key) if typed else value
        if isinstance(value, dict):
            return {_check(args[0], k, key): _check(args[1], v, f"{key}.{k}") for k, v in value.items()}
    elif tp is bool:
        if typed and value.lower() in _BOOL:
            return _BOOL[value.lower()]
        if isinstance(value, bool):
            return value
    elif tp is int:
        if typed and _INT.fullmatch(value):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value):  # typed, or a YAML 1.1 string such as 1e-4
            return float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return str(value)  # the text as typed ("2024", "no", "123456")
        if isinstance(value, (int, float, bool)):  # YAML in a file read it as a number or a boolean
            raise RewardscopeError(f"{key}: expected str, got {value!r} ({type(value).__name__}): quote it in YAML")
    else:
        raise TypeError(f"config type {tp} of {key} not supported")
    if typed:
        raise RewardscopeError(f"{key}: expected {_type_name(tp)}, got {str(value)!r}")
    raise RewardscopeError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + str(list(args))
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    return {type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _parse_overrides(overrides: list[str] | dict | None) -> dict:
    """`--key=value` texts -> {key: _Typed(value)} (cast later by the key's type); a dict is taken as it is."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed = {}
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise RewardscopeError(f"override {item!r}: expected --key=value (dotted keys, e.g. --rollout.n=8)")
        key, value = text.split("=", 1)
        parsed[key] = _Typed(value)
    return parsed


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RewardscopeError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the resolved recipe; an identical file is left untouched (a finished run rewrites nothing)."""
    from rewardscope.io import write_text_if_changed

    write_text_if_changed(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True))
