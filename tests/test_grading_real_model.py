"""The grader's extractors on a real small model's responses, labelled by reading them (no model at test time).

tests/data/grading/smollm2_choice_responses.jsonl and smollm2_gsm8k_responses.jsonl hold SmolLM2-135M-Instruct's
sampled responses (scripts/smollm2_responses.py; temperatures 0.7 and 1.0, top-p 0.95, 200 new tokens at most)
with the answer a person reads in each (`label`; null: none can be told). Every row was labelled before any
extractor was run on any of them; rows of split "heldout" measure the extractors, "tuning" rows may be used to
change them. The labelling rules are in tests/data/grading/README.md.

Nine held-out sets of choice responses, each labelled and committed before any extractor ran on it, and each
measured cleanly once (or for several extractor versions at once) before its misses were read: the first (84
held-out rows of smollm2_choice_responses.jsonl), the fresh set (smollm2_choice_responses_fresh.jsonl), and the
third to ninth (_third.jsonl ... _ninth.jsonl; tests/data/grading/README.md says how each was drawn; the ninth at
temperature 0.7, the others at 1.0 but for 64 rows of the first). Every set
is read by two readers blind to each other and to every extractor, their disagreements adjudicated (`readings`,
`adjudication`; `label` is the agreed or adjudicated label): how often two careful readers agree by the same
rules is measured beside the extractor. The letter extractor was last changed (choice rules version 4) with the
first five sets' misses in view and frozen before the sixth was read, so the sixth to ninth sets' figures are the
clean ones for the extractor as it is; the others are floors against regressions.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rewardscope.grading.audit import choice_agreement, cohen_kappa, read_cases
from rewardscope.grading.answers import choice_with_rule, extract_number, same_number, whole_number
from rewardscope.stats import wilson_interval

DATA = Path(__file__).parent / "data" / "grading"
CHOICE_FILE, GSM8K_FILE = DATA / "smollm2_choice_responses.jsonl", DATA / "smollm2_gsm8k_responses.jsonl"
FRESH_FILE = DATA / "smollm2_choice_responses_fresh.jsonl"
THIRD_FILE, FOURTH_FILE = DATA / "smollm2_choice_responses_third.jsonl", DATA / "smollm2_choice_responses_fourth.jsonl"
FIFTH_FILE, SIXTH_FILE = DATA / "smollm2_choice_responses_fifth.jsonl", DATA / "smollm2_choice_responses_sixth.jsonl"
SEVENTH_FILE = DATA / "smollm2_choice_responses_seventh.jsonl"
EIGHTH_FILE, NINTH_FILE = DATA / "smollm2_choice_responses_eighth.jsonl", DATA / "smollm2_choice_responses_ninth.jsonl"
LATER = (FRESH_FILE, THIRD_FILE, FOURTH_FILE, FIFTH_FILE, SIXTH_FILE, SEVENTH_FILE, EIGHTH_FILE, NINTH_FILE)  # held out
LATER_IDS = ["fresh", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"]
READ_TWICE = (CHOICE_FILE, *LATER)  # two blind readings, disagreements adjudicated
CLEAN = (SIXTH_FILE, SEVENTH_FILE, EIGHTH_FILE, NINTH_FILE)  # read after the extractor's last change
FIELDS = ("id", "dataset", "prompt", "response", "choices", "gold", "temperature", "finish_reason", "label", "split",
          "note")
CHOICE_DATASETS, TEMPERATURES, SPLITS = {"arc-easy", "commonsenseqa", "mmlu"}, {0.7, 1.0}, {"heldout", "tuning"}
TARGET_CHOICE = 0.94  # held-out agreement the project asks of the letter extractor on real responses
# First measurements (2026-12-01, the extractor as of commit 179392d): choice held-out 63/84; extract_number
# held-out 3/42, and every row with a number label read right. Clean figures of the letter extractor against the
# first reading: first 63/84, fresh 78/96, third 71/96, fourth 86/96; against the agreed or adjudicated labels
# (2026-12-02): fourth 83/96 and fifth 78/96 (choice rules version 3), sixth 83/96, seventh 71/96 and eighth
# 81/96 (version 4; 84/96, 67/96 and 81/96 with version 3), ninth (temperature 0.7) 84/96 (version 4). FLOORS
# holds each set's figure with the extractor as it is (not clean but for CLEAN); READERS how often the two
# readings agree.
FIRST_CHOICE_HELDOUT, FIRST_NUMBER_HELDOUT = (63, 84), (3, 42)
CHOICE_HELDOUT_FLOOR, FRESH_FLOOR, TUNING_FLOOR = (80, 84), (86, 96), (42, 44)
FLOORS = {FRESH_FILE: FRESH_FLOOR, THIRD_FILE: (78, 96), FOURTH_FILE: (85, 96), FIFTH_FILE: (80, 96),
          SIXTH_FILE: (83, 96), SEVENTH_FILE: (71, 96), EIGHTH_FILE: (81, 96), NINTH_FILE: (84, 96)}
# (extractor's reward == label's reward, the two readings' rewards agree, rows), measured 2026-12-02 (version 4)
REWARDS = {CHOICE_FILE: (127, 127, 128), FRESH_FILE: (92, 91, 96), THIRD_FILE: (93, 95, 96), FOURTH_FILE: (91, 92, 96),
           FIFTH_FILE: (94, 96, 96), SIXTH_FILE: (92, 96, 96), SEVENTH_FILE: (89, 95, 96), EIGHTH_FILE: (94, 95, 96),
           NINTH_FILE: (93, 95, 96)}
READERS = {CHOICE_FILE: (124, 128), FRESH_FILE: (83, 96), THIRD_FILE: (80, 96), FOURTH_FILE: (88, 96),
           FIFTH_FILE: (90, 96), SIXTH_FILE: (91, 96), SEVENTH_FILE: (89, 96), EIGHTH_FILE: (95, 96),
           NINTH_FILE: (94, 96)}


def _figure(name: str, agree: int, n: int) -> str:
    low, high = wilson_interval(agree / n, n)
    return f"{name}: {agree}/{n} = {agree / n:.1%} [95% Wilson {low:.3f}, {high:.3f}]"


def _rows(path: Path) -> list[dict]:
    return read_cases(path, FIELDS)


def _extracted(rows: list[dict]) -> list[str | None]:
    """The letter extractor's reading of each row."""
    return [choice_with_rule(r["response"], tuple(r["choices"]))[0] for r in rows]


