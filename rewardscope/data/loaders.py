"""Datasets: each benchmark from its Hugging Face id or a local file, normalised to `Problem` records.

Every dataset has one converter, from its *hub* row format to a Problem. Local files in the authors' original
formats (see docs/datasets.md) are first rewritten into hub rows, so a local file and the hub give the same
records, ids included. A `.parquet` file is read as hub rows (e.g. one downloaded from the dataset's hub repo).
Custom data: dataset "jsonl", a JSONL (or parquet) file whose columns `data.fields` maps to record fields.

Every dataset is an entry of one registry, read by name (`data.dataset`): the benchmarks of DATASETS and "jsonl"
are registered here; any other package registers its own with `register_dataset(name, load, kind)`. A dataset of a
package that imports rewardscope.data itself (the organism task) is declared in DATASET_ENTRY_POINTS as
"module:function", imported the first time its name is asked for: no import cycle, and no import of it before.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import math
import random
from decimal import Decimal
from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rewardscope.config import DataConfig
from rewardscope.data.record import CHOICE_LETTERS, GraderKind, Problem
from rewardscope.errors import RewardscopeError
from rewardscope.grading.answers import whole_number
from rewardscope.io import read_jsonl, read_parquet

Rows = Iterator[tuple[str, dict]]  # (where: "file:line" or "hub-id[split] row i", for errors; hub-format row)
Converter = Callable[[dict, str, int], Problem]  # (hub row, where, row number) -> Problem

# ----------------------------------------------------------------------------------------------------------
# Reading rows


def _jsonl_rows(path: Path) -> Rows:
    for lineno, row in read_jsonl(path, with_lineno=True):
        yield f"{path}:{lineno}", row


def _parquet_rows(path: Path) -> Rows:
    for i, row in enumerate(read_parquet(path).to_pylist()):
        yield f"{path} row {i}", row


def _field(row: dict, name: str, where: str, expected: type = object):
    if name not in row:
        raise RewardscopeError(f"{where}: missing field {name!r} (has: {sorted(row)})")
    value = row[name]
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is int):  # True is no index
        raise RewardscopeError(f"{where}: field {name!r}: expected {expected.__name__}, got {value!r}")
    return value


def _nested_choices_jsonl(path: Path) -> Rows:
    """Original ARC / CommonsenseQA JSONL (`question: {stem, choices: [{text, label}]}`) -> hub rows."""
    for where, row in _jsonl_rows(path):
        question = _field(row, "question", where, dict)
        choices = _field(question, "choices", f"{where}: field 'question'", list)
        try:
            texts, labels = [c["text"] for c in choices], [c["label"] for c in choices]
        except (KeyError, TypeError):
            raise RewardscopeError(f"{where}: field 'question.choices': expected [{{text, label}}, ...]") from None
        hub = {**row, "question": _field(question, "stem", f"{where}: field 'question'", str)}
        hub["choices"] = {"text": texts, "label": labels}
        if "question_concept" in question:  # CommonsenseQA
            hub["question_concept"] = question["question_concept"]
        yield where, hub


def _mmlu_csv(path: Path) -> Rows:
    """Original MMLU CSVs (`<subject>_test.csv`, no header: question,A,B,C,D,answer) -> hub rows."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise RewardscopeError(f"{path}: no MMLU .csv files (expected <subject>_test.csv)")
    for file in files:
        subject = file.stem.removesuffix("_test").removesuffix("_dev").removesuffix("_val")
        data = file.read_bytes()  # a subject's file is small; decoding it whole gives the exact bad byte
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise RewardscopeError(f"{file}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at byte offset {e.start}); "
                                   f"re-encode the file as UTF-8") from None
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as e:  # e.g. a field over csv.field_size_limit() (128 KiB): an unclosed quote, mostly
                raise RewardscopeError(f"{file}:{start}: unreadable CSV row ({e}; an unclosed quote makes one "
                                       f"field of the rest of the file)") from None
            where, start = f"{file}:{start}", reader.line_num + 1  # a quoted field may span lines
            if len(values) != 6:
                raise RewardscopeError(f"{where}: expected 6 columns (question,A,B,C,D,answer), got {len(values)}")
            if values[5] not in ("A", "B", "C", "D"):
                raise RewardscopeError(f"{where}: field 'answer' (column 6): {values[5]!r} is not one of A-D")
            yield where, {"question": values[0], "subject": subject, "choices": values[1:5],
                          "answer": "ABCD".index(values[5])}


