"""Report section for the ablate stage: accuracy per arm with 95% CIs (the paper-form table and a bar chart),
each arm's paired difference to the unablated model and to the reference arm, and the positive control.

Reads RUN_DIR/ablate/results.json (rewardscope.ablate.stage)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rewardscope.report.core import Figure, Section, Table, ci_text, f3, load_json, p_text, pct, signed, table_html
from rewardscope.report.style import COLORS, WIDTH_IN, new_figure, styled, to_png

ORDER = ("value", "random", "magnitude_matched", "magnitude", "terminal", "next_token", "wanda", "direction",
         "random_direction", "control", "random_control")
LABELS = {"value": "value neurons", "random": "uniform random", "magnitude_matched": "magnitude-matched random",
          "magnitude": "top magnitude", "terminal": "terminal-reward probe", "next_token": "next-token probe",
          "wanda": "Wanda-style", "direction": "reward direction", "random_direction": "random direction",
          "control": "control-token direction", "random_control": "random direction (control)"}


def _cells(results: dict):
    for layer, slots in results["table"].items():
        for slot, cells in slots.items():
            for arm in ORDER:
                if arm in cells:
                    yield layer, slot, arm, cells[arm]


def _chart(results: dict) -> Figure:
    cells = list(_cells(results))
    base = results["summary"]["unablated_accuracy"]
    with styled():
        fig = new_figure(WIDTH_IN, 1.2 + 0.32 * (len(cells) + 1))
        ax = fig.subplots()
        y = np.arange(len(cells) + 1)[::-1]
        values = [base["value"]] + [c["accuracy"]["value"] for *_, c in cells]
        lows = [base["ci95"][0]] + [c["accuracy"]["ci95"][0] for *_, c in cells]
        highs = [base["ci95"][1]] + [c["accuracy"]["ci95"][1] for *_, c in cells]
        colors = [COLORS["chance"]] + [COLORS["value"] if arm in ("value", "direction", "control") else COLORS["random"]
                                      for _, _, arm, _ in cells]
        ax.barh(y, values, color=colors, height=0.7)
        # clipped at 0: a percentile interval can miss its point estimate by float rounding
        errors = [np.maximum(np.subtract(values, lows), 0), np.maximum(np.subtract(highs, values), 0)]
        ax.errorbar(values, y, xerr=errors, fmt="none",
                    ecolor="black", capsize=3, linewidth=1)
        labels = ["unablated"] + [f"L{layer} {slot if slot[0].isdigit() else ''} {LABELS[arm]}".replace("  ", " ")
                                  for layer, slot, arm, _ in cells]
        ax.set_yticks(y, labels)
        ax.set_ylim(-0.7, len(cells) + 0.7)
        ax.axvline(base["value"], color=COLORS["chance"], linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("accuracy (mean over problems of the share of correct samples)")
        ax.grid(axis="y", visible=False)
        png = to_png(fig)
    n = results["summary"]["problems"]
    caption = (f"Accuracy with each arm applied during generation, on the probe's {n} held-out problems, every arm "
               f"with the same samples' seed. Orange: the arm under test (value neurons, the reward direction, the "
               f"control token's direction); grey: controls (random draws averaged per problem). Bars: 95% "
               f"percentile-bootstrap CI over problems; dashed: the unablated model.")
    return Figure("accuracy", caption, png, alt="horizontal bar chart of accuracy per ablation arm")


def section(run_dir: Path) -> Section | None:
    results = load_json(Path(run_dir) / "ablate" / "results.json")
    if not results:
        return None
    summary = results["summary"]
    base = summary["unablated_accuracy"]
    sec = Section("Ablation during generation")
    sec.paragraphs.append(
        f"Unablated accuracy {f3(base['value'])} {ci_text(base['ci95'])} on {summary['problems']} held-out "
        f"problems. {summary['significant_after_holm']} of {summary['family_size']} paired tests survive a "
        f"Holm-Bonferroni correction over the whole table (sign-flip permutation tests, paired by problem).")
    rows = []
    for layer, slot, arm, c in _cells(results):
        vs_base = c["minus_unablated"]
        ref = next((c[k] for k in c if k.endswith("_minus_this")), None)
        rows.append([layer, slot, LABELS[arm], f"{f3(c['accuracy']['value'])} {ci_text(c['accuracy']['ci95'])}",
                     f"{signed(vs_base['delta'])} {ci_text(vs_base['ci95'], sign=True)}", p_text(vs_base["p_value"]),
                     "" if ref is None else f"{signed(ref['delta'])} {ci_text(ref['ci95'], sign=True)}",
                     "" if ref is None else p_text(ref["p_value"]),
                     "yes" if vs_base.get("holm_significant") else "no",
                     f"{c['mean_tokens']:.0f}", pct(c["eos_rate"]), pct(c["no_answer_rate"])])
    sec.tables.append(Table(
        "Each arm's accuracy [95% CI], its paired difference to the unablated model, and the reference arm "
        "(value neurons; the reward direction; the control token) minus it, with p-values; Holm: the difference to "
        "the unablated model survives the correction. Length, EOS rate and answerless share tell a broken output "
        "apart from lost value information.",
        table_html(["layer", "fraction", "arm", "accuracy", "minus unablated", "p", "reference minus arm", "p",
                    "Holm", "tokens", "EOS", "no answer"], rows, numeric_from=3), lead=True))
    sec.figures.append(_chart(results))
    control = summary.get("positive_control")
    if control:
        works = control["control_token_rate"] < 0.5 * control["unablated_token_rate"] and \
            (control["random_directions_token_rate"] or 0) > 0.5 * control["unablated_token_rate"]
        sec.paragraphs.append(
            f"Positive control: responses with the control token {pct(control['unablated_token_rate'])} unablated, "
            f"{pct(control['control_token_rate'])} with its unembedding direction projected out of the last block, "
            f"{pct(control['random_directions_token_rate'])} with random directions. "
            + ("The machinery finds the known causal effect." if works else
               "The control did NOT behave as expected: treat every other row of this table with suspicion."))
    else:
        sec.notes.append("No positive control was run (ablate.control_token unset): a null result here cannot be "
                         "told apart from an intervention that does nothing.")
    return sec