# ---- the files ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, datasets", [(CHOICE_FILE, CHOICE_DATASETS), (GSM8K_FILE, {"gsm8k"})])
def test_files_are_well_formed(path, datasets):
    rows = _rows(path)
    with open(path, encoding="utf-8") as f:
        assert sum(1 for line in f if line.strip()) == len(rows) + 1  # one header line, then the cases
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) >= set(FIELDS), r["id"]
        assert r["dataset"] in datasets and r["temperature"] in TEMPERATURES and r["split"] in SPLITS, r["id"]
        assert r["finish_reason"] in ("eos", "length"), r["id"]
        assert r["id"].endswith(f"@t{r['temperature']}"), r["id"]
        assert isinstance(r["prompt"], str) and r["prompt"].endswith("<|im_start|>assistant\n"), r["id"]
        assert isinstance(r["response"], str), r["id"]
        if r["dataset"] == "gsm8k":
            assert r["choices"] is None and whole_number(r["gold"]) == r["gold"], r["id"]
            assert r["label"] is None or whole_number(r["label"]) == r["label"], r["id"]
        else:
            letters = "ABCDEFGHIJ"[: len(r["choices"])]
            assert 2 <= len(r["choices"]) <= 10 and all(isinstance(c, str) for c in r["choices"]), r["id"]
            assert r["gold"] in letters and (r["label"] is None or r["label"] in letters), r["id"]
    # Every dataset and temperature is in both splits, and about a third of the rows are tuning rows.
    groups = Counter((r["dataset"], r["temperature"], r["split"]) for r in rows)
    assert all(groups[(d, t, s)] > 0 for d in datasets for t in TEMPERATURES for s in SPLITS), groups
    assert 0.25 <= sum(r["split"] == "tuning" for r in rows) / len(rows) <= 0.40
    header = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert "header" in header


def test_enough_labelled_responses():
    choice, gsm8k = _rows(CHOICE_FILE), _rows(GSM8K_FILE)
    assert len(choice) >= 100 and sum(r["split"] == "heldout" for r in choice) >= 60
    assert len(gsm8k) >= 50


# ---- multiple choice ----------------------------------------------------------------------------------------


def _choice_report(split: str, path: Path = CHOICE_FILE):
    """choice_agreement on one split, printed with its interval, per dataset and temperature, and each miss."""
    cases = [r for r in _rows(path) if r["split"] == split]
    result = choice_agreement(cases)
    missed = {c["id"] for c, _ in result.misses}
    print()
    print(_figure(f"choice {split} ({path.name})", result.agree, result.n))
    for dataset in sorted(CHOICE_DATASETS):
        for t in sorted(TEMPERATURES):
            picked = [c for c in cases if c["dataset"] == dataset and c["temperature"] == t]
            if picked:
                print(f"  {dataset:14} t={t}: {sum(c['id'] not in missed for c in picked)}/{len(picked)}")
    labelled = [c for c in cases if c["label"] is not None]
    print("  " + _figure("responses with a label", sum(c["id"] not in missed for c in labelled), len(labelled)))
    nulls = [(c, letter) for c, (letter, _) in result.misses if c["label"] is None]
    print(f"  null labels read as a letter: {len(nulls)}/{len(cases) - len(labelled)}, "
          f"of which the gold letter (a reward of 1): {sum(letter == c['gold'] for c, letter in nulls)}")
    for case, (letter, rule) in result.misses:
        print(f"  disagrees: {case['id']} label {case['label']} extracted {letter} ({rule}) -- {case['note']}")
    return result