# ----------------------------------------------------------------------------------------------------------
# Gold answers in each grader's normal form (see Problem)


def _number_answer(value, where: str, name: str) -> str:
    """The gold number as the number grader reads it (grading.answers.whole_number): a gold it would read
    otherwise (`1e3` as 1, `1_000` as 1) is refused here, with its file and line, rather than graded wrong."""
    if isinstance(value, float) and math.isfinite(value):
        text = format(Decimal(repr(value)), "f")  # a JSON number: 1e-05 is 0.00001
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        text = value if isinstance(value, str) else str(value)  # JSON and parquet ints are far below str()'s limit
    else:
        text = ""
    number = whole_number(text) if text else None
    if number is None:
        raise RewardscopeError(f"{where}: field {name!r}: gold answer {str(value)[:80]!r} is not a number the "
                               f"number grader reads (digits, optional sign, thousands commas, decimals)")
    return number


def _math_answer(value, where: str, name: str) -> str:
    text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    if len(text) > 1 and text[0] == text[-1] == "$" and text[-2] != "\\":  # `$x$` -> `x`; `\$5` stays
        text = text.strip("$").strip()
    if not text:
        raise RewardscopeError(f"{where}: field {name!r}: empty or unusable gold answer {value!r}")
    return text


def _text_answer(value, where: str, name: str) -> str:
    """The gold of any other kind (organism, a registered one): its text, stripped; its grader's `gold` reads it."""
    text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    if not text:
        raise RewardscopeError(f"{where}: field {name!r}: empty or unusable gold answer {value!r}")
    return text


