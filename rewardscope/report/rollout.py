"""Report section for the rollout stage: accuracy, how many problems have mixed outcomes, why rollouts ended."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rewardscope.report.core import Figure, Section, Table, ci_text, f3, load_json, pct, table_html
from rewardscope.report.style import COLORS, new_figure, styled, to_png


def rollout_summary(run_dir: Path) -> dict | None:
    """rollout/rollouts/summary.json, else the `rollout` entry of results.json, else None."""
    run_dir = Path(run_dir)
    summary = load_json(run_dir / "rollout" / "rollouts" / "summary.json")
    if summary is None:
        summary = (load_json(run_dir / "results.json") or {}).get("rollout")
    return summary if isinstance(summary, dict) and "accuracy" in summary else None


def per_problem_correct(run_dir: Path) -> tuple[np.ndarray, int] | None:
    """(correct rollouts of each problem, rollouts per problem) from rollouts.parquet, or None."""
    path = Path(run_dir) / "rollout" / "rollouts.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["problem_index", "reward"])
    problems = table.column("problem_index").to_numpy()
    reward = table.column("reward").to_numpy()
    _, inverse, counts = np.unique(problems, return_inverse=True, return_counts=True)
    if len(counts) == 0 or counts.min() != counts.max():
        return None  # unequal rollouts per problem: the histogram would mix denominators
    correct = np.bincount(inverse, weights=reward > 0.5).astype(int)
    return correct, int(counts[0])


def _histogram(correct: np.ndarray, n: int, accuracy: float, ci) -> Figure:
    counts = np.bincount(correct, minlength=n + 1)
    with styled():
        fig = new_figure(6.5, 3.4)
        ax = fig.subplots()
        colors = [COLORS["random"] if k in (0, n) else COLORS["value"] for k in range(n + 1)]
        bars = ax.bar(np.arange(n + 1), counts, color=colors, width=0.7)
        for bar, c in zip(bars, counts):
            ax.annotate(str(c), (bar.get_x() + bar.get_width() / 2, c), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=10)
        ax.set_xticks(np.arange(n + 1))
        ax.set_xlabel(f"correct rollouts out of the problem's {n}")
        ax.set_ylabel("problems")
        ax.set_ylim(0, counts.max() * 1.15 + 1)
        ax.grid(axis="x", visible=False)
        ax.set_title(f"Accuracy {f3(accuracy)} {ci_text(ci)} (Wilson)", loc="left")
        png = to_png(fig)
    mixed = int(((correct > 0) & (correct < n)).sum())
    caption = (f"Problems by number of correct rollouts, {len(correct)} problems x {n} rollouts = "
               f"{len(correct) * n} rollouts. Orange: the {mixed} problems with both right and wrong rollouts "
               "(they carry the contrast a value probe can learn beyond problem difficulty); grey: all wrong or "
               "all right. Descriptive, no control. Accuracy CI: 95% Wilson score interval over problems.")
    return Figure("outcomes", caption, png, alt="histogram of correct rollouts per problem")


def section(run_dir: Path) -> Section | None:
    run_dir = Path(run_dir)
    s = rollout_summary(run_dir)
    if s is None:
        return None
    n_problems, n_rollouts = s.get("n_problems"), s.get("n_rollouts")
    per = n_rollouts // n_problems if n_problems and n_rollouts and n_rollouts % n_problems == 0 else None
    sec = Section("Rollouts")
    sizes = f"{n_problems} problems x {per} rollouts = {n_rollouts} rollouts" if per else \
        f"{n_problems} problems, {n_rollouts} rollouts"
    sec.paragraphs.append(
        f"Accuracy {f3(s['accuracy'])} {ci_text(s.get('accuracy_ci95'))} "
        f"({s.get('accuracy_ci_method', '95% CI')}), {sizes}. "
        f"{pct(s.get('mixed_problem_share'))} of problems have both right and wrong rollouts. "
        f"Mean response length {f3(s.get('mean_response_tokens'), 1)} tokens.")
    if per == 1:
        sec.notes.append("One rollout per problem: no problem can have mixed outcomes, so a value probe can "
                         "only learn problem difficulty.")
    if s.get("mixed_problem_share") is not None and s["mixed_problem_share"] < 0.1 and (per or 0) > 1:
        sec.notes.append(f"Only {pct(s['mixed_problem_share'])} of problems have mixed outcomes: the probes' "
                         "signal is mostly problem difficulty.")
    got = per_problem_correct(run_dir)
    if got is not None:
        sec.figures.append(_histogram(got[0], got[1], s["accuracy"], s.get("accuracy_ci95")))
    for key, title in (("reward_reasons", "Grading verdicts"), ("finish_reasons", "Why generation stopped")):
        counts = s.get(key) or {}
        total = sum(counts.values())
        if total:
            rows = [[k, v, pct(v / total, 1)] for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
            sec.tables.append(Table(f"{title} ({total} rollouts)", table_html(["reason", "rollouts", "share"], rows)))
    if (s.get("finish_reasons") or {}).get("length"):
        share = s["finish_reasons"]["length"] / max(1, sum(s["finish_reasons"].values()))
        sec.notes.append(f"{pct(share, 1)} of rollouts hit rollout.max_new_tokens (finish 'length'): they are "
                         "graded as they stand, usually wrong.")
    return sec