@pytest.mark.xfail(strict=True, reason="the sixth to ninth held-out sets, the clean ones for the extractor as it is, "
                   "against their agreed or adjudicated labels: 83/96 = 86.5% [95% Wilson 0.782, 0.919], 71/96 = 74.0% "
                   "[0.644, 0.817], 81/96 = 84.4% [0.758, 0.903] at temperature 1.0 (pooled 235/288 = 81.6%) and "
                   "84/96 = 87.5% [0.794, 0.927] at 0.7, where two blind readers agree on 91/96, 89/96, 95/96 and "
                   "94/96: below the 0.94 asked for")
@pytest.mark.parametrize("path", CLEAN, ids=["sixth", "seventh", "eighth", "ninth"])
def test_choice_heldout_agreement(path):
    result = _choice_report("heldout", path)
    assert result.n >= 60 and result.rate >= TARGET_CHOICE


def test_two_blind_readings_and_the_extractor_are_reported():
    """How often two readers agree by the same rules (the most a reading can be trusted), and the extractor beside
    them: against each reading, against the agreed or adjudicated label, and on the rows both readers agree on."""
    print()
    readers = [0, 0]
    for path in READ_TWICE:
        rows = _rows(path)
        first, second = ([r["readings"][k]["label"] for r in rows] for k in (0, 1))
        read = _extracted(rows)
        agreed = [i for i in range(len(rows)) if first[i] == second[i]]
        n, final = len(rows), [r["label"] for r in rows]
        kappa = cohen_kappa(first, second)
        print(_figure(f"{path.name}: the two readings agree", len(agreed), n), f"(Cohen's kappa {kappa:.3f})")
        print("  extractor against the first reading", sum(a == b for a, b in zip(read, first)), "the second",
              sum(a == b for a, b in zip(read, second)), "the label", sum(a == b for a, b in zip(read, final)),
              "the rows both readers agree on", f"{sum(read[i] == final[i] for i in agreed)}/{len(agreed)}")
        readers[0] += len(agreed)
        readers[1] += n
        assert (len(agreed), n) == READERS[path]
    print(_figure("the two readings agree, all sets pooled", *readers))


def test_the_rewards_the_extractor_gives_are_reported():
    """What a run's rewards see: the reward (letter == gold) from the extractor against the reward from the label,
    beside the two readings' rewards against each other. A letter read where a person reads none, or the reverse,
    changes no reward unless one of the two is the gold letter, so this agrees more often than the letters do."""
    print()
    pooled = [0, 0]
    for path in READ_TWICE:
        rows = _rows(path)
        extractor = sum((letter == r["gold"]) == (r["label"] == r["gold"]) for r, letter in zip(rows, _extracted(rows)))
        readers = sum((r["readings"][0]["label"] == r["gold"]) == (r["readings"][1]["label"] == r["gold"])
                      for r in rows)
        print(_figure(f"{path.name}: reward from the extractor == reward from the label", extractor, len(rows)),
              f"(the two readings' rewards agree on {readers}/{len(rows)})")
        if path in CLEAN:
            pooled[0] += extractor
            pooled[1] += len(rows)
        assert extractor >= REWARDS[path][0] and (readers, len(rows)) == REWARDS[path][1:]
    print(_figure("clean sets pooled: reward from the extractor == reward from the label", *pooled))


@pytest.mark.parametrize("path", [CHOICE_FILE, FRESH_FILE, THIRD_FILE, FOURTH_FILE, FIFTH_FILE],
                         ids=["first", "fresh", "third", "fourth", "fifth"])
def test_choice_seen_heldout_sets_are_reported(path):
    """Not clean: the letter extractor was changed with these sets' misses in view."""
    result = _choice_report("heldout", path)
    floor = {CHOICE_FILE: CHOICE_HELDOUT_FLOOR, **FLOORS}[path]
    assert result.n == floor[1] and result.agree >= floor[0]


LATER_SETS = dict(argnames="path", argvalues=LATER, ids=LATER_IDS)


@pytest.mark.parametrize(**LATER_SETS)
def test_later_heldout_files_are_well_formed(path):
    rows = _rows(path)
    assert len(rows) == FLOORS[path][1] and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["split"] == "heldout" and r["dataset"] in CHOICE_DATASETS, r["id"]
        letters = "ABCDEFGHIJ"[: len(r["choices"])]
        assert r["gold"] in letters and (r["label"] is None or r["label"] in letters), r["id"]
        assert r["finish_reason"] in ("eos", "length") and r["prompt"].endswith("<|im_start|>assistant\n"), r["id"]