def _choice_texts(value, where: str, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not 2 <= len(value) <= len(CHOICE_LETTERS) or not all(
        isinstance(v, str) for v in value
    ):
        raise RewardscopeError(f"{where}: field {name!r}: expected a list of 2-{len(CHOICE_LETTERS)} option texts")
    return tuple(value)


# ----------------------------------------------------------------------------------------------------------
# Converters: hub row -> Problem


def _gsm8k(row: dict, where: str, index: int) -> Problem:
    solution = _field(row, "answer", where, str)
    if "####" not in solution:
        raise RewardscopeError(f"{where}: field 'answer': no final '#### <number>' line")
    gold = _number_answer(solution.rsplit("####", 1)[1], where, "answer")
    return Problem(f"gsm8k-{index}", _field(row, "question", where, str), gold, "number",
                   metadata={"solution": solution})


def _math500(row: dict, where: str, index: int) -> Problem:
    metadata = {k: row[k] for k in ("subject", "level", "solution") if k in row}
    return Problem(_field(row, "unique_id", where, str), _field(row, "problem", where, str),
                   _math_answer(_field(row, "answer", where), where, "answer"), "math", metadata=metadata)


def _labelled_choices(row: dict, where: str, index: int) -> Problem:
    """ARC and CommonsenseQA: `choices: {text: [...], label: [...]}`, `answerKey` one of the labels."""
    choices = _field(row, "choices", where, dict)
    texts = _choice_texts(choices.get("text"), where, "choices.text")
    labels = list(choices.get("label") or [])
    key = _field(row, "answerKey", where, str)
    if len(labels) != len(texts) or key not in labels:
        raise RewardscopeError(f"{where}: field 'answerKey': {key!r} is not among the choice labels {labels}")
    metadata = {"label": key, **({"question_concept": row["question_concept"]} if "question_concept" in row else {})}
    return Problem(_field(row, "id", where, str), _field(row, "question", where, str),
                   CHOICE_LETTERS[labels.index(key)], "choice", texts, metadata)


def _mmlu(row: dict, where: str, index: int) -> Problem:
    subject = _field(row, "subject", where, str)
    texts = _choice_texts(_field(row, "choices", where), where, "choices")
    answer = _field(row, "answer", where, int)
    if not 0 <= answer < len(texts):
        raise RewardscopeError(f"{where}: field 'answer': {answer} is not an index into the {len(texts)} choices")
    letter = CHOICE_LETTERS[answer]
    return Problem(f"mmlu-{subject}-{index}", _field(row, "question", where, str), letter, "choice", texts,
                   metadata={"subject": subject, "label": letter})


# ----------------------------------------------------------------------------------------------------------
# The datasets


@dataclass(frozen=True)
class DatasetSpec:
    hf_id: str
    hf_config: str | None
    split: str  # the split evaluated by default (the test split where its labels are public)
    kind: GraderKind
    files: tuple[str, ...]  # where to look inside a folder given as data.path (the shared data folder works)
    read_local: Callable[[Path], Rows]  # original local format -> hub rows
    convert: Converter
    number_rows_by: str | None = None  # ids number rows within each value of this column (MMLU: per subject)
    dev_split: str | None = None  # a split of solved examples for few-shot prompts (prompt.few_shot), if any...
    dev_files: tuple[str, ...] = ()  # ...and where it lies beside the evaluated files (like `files`)


DATASETS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec("openai/gsm8k", "main", "test", "number", ("test.jsonl", "gsm8k/test.jsonl"),
                         _jsonl_rows, _gsm8k),
    "math500": DatasetSpec("HuggingFaceH4/MATH-500", None, "test", "math", ("test.jsonl", "math500/test.jsonl"),
                           _jsonl_rows, _math500),
    "arc-challenge": DatasetSpec("allenai/ai2_arc", "ARC-Challenge", "test", "choice",
                                 ("ARC-Challenge-Test.jsonl", "arc/ARC-Challenge-Test.jsonl"),
                                 _nested_choices_jsonl, _labelled_choices),
    "arc-easy": DatasetSpec("allenai/ai2_arc", "ARC-Easy", "test", "choice",
                            ("ARC-Easy-Test.jsonl", "arc/ARC-Easy-Test.jsonl"), _nested_choices_jsonl,
                            _labelled_choices),
    # CommonsenseQA's test labels are hidden: its validation split is the one the literature evaluates.
    "commonsenseqa": DatasetSpec("tau/commonsense_qa", None, "validation", "choice",
                                 ("dev_rand_split.jsonl", "commonsenseqa/dev_rand_split.jsonl"),
                                 _nested_choices_jsonl, _labelled_choices),
    "mmlu": DatasetSpec("cais/mmlu", "all", "test", "choice", ("test", "mmlu/test", "."), _mmlu_csv, _mmlu,
                        number_rows_by="subject", dev_split="dev", dev_files=("dev", "mmlu/dev", "../dev")),
}

RECORD_FIELDS = ("id", "question", "answer", "choices")  # what data.fields may map (record field -> column)


def _grader_kinds() -> tuple[str, ...]:
    from rewardscope.grading.grader import grader_kinds  # the Grader's imports only when custom data need them

    return grader_kinds()


