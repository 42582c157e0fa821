"""Report section for `rewardscope transfer`: IoU of value-dim sets between two runs, and probe transfer.

Reads every RUN_A/transfer/*.json (written by `rewardscope transfer RUN_A RUN_B`; format: docs/probes.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm

from rewardscope.report.core import (
    Figure, Html, Section, Table, ci_text, esc, excludes, f3, is_num, load_json, load_yaml, num, plural, signed,
    sorted_layers, table_html,
)
from rewardscope.report.style import POSITION_LABELS, WIDTH_IN, new_figure, styled, to_png

CI_BOOT = "95% percentile bootstrap over held-out problems"


def transfer_files(run_dir: Path) -> list[Path]:
    folder = Path(run_dir) / "transfer"
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")) if folder.is_dir() else []


def _describe(run: str | None) -> dict:
    """What is known about a run directory named in a transfer file: name, variant, dataset, probe seed."""
    out = {"name": Path(run).name if run else "?"}
    if run and Path(run).is_dir():
        cfg = load_yaml(Path(run) / "config.yaml") or {}
        data, probe = cfg.get("data") or {}, cfg.get("probe") or {}
        out.update(dataset=data.get("dataset"), variant=data.get("variant"), seed=probe.get("seed"),
                   model=(cfg.get("model") or {}).get("name"))
    return out


def _run_text(d: dict) -> str:
    bits = [d.get("model") and f"model {d['model']}", d.get("dataset") and f"dataset {d['dataset']}",
            d.get("variant") not in (None, "default") and f"variant {d.get('variant')}",
            d.get("seed") is not None and f"probe.seed {d['seed']}"]
    extra = ", ".join(b for b in bits if b)
    return f"{d['name']}" + (f" ({extra})" if extra else "")


def _grids(t: dict) -> tuple[list[int], list[str], dict[str, np.ndarray]]:
    """Layers, column labels (pruned ratios > 0 and the value-neuron sets), and IoU / expectation / p grids."""
    layers = sorted_layers(t["iou"])
    ratios = sorted({r["ratio"] for v in t["iou"].values() for r in v.get("by_ratio", []) if r["ratio"] > 0})
    has_vn = any("value_neurons" in v for v in t["iou"].values())
    cols = [f"{r:g}" for r in ratios] + (["value\nneurons"] if has_vn else [])
    g = {k: np.full((len(layers), len(cols)), np.nan) for k in ("iou", "expected", "p", "k")}
    for i, layer in enumerate(layers):
        v = t["iou"][str(layer)]
        cells = {f"{r['ratio']:g}": r for r in v.get("by_ratio", [])}
        if has_vn and "value_neurons" in v:
            cells["value\nneurons"] = v["value_neurons"]
        for j, c in enumerate(cols):
            r = cells.get(c)
            if r:
                g["iou"][i, j] = num(r.get("iou"))
                g["expected"][i, j] = num(r.get("random_iou_expected"))
                g["p"][i, j] = num(r.get("p_value"))
                g["k"][i, j] = num(r.get("k_a"))
    return layers, cols, g


def iou_figure(t: dict, name: str, a: dict, b: dict) -> Figure | None:
    if not t.get("iou"):
        return None
    layers, cols, g = _grids(t)
    if not cols:
        return None
    sig = g["p"] < 0.05
    ratio = g["iou"] / g["expected"]
    with styled():
        h = min(11.0, 2.3 + 0.42 * len(layers))
        fig = new_figure(WIDTH_IN, max(3.6, h))
        ax1, ax2 = fig.subplots(1, 2, sharey=True)
        im1 = ax1.imshow(g["iou"], cmap="viridis", vmin=0, vmax=1, aspect="auto")
        finite = ratio[np.isfinite(ratio) & (ratio > 0)]
        vmax = max(10.0, float(finite.max()) if finite.size else 10.0)
        im2 = ax2.imshow(np.clip(ratio, 0.5, None), cmap="magma_r", norm=LogNorm(vmin=0.5, vmax=vmax),
                         aspect="auto")  # 0 (no overlap) shows as the lowest colour
        small = len(cols) > 7 or len(layers) > 16
        for i in range(len(layers)):
            for j in range(len(cols)):
                if not np.isfinite(g["iou"][i, j]):
                    continue
                weight = "bold" if sig[i, j] else "normal"
                star = "*" if sig[i, j] else ""
                c1 = "black" if g["iou"][i, j] > 0.55 else "white"
                ax1.text(j, i, f"{g['iou'][i, j]:.2f}{star}\nexp {g['expected'][i, j]:.3f}", ha="center",
                         va="center", fontsize=7.5 if small else 9, color=c1, fontweight=weight, linespacing=1.1)
                r = ratio[i, j]
                c2 = "white" if np.isfinite(r) and r > np.sqrt(vmax) else "black"
                rt = "n/a" if not np.isfinite(r) else f"{r:.0f}\u00d7" if r >= 100 else f"{r:.1f}\u00d7"
                ax2.text(j, i, rt + star, ha="center", va="center",
                         fontsize=7.5 if small else 9.5, color=c2, fontweight=weight)
        for ax in (ax1, ax2):
            ax.set_xticks(range(len(cols)))
            ks = [g["k"][np.isfinite(g["k"][:, j]), j] for j in range(len(cols))]
            ax.set_xticklabels([f"{c}\n({plural(int(k[0]), 'dim')})" if len(k) and "\n" not in c else c
                                for c, k in zip(cols, ks)])
            ax.set_xlabel("pruning ratio (dims in each set)")
            ax.grid(False)
        ax1.set_yticks(range(len(layers)))
        ax1.set_yticklabels([str(l) for l in layers])
        ax1.set_ylabel("layer")
        ax1.set_title("IoU of the two runs' top dims", loc="left")
        ax2.set_title("IoU / random expectation", loc="left")
        fig.colorbar(im1, ax=ax1, shrink=0.9, pad=0.01).set_label("IoU")
        fig.colorbar(im2, ax=ax2, shrink=0.9, pad=0.01).set_label("IoU \u00f7 random expectation (log scale)")
        png = to_png(fig)
    n = int(np.isfinite(g["p"]).sum())
    n_sig = int(sig.sum())
    dims = t["iou"][str(layers[0])].get("by_ratio", [{}])[0].get("n")
    caption = (
        f"Overlap of the top-ranked dims of A = {_run_text(a)} and B = {_run_text(b)}, per layer (rows) and pruning "
        f"ratio (columns: the top (1 \u2212 ratio) of {dims} dims; 'value neurons': the value-neuron sets). Left: "
        "IoU, with the control below it: 'exp', the exact expected IoU of two random sets of the same sizes "
        "(hypergeometric). Right: IoU / that expectation. *, bold: hypergeometric P(overlap >= observed) "
        f"< 0.05, uncorrected: {n_sig} of {n} cells (about {0.05 * n:.1f} expected by chance if the rankings were "
        "unrelated). Ratio 0 (every dim, IoU 1 by construction) is left out. No CI: each IoU is one pair of "
        "rankings; the seed-to-seed overlap of one task is the ceiling to compare with.")
    if n_sig == 0:
        caption += " No cell overlaps more than random sets would: the rankings do not transfer."
    return Figure(f"iou_{name}", caption, png, alt=f"IoU heatmap against {name}")


def probe_transfer_table(t: dict) -> Table | None:
    pt = (t.get("probe_transfer") or {}).get("layers") or {}
    if not pt:
        return None
    positions = [p for p in ("s0", "step_end", "last") if any(p in (v.get("b_held_out") or {}) for v in pt.values())]
    rows = []
    for pos in positions:
        for layer in sorted_layers(pt):
            v = pt[str(layer)]
            a_on_b = (v.get("b_held_out") or {}).get(pos) or {}
            own = (v.get("b_own_probe") or {}).get(pos) or {}
            every = (v.get("b_all") or {}).get(pos) or {}
            d = (v.get("a_minus_b_own") or {}).get(pos) or {}
            text = esc(f"{signed(d.get('delta'))} {ci_text(d.get('ci95'), 3, sign=True)}")
            rows.append([POSITION_LABELS[pos], str(layer), f"{f3(a_on_b.get('auroc'))} {ci_text(a_on_b.get('ci95'))}",
                         f"{f3(own.get('auroc'))} {ci_text(own.get('ci95'))}",
                         Html(f"<b>{text}</b>" if excludes(d.get("ci95"), 0) else text),
                         f"{f3(every.get('auroc'))} {ci_text(every.get('ci95'))}"])
    probs = (t.get("probe_transfer") or {}).get("problems") or {}
    held, allp = probs.get("b_held_out") or {}, probs.get("b_all") or {}
    header = ["position", "layer", "A's probe on B's held-out", "B's own probe", "A \u2212 B (paired)",
              "A's probe on all of B"]
    caption = (f"Probe transfer: A's main probe scored on B's held-out states ({held.get('problems_scored')} problems, "
               f"{held.get('problems_dropped')} dropped because A trained on them) beside B's own probe on the same "
               f"states (the control), their paired difference, and A's probe on every problem of B it did not "
               f"train on ({allp.get('problems_scored')}). AUROC with the {CI_BOOT}; bold: the difference's CI "
               "excludes 0 (uncorrected).")
    return Table(caption, table_html(header, rows, numeric_from=2), collapsed=len(rows) > 40)


def section(run_dir: Path) -> Section | None:
    files = transfer_files(run_dir)
    if not files:
        return None
    sec = Section("Transfer between runs")
    for path in files:
        t = load_json(path)
        if not isinstance(t, dict) or "iou" not in t:
            sec.notes.append(f"{path.name}: not a transfer result (no 'iou'); left out.")
            continue
        a, b = _describe(t.get("run_a")), _describe(t.get("run_b"))
        sec.paragraphs.append(
            f"{path.name}: A = {_run_text(a)}, B = {_run_text(b)}. "
            f"Reproduce: rewardscope transfer {t.get('run_a')} {t.get('run_b')}")
        if t.get("warning"):
            sec.notes.append(f"{path.name}: {t['warning']}.")
        elif a.get("seed") is not None and a.get("seed") == b.get("seed"):
            sec.notes.append(f"{path.name}: both runs used probe.seed {a['seed']}: their rankings share an "
                             "initialisation, which inflates the overlap. Re-run one with another probe.seed.")
        means = (t.get("summary") or {}).get("iou_by_ratio_mean_over_layers") or {}
        if means:
            bits = [f"{r}: {f3(m.get('mean_iou'), 2)} (random {f3(m.get('mean_random_iou_expected'), 3)})"
                    for r, m in means.items() if is_num(m.get("mean_iou")) and float(r) > 0]
            sec.paragraphs.append("Mean IoU over layers by pruning ratio: " + "; ".join(bits) + ".")
        stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in path.stem)
        fig = iou_figure(t, stem, a, b)
        if fig is not None:
            sec.figures.append(fig)
        table = probe_transfer_table(t)
        if table is not None:
            table.caption = f"{path.name}. " + table.caption
            sec.tables.append(table)
    return sec if sec.figures or sec.tables or sec.notes else None