@pytest.mark.parametrize("path", READ_TWICE, ids=["first", *LATER_IDS])
def test_the_label_is_the_readings_where_they_agree_else_the_adjudicators(path):
    for r in _rows(path):
        letters = "ABCDEFGHIJ"[: len(r["choices"])]
        first, second = (reading["label"] for reading in r["readings"])
        assert len(r["readings"]) == 2 and {first, second} <= {None, *letters}, r["id"]
        decided = r["adjudication"]
        assert (decided is None) == (first == second), r["id"]
        assert r["label"] == (first if decided is None else decided["label"]), r["id"]


def test_the_heldout_sets_share_no_response():
    sets = (CHOICE_FILE, *LATER)
    ids = [r["id"] for path in sets for r in _rows(path)]
    assert len(ids) == len(set(ids))
    problems = {path: {r["id"].split("#")[0] for r in _rows(path)} for path in sets}
    # The fourth and later were drawn from other problems than the survey's and each other's.
    assert not problems[FOURTH_FILE] & (problems[FRESH_FILE] | problems[THIRD_FILE])
    for later in LATER[LATER.index(FIFTH_FILE):]:
        assert not problems[later] & set().union(*(problems[p] for p in sets if p != later))


@pytest.mark.parametrize(**LATER_SETS)
def test_choice_later_heldout_sets_not_below_their_measurements(path):
    result = choice_agreement(_rows(path))
    assert result.n == FLOORS[path][1] and result.agree >= FLOORS[path][0]


def test_choice_heldout_not_below_first_measurement():
    result = choice_agreement([r for r in _rows(CHOICE_FILE) if r["split"] == "heldout"])
    assert result.n == FIRST_CHOICE_HELDOUT[1] and result.agree >= FIRST_CHOICE_HELDOUT[0]
    assert result.n == CHOICE_HELDOUT_FLOOR[1] and result.agree >= CHOICE_HELDOUT_FLOOR[0]


def test_choice_tuning_agreement_is_reported():
    result = _choice_report("tuning")
    assert result.n == TUNING_FLOOR[1] and result.agree >= TUNING_FLOOR[0]  # 30/44 at the first measurement


def test_choice_agreement_without_the_fallback_is_reported():
    """The same agreement with the last-resort fallback rule off (`choice_fallback=False`)."""
    print()
    for split in ("heldout", "tuning"):
        cases = [r for r in _rows(CHOICE_FILE) if r["split"] == split]
        on, off = choice_agreement(cases), choice_agreement(cases, choice_fallback=False)
        print(_figure(f"choice {split} without the fallback", off.agree, off.n), f"(with it: {on})")
        assert off.n == on.n


# ---- GSM8K --------------------------------------------------------------------------------------------------


def _number_agrees(label: str | None, extracted: str | None) -> bool:
    if label is None or extracted is None:
        return label is None and extracted is None
    return same_number(label, extracted)


def test_gsm8k_extract_number_agreement():
    """extract_number against the labels. By design it falls back to the last number of the text, so a response
    cut off before any answer (most of this model's) gets a number where a person reads none."""
    rows = _rows(GSM8K_FILE)
    print()
    counts = {}
    for split in ("heldout", "tuning", None):
        cases = [r for r in rows if split is None or r["split"] == split]
        extracted = [extract_number(r["response"]) for r in cases]
        agree = [_number_agrees(r["label"], e) for r, e in zip(cases, extracted)]
        counts[split] = (sum(agree), len(agree))
        print(_figure(f"gsm8k extract_number {split or 'all'}", sum(agree), len(agree)))
        labelled = [a for r, a in zip(cases, agree) if r["label"] is not None]
        nulls = [(r, e) for r, e in zip(cases, extracted) if r["label"] is None]
        print(f"  rows with a number label: {sum(labelled)}/{len(labelled)}; null labels read as a number: "
              f"{sum(e is not None for _, e in nulls)}/{len(nulls)}, of which the gold number: "
              f"{sum(e is not None and same_number(e, r['gold']) for r, e in nulls)}")
        if split is None:
            for r, e, ok in zip(cases, extracted, agree):
                if not ok:
                    print(f"  disagrees: {r['id']} ({r['split']}, {r['finish_reason']}) label {r['label']} "
                          f"extracted {e} -- {r['note']}")
    # Every response a person reads a number in is read right; the rest of the floor is the last-number rule.
    assert all(_number_agrees(r["label"], extract_number(r["response"])) for r in rows if r["label"] is not None)
    assert counts["heldout"][1] == FIRST_NUMBER_HELDOUT[1] and counts["heldout"][0] >= FIRST_NUMBER_HELDOUT[0]