def custom_converter(columns: dict[str, str], kind: str | None, dataset: str = "jsonl") -> Converter:
    """Converter for custom rows: `columns` maps record fields to column names (unmapped fields: same name).

    `id` is optional (default `<dataset>-<row>`); `choices` (a list of option texts) is read for kind "choice",
    whose gold answer is a letter or a 0-based index. Columns not mapped are kept in the metadata.
    """
    unknown = sorted(set(columns) - set(RECORD_FIELDS))
    if unknown:
        raise RewardscopeError(f"data.fields: unknown record field {unknown[0]!r} (known: {', '.join(RECORD_FIELDS)})")
    kinds = _grader_kinds()
    if kind not in kinds:
        raise RewardscopeError(f"data.kind: {kind!r}: custom data need their grader, one of {', '.join(kinds)}")
    if "choices" in columns and kind != "choice":
        raise RewardscopeError(f"data.fields.choices: only used with data.kind=choice (got {kind!r})")
    col = {f: columns.get(f, f) for f in RECORD_FIELDS}
    normal_form = {"number": _number_answer, "math": _math_answer}.get(kind, _text_answer)

    def convert(row: dict, where: str, index: int) -> Problem:
        question = _field(row, col["question"], where, str)
        gold = _field(row, col["answer"], where)
        id = str(_field(row, col["id"], where)) if "id" in columns or col["id"] in row else f"{dataset}-{index}"
        used = {col["question"], col["answer"], col["id"]}
        if kind != "choice":
            answer, texts = normal_form(gold, where, col["answer"]), None
        else:
            texts = _choice_texts(_field(row, col["choices"], where), where, col["choices"])
            used.add(col["choices"])
            letters = CHOICE_LETTERS[: len(texts)]
            if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(texts):
                answer = letters[gold]
            elif isinstance(gold, str) and len(gold.strip()) == 1 and gold.strip() in letters:
                answer = gold.strip()
            else:
                raise RewardscopeError(f"{where}: field {col['answer']!r}: gold answer {gold!r} is neither a letter "
                                       f"{letters[0]}-{letters[-1]} nor a 0-based index into the {len(texts)} choices")
        metadata = {k: v for k, v in row.items() if k not in used}
        if texts:
            metadata["label"] = gold
        return Problem(id, question, answer, kind, texts, metadata)

    return convert


def to_problems(rows: Rows, convert: Converter, number_rows_by: str | None = None) -> list[Problem]:
    """Convert rows; row numbers (for ids without one) count within `number_rows_by`; ids must be unique."""
    problems, first_seen, counts = [], {}, Counter()
    for where, row in rows:
        group = _field(row, number_rows_by, where) if number_rows_by else None
        problem = convert(row, where, counts[group])
        _check_encodable(problem, where)
        counts[group] += 1
        if problem.id in first_seen:
            raise RewardscopeError(f"{where}: duplicate id {problem.id!r} (first at {first_seen[problem.id]})")
        first_seen[problem.id] = where
        problems.append(problem)
    return problems


def _check_encodable(problem: Problem, where: str) -> None:
    """A lone surrogate (JSON's "\\ud800" without its pair) reaches no tokenizer and no parquet file: the rollout
    would fail after sampling a whole shard. Refused here, before any work."""
    for name, text in (("question", problem.question), ("answer", problem.answer), *(
            (f"choices[{i}]", c) for i, c in enumerate(problem.choices or ()))):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise RewardscopeError(f"{where}: field {name!r}: character {e.object[e.start]!r} at position {e.start} "
                                   f"is a lone surrogate, which UTF-8 cannot encode") from None


# ----------------------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Dataset:
    """A dataset `load_problems` reads by name (`data.dataset`)."""

    load: Callable[[DataConfig], list[Problem]]  # its problems in their own order (load_problems shuffles, limits)
    kind: str | None  # the grader kind of every problem; None: the recipe's data.kind (custom data)
    uses: tuple[str, ...] = ()  # the SOURCE_SETTINGS it reads: any other one set in a recipe is refused...
    ignores: tuple[str, ...] = ()  # ...but these, which it leaves alone (the benchmarks: the synthetic task's keys)


# The DataConfig keys that say where problems come from; `limit` and `shuffle_seed` apply to every dataset.
SOURCE_SETTINGS = ("path", "hf_id", "hf_config", "split", "fields", "kind", "n_problems", "seed", "variant")

_REGISTRY: dict[str, Dataset] = {}
# Datasets registered by another package, on first use: name -> "module:function" (the function registers it).
DATASET_ENTRY_POINTS: dict[str, str] = {"organism": "rewardscope.organism:add_dataset"}


def register_dataset(name: str, load: Callable[[DataConfig], list[Problem]], kind: str | None, *,
                     uses: Iterable[str] = (), ignores: Iterable[str] = (), replace: bool = False) -> None:
    """Make `name` a dataset: `load_problems(DataConfig(dataset=name, ...))` returns `load(cfg)`'s problems,
    shuffled and limited as for any dataset.

    `kind` is the grader of its problems (one of rewardscope.grading.grader_kinds(), which a registered grader
    joins; every problem must have it). `uses`: which SOURCE_SETTINGS `load` reads (e.g. ("path",) or
    ("n_problems", "seed")); a recipe setting any other one is refused, naming it, rather than silently
    ignored (`ignores`: settings neither read nor refused). A name already registered is refused unless
    `replace`."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise RewardscopeError(f"register_dataset: name {name!r} must be a non-empty name without outer spaces")
    if name in _REGISTRY and not replace:
        raise RewardscopeError(f"register_dataset: dataset {name!r} is already registered (pass replace=True)")
    if not callable(load):
        raise RewardscopeError(f"register_dataset({name!r}): load must be callable, got {load!r}")
    uses, ignores = tuple(uses), tuple(ignores)
    if kind is None and "kind" not in uses:
        raise RewardscopeError(f"register_dataset({name!r}): kind None (per recipe) needs 'kind' in uses")
    unknown = [u for u in uses + ignores if u not in SOURCE_SETTINGS]
    if unknown:
        raise RewardscopeError(f"register_dataset({name!r}): {unknown[0]!r} is not one of {SOURCE_SETTINGS}")
    _REGISTRY[name] = Dataset(load, kind, uses, ignores)


def dataset_names() -> tuple[str, ...]:
    """Every dataset name: registered, or declared in DATASET_ENTRY_POINTS (not imported by this)."""
    return tuple(dict.fromkeys([*_REGISTRY, *DATASET_ENTRY_POINTS]))


def get_dataset(name: str) -> Dataset:
    """The registry's entry for `name`, importing its entry point on first use."""
    if name not in _REGISTRY and name in DATASET_ENTRY_POINTS:
        entry = DATASET_ENTRY_POINTS[name]
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function)()
        if name not in _REGISTRY:
            raise RewardscopeError(f"dataset entry point {entry} did not register dataset {name!r}")
    if name not in _REGISTRY:
        raise RewardscopeError(f"data.dataset: unknown dataset {name!r} (known: {', '.join(dataset_names())})")
    return _REGISTRY[name]


# ----------------------------------------------------------------------------------------------------------
# Loading


def load_problems(cfg: DataConfig, set_aside: int = 0) -> list[Problem]:
    """The problems `cfg` names, from a local file or folder (cfg.path), the hub or a registered dataset,
    shuffled and limited. `set_aside`: the first that many problems in file order are left out (before the
    shuffle and the limit): few-shot examples of a dataset without a dev split (`few_shot_examples`)."""
    if cfg.limit is not None and cfg.limit < 1:
        raise RewardscopeError(f"data.limit: {cfg.limit} (expected a positive number, or null for all)")
    problems = _all_problems(cfg)
    if set_aside >= len(problems):
        raise RewardscopeError(f"prompt.few_shot={set_aside}: dataset {cfg.dataset!r} has only {len(problems)} "
                               f"problems, and its first {set_aside} would be set aside as examples")
    problems = problems[set_aside:]
    if cfg.shuffle_seed is not None:
        random.Random(cfg.shuffle_seed).shuffle(problems)
    return problems[: cfg.limit]


def _all_problems(cfg: DataConfig) -> list[Problem]:
    """Every problem of the dataset, in its own order, each checked to be a Problem of the dataset's kind."""
    dataset = get_dataset(cfg.dataset)
    _check_settings(cfg, dataset)
    problems = list(dataset.load(cfg))
    if not problems:
        raise RewardscopeError(f"data.dataset={cfg.dataset!r}: no problems")
    kind = dataset.kind if dataset.kind is not None else cfg.kind
    if dataset.kind is not None and kind not in _grader_kinds():
        raise RewardscopeError(f"dataset {cfg.dataset!r}: its problems' kind {kind!r} has no grader (known: "
                               f"{', '.join(_grader_kinds())}; rewardscope.grading.register_grader adds one)")
    for i, problem in enumerate(problems):
        if not isinstance(problem, Problem) or problem.kind != kind:
            got = f"kind {problem.kind!r}" if isinstance(problem, Problem) else type(problem).__name__
            raise RewardscopeError(f"dataset {cfg.dataset!r}: problem {i} is not a Problem of kind {kind!r} "
                                   f"(got {got})")
    return problems


def load_task(cfg: DataConfig, few_shot: int = 0) -> tuple[list[Problem], dict[str, list[Problem]]]:
    """The problems to evaluate and, for each problem id, its `few_shot` solved examples (prompt.few_shot).

    Examples come from the dataset's dev split where it has one (MMLU's dev/: 5 per subject, the same subject's
    for each problem, in file order); otherwise the dataset's first `few_shot` problems in file order are the
    examples of every problem and are never evaluated. Example ids are prefixed "example:"."""
    if few_shot == 0:
        return load_problems(cfg), {}
    spec = DATASETS.get(cfg.dataset)
    if spec is None or spec.dev_split is None:
        examples = [replace(p, id=f"example:{p.id}") for p in _all_problems(cfg)[:few_shot]]
        problems = load_problems(cfg, set_aside=few_shot)
        return problems, {p.id: examples for p in problems}
    problems = load_problems(cfg)
    dev = _dev_problems(cfg.dataset, spec, cfg)
    by_group: dict[str, list[Problem]] = {}
    for p in dev:
        by_group.setdefault(p.metadata.get(spec.number_rows_by, ""), []).append(replace(p, id=f"example:{p.id}"))
    chosen = {}
    for p in problems:
        group = p.metadata.get(spec.number_rows_by, "")
        pool = by_group.get(group, [])
        if len(pool) < few_shot:
            raise RewardscopeError(f"prompt.few_shot={few_shot}: the {spec.dev_split} split of {cfg.dataset!r} has "
                                   f"{len(pool)} examples{f' for {group!r}' if group else ''}; ask for fewer")
        chosen[p.id] = pool[:few_shot]
    return problems, chosen


def _dev_problems(name: str, spec: DatasetSpec, cfg: DataConfig) -> list[Problem]:
    if cfg.path is None:
        return to_problems(_hub_rows(name, spec, replace(cfg, split=spec.dev_split)), spec.convert, spec.number_rows_by)
    evaluated = _locate(spec, Path(cfg.path))
    for base in (Path(cfg.path), evaluated):
        for relative in spec.dev_files:
            folder = base / relative
            if folder.exists() and folder.resolve() != evaluated.resolve():
                return _non_empty(to_problems(spec.read_local(folder), spec.convert, spec.number_rows_by), folder)
    raise RewardscopeError(f"prompt.few_shot: no {spec.dev_split} split of {name!r} beside {evaluated} (looked for "
                           f"{' or '.join(spec.dev_files)}); few-shot examples come from it")


def _check_settings(cfg: DataConfig, dataset: Dataset) -> None:
    """A source setting the dataset does not read would be silently ignored: a mistake worth stopping for."""
    reads = f"only {', '.join('data.' + u for u in dataset.uses)}" if dataset.uses else "none of the source settings"
    for name in SOURCE_SETTINGS:
        if name not in dataset.uses + dataset.ignores:
            why = (f"its problems are graded as {dataset.kind!r}; a different grader is grade.kind" if name == "kind"
                   else f"it reads {reads}")
            _reject_unused(cfg, (name,), why)


def _custom(cfg: DataConfig) -> list[Problem]:
    if cfg.path is None:
        raise RewardscopeError("data.path: required for dataset 'jsonl' (a JSONL or parquet file)")
    path = _existing(Path(cfg.path))
    if path.is_dir():
        raise RewardscopeError(f"data.path: {path} is a folder; dataset 'jsonl' reads one file")
    rows = _parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)
    return _non_empty(to_problems(rows, custom_converter(cfg.fields, cfg.kind)), path)


def _benchmark(name: str, cfg: DataConfig) -> list[Problem]:
    spec = DATASETS[name]
    if cfg.path is None:
        rows, source = _hub_rows(name, spec, cfg), cfg.hf_id or spec.hf_id
    else:
        _reject_unused(cfg, ("hf_id", "hf_config", "split"), "data.path is given (a local file is one split)")
        source = _locate(spec, Path(cfg.path))
        rows = _parquet_rows(source) if source.suffix == ".parquet" else spec.read_local(source)
    return _non_empty(to_problems(rows, spec.convert, spec.number_rows_by), source)


def _non_empty(problems: list[Problem], source) -> list[Problem]:
    if not problems:
        raise RewardscopeError(f"{source}: no problems")
    return problems


def _reject_unused(cfg: DataConfig, names: tuple[str, ...], why: str) -> None:
    # A setting that would be silently ignored is a mistake worth stopping for.
    defaults = DataConfig()
    for name in names:
        if getattr(cfg, name) != getattr(defaults, name):
            raise RewardscopeError(f"data.{name}={getattr(cfg, name)!r} is not used for dataset {cfg.dataset!r}: "
                                   f"{why}; remove it")


def _existing(path: Path) -> Path:
    if not path.exists():
        raise RewardscopeError(f"data.path: {path} not found")
    return path


def _locate(spec: DatasetSpec, path: Path) -> Path:
    if _existing(path).is_file():
        return path
    for relative in spec.files:
        if (path / relative).exists():
            return path / relative
    raise RewardscopeError(f"data.path: no {' or '.join(spec.files)} in folder {path}")


def _hub_rows(name: str, spec: DatasetSpec, cfg: DataConfig) -> Rows:
    hf_id, split = cfg.hf_id or spec.hf_id, cfg.split or spec.split
    hf_config = cfg.hf_config or spec.hf_config
    local = f"or pass a local file in the original format: --data.path=/path/to/{spec.files[0]} (docs/datasets.md)"
    try:
        import datasets
    except ImportError:
        raise RewardscopeError(f"dataset {name!r} without data.path is read from the Hugging Face hub ({hf_id}), "
                               f"which needs the `datasets` package: pip install 'rewardscope[hub]'; {local}") from None
    try:
        rows = datasets.load_dataset(hf_id, hf_config, split=split)
    except Exception as e:  # offline, unknown id/config/split, gated: each is fixed the same two ways
        raise RewardscopeError(f"cannot load {hf_id} (config {hf_config}, split {split}) from the Hugging Face "
                               f"hub: {type(e).__name__}: {e}; check the id and the connection, {local}") from e
    return ((f"{hf_id}[{split}] row {i}", row) for i, row in enumerate(rows))


# The built-in datasets: registered as any other. Benchmarks ignore the synthetic task's keys (n_problems, seed,
# variant) and refuse data.fields / data.kind: a different grader for them is grade.kind.
_SYNTHETIC = ("n_problems", "seed", "variant")
for _name, _spec in DATASETS.items():
    register_dataset(_name, partial(_benchmark, _name), _spec.kind, uses=("path", "hf_id", "hf_config", "split"),
                     ignores=_SYNTHETIC)
register_dataset("jsonl", _custom, None, uses=("path", "fields", "kind"), ignores=_SYNTHETIC)


_FINGERPRINTS: dict[tuple, str] = {}  # (path, every file's name, size and mtime) -> sha256: hash each file once


def graded_kind(cfg: DataConfig, override: str | None = None) -> str | None:
    """The kind the rows of `cfg` are graded as: `override` (grade.kind), else the dataset's, else data.kind
    (None: each row names its own)."""
    return override or get_dataset(cfg.dataset).kind or cfg.kind


def data_fingerprint(cfg: DataConfig) -> str | None:
    """sha256 over the content of `data.path` (a file, or every file under a folder), so that an artifact made
    from the data is keyed by what the data says, not only by where it lies; None without a local path (the
    synthetic organism task; a hub dataset, keyed by its id and revision). A missing path is left to the loader's
    error (None here)."""
    if cfg.path is None:
        return None
    root = Path(cfg.path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())  # rglob: [] if absent
    if not files:
        return None
    stats = tuple((str(p), st.st_size, st.st_mtime_ns) for p in files for st in (p.stat(),))
    if (str(root), stats) not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for p in files:
            if p != root:  # a folder's files by their place in it; a file by its content alone
                digest.update(p.relative_to(root).as_posix().encode() + b"\0")
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
        _FINGERPRINTS[(str(root), stats)] = digest.hexdigest()
    return _FINGERPRINTS[(str(root), stats)]
