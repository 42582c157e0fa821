"""Report section for the probe stage: AUROC per layer, the pruning sweep, the value neurons.

Reads run_dir/probe/results.json and run_dir/probe/value_neurons.json (formats: docs/probes.md).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from rewardscope.probe.metrics import SCORED_POSITIONS as POSITIONS
from rewardscope.report.core import (
    Figure, Html, Section, Table, ci_text, esc, excludes, f3, is_num, load_json, num, p_text, plural, signed,
    sorted_layers, table_html,
)
from rewardscope.report.style import (
    COLORS, POSITION_LABELS, POSITION_SHORT, WIDTH_IN, label_color, new_figure, styled, to_png,
)

CI_BOOT = "95% percentile bootstrap over held-out problems"


def load(run_dir: Path) -> dict | None:
    res = load_json(Path(run_dir) / "probe" / "results.json")
    return res if isinstance(res, dict) and "auroc" in res else None


def positions_of(res: dict) -> list[str]:
    main = res["auroc"][res["main"]]
    first = main[str(sorted_layers(main)[0])] if main else {}
    return [p for p in POSITIONS if p in first]


def labels_of(res: dict) -> list[str]:
    """Probe labels, the main one first, then TD(0), then Monte-Carlo, then any other."""
    order = {res["main"]: 0, "TD(0)": 1, "Monte-Carlo": 2}
    return sorted(res["auroc"], key=lambda l: (order.get(l, 3), l))


def n_states(res: dict) -> dict[str, int | None]:
    """States scored per position (the same for every layer and probe)."""
    main = res["auroc"][res["main"]]
    first = main[str(sorted_layers(main)[0])]
    return {p: first.get(p, {}).get("n_states") for p in positions_of(res)}


def held_out(res: dict) -> tuple[int | None, int | None]:
    h = (res.get("split") or {}).get("held_out") or (res.get("summary") or {}).get("held_out") or {}
    return h.get("problems"), h.get("rollouts")


def n_boot(res: dict) -> int | None:
    return ((res.get("settings") or {}).get("probe") or {}).get("bootstrap")


def chosen_layers(res: dict) -> dict[str, int | None]:
    chosen = (res.get("summary") or {}).get("chosen_layer") or {}
    return {p: (chosen.get(p) or {}).get("layer") for p in positions_of(res)}


def sample_text(res: dict) -> str:
    problems, rollouts = held_out(res)
    states = ", ".join(f"{POSITION_SHORT[p]} {n}" for p, n in n_states(res).items())
    return f"Held out: {problems} problems, {rollouts} rollouts; states scored: {states}."


def _layer_ticks(ax, layers: list[int]) -> None:
    if len(layers) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(layers))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.set_xlim(min(layers) - 0.6, max(layers) + 0.6)


# ---------------------------------------------------------------------------------------------------------
# figure 1: AUROC per layer


def auroc_figure(res: dict) -> Figure:
    labels, positions = labels_of(res), positions_of(res)
    chosen = chosen_layers(res)
    layers = sorted_layers(res["auroc"][res["main"]])
    states = n_states(res)
    whiskers = len(layers) <= 12  # few layers: dodged whiskers read better than overlapping bands
    los = [num(c[p]["ci95"][0]) for l in labels for c in res["auroc"][l].values() for p in positions
           if isinstance(c.get(p, {}).get("ci95"), list)]
    ymin = min([0.4] + [v for v in los if v == v])
    ymin = np.floor(ymin * 10) / 10
    with styled():
        fig = new_figure(WIDTH_IN, 4.4)
        axes = fig.subplots(1, len(positions), sharey=True, squeeze=False)[0]
        for ax, pos in zip(axes, positions):
            if chosen.get(pos) is not None:
                ax.axvspan(chosen[pos] - 0.42, chosen[pos] + 0.42, color=COLORS["chosen"], lw=0, zorder=0)
                ax.text(chosen[pos], 1.0, "chosen", ha="center", va="top", fontsize=9, color="#555555",
                        transform=ax.get_xaxis_transform())
            ax.axhline(0.5, ls="--", color=COLORS["chance"], lw=1.1, zorder=1)
            for i, label in enumerate(labels):
                dodge = (i - (len(labels) - 1) / 2) * (0.16 if whiskers else 0.0)
                table = res["auroc"][label]
                x = np.array([layer + dodge for layer in layers])
                cells = [table[str(layer)].get(pos, {}) for layer in layers]
                y = np.array([num(c.get("auroc")) for c in cells])
                lo = np.array([num((c.get("ci95") or [None, None])[0]) for c in cells])
                hi = np.array([num((c.get("ci95") or [None, None])[1]) for c in cells])
                sig = np.array([bool(c.get("holm_significant")) for c in cells])
                color = label_color(label)
                if whiskers:
                    ax.errorbar(x, y, yerr=np.nan_to_num(np.vstack([y - lo, hi - y])), fmt="none", ecolor=color,
                                elinewidth=1.4, capsize=3.5, alpha=0.85, zorder=2)
                else:
                    ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0, zorder=2)
                ax.plot(x, y, "-", color=color, zorder=3)
                ax.plot(x[sig], y[sig], "o", color=color, zorder=4)
                ax.plot(x[~sig], y[~sig], "o", mfc="white", mec=color, mew=1.6, zorder=4)
            n = states.get(pos)
            ax.set_title(f"{POSITION_LABELS[pos]}" + (f", {n} states" if n else ""), loc="left")
            ax.set_xlabel("layer")
            _layer_ticks(ax, layers)
            ax.grid(axis="x", visible=False)
        axes[0].set_ylabel("held-out AUROC")
        axes[0].set_ylim(ymin, 1.04)
        axes[0].yaxis.set_major_locator(MaxNLocator(nbins=6))
        handles = [Line2D([], [], color=label_color(l), marker="o",
                          label=l + (" (main)" if l == res["main"] and len(labels) > 2 else "")) for l in labels]
        handles += [
            Line2D([], [], ls="", marker="o", color="#555555", label="Holm-significant"),
            Line2D([], [], ls="", marker="o", mfc="white", mec="#555555", mew=1.6, label="not significant"),
            Line2D([], [], ls="--", color=COLORS["chance"], label="chance (0.5)"),
            Patch(color=COLORS["chosen"], label="layer chosen on validation"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
        png = to_png(fig)
    mc = res.get("multiple_comparisons") or {}
    holm = "; ".join(f"{l}: {mc[l].get('significant')} of {mc[l].get('family_size')} cells" for l in labels if l in mc)
    none = [l for l in labels if l in mc and not mc[l].get("significant")]
    caption = (
        f"Held-out AUROC of the value probe's V(s) against the rollout's final reward, per layer; one panel per "
        f"position, one line per probe (main: {res['main']}). {sample_text(res)} "
        f"{'Whiskers' if len(layers) <= 12 else 'Bands'}: {CI_BOOT} ({n_boot(res)} resamples). Control: chance, AUROC 0.5 (dashed). "
        f"Filled markers: the cell survives a Holm-Bonferroni correction at 0.05 over its probe's "
        f"{len(layers)} layers x {len(positions)} positions (two-sided Wald test against 0.5); hollow: it does "
        f"not. Surviving: {holm}. Shaded: the layer with the highest validation AUROC (chosen without the "
        f"held-out problems).")
    if none:
        caption += (f" No cell of {' or '.join(none)} survives the correction: at this sample size those AUROCs "
                    "are not distinguishable from chance.")
    return Figure("auroc_by_layer", caption, png, alt="AUROC per layer, one panel per position")


def auroc_table(res: dict) -> Table:
    labels, positions = labels_of(res), positions_of(res)
    layers = sorted_layers(res["auroc"][res["main"]])
    chosen = chosen_layers(res)
    rows = []
    for layer in layers:
        row = [str(layer)]
        for pos in positions:
            for label in labels:
                c = res["auroc"][label][str(layer)].get(pos, {})
                if not is_num(c.get("auroc")):
                    row.append(Html(f'<span class="muted">{esc(c.get("note") or "n/a")}</span>'))
                    continue
                text = f"{f3(c['auroc'])} {ci_text(c.get('ci95'), 2)}"
                rep = c.get("repeats") or {}
                if is_num(rep.get("sd")):
                    text += f" sd {rep['sd']:.3f}"
                h = esc(text)
                if c.get("holm_significant"):
                    h = f"<b>{h}</b>"
                if label == res["main"] and chosen.get(pos) == layer:
                    h = f'<span class="chosen">{h}</span>'
                row.append(Html(h))
        rows.append(row)
    header = ["layer"] + [l for _ in positions for l in labels]
    top = [("", 1)] + [(POSITION_LABELS[p], len(labels)) for p in positions]
    rep = any("repeats" in c.get(p, {}) for l in labels for c in res["auroc"][l].values() for p in positions)
    caption = (f"AUROC {CI_BOOT}. Bold: survives the Holm correction; highlighted: the layer chosen on validation "
               f"(main probe). {sample_text(res)}"
               + (" sd: spread over probe seeds on the same split (probe.repeats)." if rep else ""))
    return Table(caption, table_html(header, rows, header_rows=[top]))


def difference_table(res: dict) -> Table | None:
    diff = res.get("td0_minus_monte_carlo")
    if not diff:
        return None
    positions = positions_of(res)
    rows = []
    for layer in sorted_layers(diff):
        row = [str(layer)]
        for pos in positions:
            d = diff[str(layer)].get(pos) or {}
            text = esc(f"{signed(d.get('delta'))} {ci_text(d.get('ci95'), 3, sign=True)}")
            row.append(Html(f"<b>{text}</b>" if excludes(d.get("ci95"), 0) else text))
        rows.append(row)
    return Table("TD(0) minus Monte-Carlo AUROC, paired over the same held-out problems, with its "
                 f"{CI_BOOT}. Bold: the CI excludes 0 (uncorrected).",
                 table_html(["layer"] + [POSITION_LABELS[p] for p in positions], rows))


# ---------------------------------------------------------------------------------------------------------
# figure 2: pruning sweep


def _sweep_arrays(rows: list[dict], pos: str) -> dict[str, np.ndarray]:
    rows = sorted(rows, key=lambda r: r["ratio"])
    out = {"kept": np.array([r["kept_dims"] for r in rows], float), "ratio": np.array([r["ratio"] for r in rows])}
    for arm in ("value_dims", "random_dims", "masked"):
        cells = [(r.get(arm) or {}).get(pos) or {} for r in rows]
        out[arm] = np.array([num(c.get("auroc")) for c in cells])
        out[arm + "_lo"] = np.array([num((c.get("ci95") or [None, None])[0]) for c in cells])
        out[arm + "_hi"] = np.array([num((c.get("ci95") or [None, None])[1]) for c in cells])
    out["draws"] = [((r.get("random_dims") or {}).get(pos) or {}).get("draws") or [] for r in rows]
    d = [(r.get("value_minus_random") or {}).get(pos) or {} for r in rows]
    out["delta"] = np.array([num(x.get("delta")) for x in d])
    out["delta_lo"] = np.array([num((x.get("ci95") or [None, None])[0]) for x in d])
    out["delta_hi"] = np.array([num((x.get("ci95") or [None, None])[1]) for x in d])
    return out


def _kept_axis(ax, a: dict, labels: bool = True) -> None:
    """Log-scale x of dims kept, inverted (more pruning to the right, as in the paper), ticks at the swept sizes."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(a["kept"]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(int(k)) for k in a["kept"]] if labels else [])
    lo, hi = a["kept"].min(), a["kept"].max()
    ax.set_xlim(hi * 1.35, lo / 1.35)
    ax.grid(axis="x", visible=False)


def _draw_arms(ax, a: dict, masked: bool = True, bands: bool = True) -> None:
    x = a["kept"]
    ax.axhline(0.5, ls="--", color=COLORS["chance"], lw=1.1, zorder=1)
    if not bands:
        for arm, dx in (("random_dims", 1 / 1.07), ("value_dims", 1.07)):
            d = a[arm]
            ax.errorbar(x * dx, d, yerr=np.nan_to_num(np.vstack([d - a[arm + "_lo"], a[arm + "_hi"] - d])),
                        fmt="none", ecolor=COLORS["value" if arm == "value_dims" else "random"], elinewidth=1.1,
                        capsize=2.5, alpha=0.8, zorder=2)
        ax.plot(x / 1.07, a["random_dims"], "s-", color=COLORS["random"], ms=5, zorder=4)
        ax.plot(x * 1.07, a["value_dims"], "o-", color=COLORS["value"], ms=6, zorder=5)
        return
    ax.fill_between(x, a["random_dims_lo"], a["random_dims_hi"], color=COLORS["random"], alpha=0.14, lw=0)
    ax.fill_between(x, a["value_dims_lo"], a["value_dims_hi"], color=COLORS["value"], alpha=0.12, lw=0)
    for arm in ("random_dims", "value_dims"):  # the band's edges, thin, so overlapping bands stay legible
        for edge in ("_lo", "_hi"):
            ax.plot(x, a[arm + edge], "-", color=COLORS["value" if arm == "value_dims" else "random"], lw=0.6,
                    alpha=0.5, zorder=2)
    for k, draws in zip(x, a["draws"]):
        if len(draws) > 1:
            ax.plot([k] * len(draws), [num(d) for d in draws], "_", color=COLORS["random"], ms=9, mew=1.4, zorder=3)
    ax.plot(x, a["random_dims"], "s-", color=COLORS["random"], ms=5.5, zorder=4)
    if masked:
        ax.plot(x, a["masked"], "--", color=COLORS["masked"], lw=1.5, zorder=4)
    ax.plot(x, a["value_dims"], "o-", color=COLORS["value"], zorder=5)


def _sweep_handles(draws: int, masked: bool = True) -> list:
    h = [Line2D([], [], color=COLORS["value"], marker="o", label="top-ranked (value) dims, retrained"),
         Line2D([], [], color=COLORS["random"], marker="s", ms=5.5, label=f"random dims, retrained (mean of {draws})")]
    if draws > 1:
        h.append(Line2D([], [], ls="", marker="_", ms=9, mew=1.4, color=COLORS["random"], label="each random draw"))
    if masked:
        h.append(Line2D([], [], ls="--", color=COLORS["masked"], label="full probe, other dims masked"))
    h.append(Line2D([], [], ls="--", color=COLORS["chance"], lw=1.1, label="chance"))
    return h


def sweep_settings(res: dict) -> tuple[int, float]:
    sw = (res.get("settings") or {}).get("sweep") or {}
    return sw.get("random_draws", 0), sw.get("value_neuron_fraction")


def sweep_figure(res: dict) -> Figure | None:
    sweep = res.get("sweep") or {}
    positions = positions_of(res)
    chosen = chosen_layers(res)
    panels = [(p, chosen.get(p)) for p in positions]
    if not sweep or not any(str(layer) in sweep for _, layer in panels):
        return None
    draws, _ = sweep_settings(res)
    with styled():
        fig = new_figure(WIDTH_IN, 6.3)
        axes = fig.subplots(2, len(panels), squeeze=False, sharey="row", sharex="col", height_ratios=[2.3, 1])
        for j, (pos, layer) in enumerate(panels):
            top, bottom = axes[0, j], axes[1, j]
            if layer is None or str(layer) not in sweep:
                top.text(0.5, 0.5, "chosen layer not swept" if layer is not None else "no chosen layer",
                         ha="center", va="center", transform=top.transAxes, color="#777777")
                bottom.set_visible(False)
                top.set_title(POSITION_LABELS[pos], loc="left")
                continue
            a = _sweep_arrays(sweep[str(layer)], pos)
            _draw_arms(top, a)
            top.set_title(f"{POSITION_LABELS[pos]}, layer {layer}", loc="left")
            _kept_axis(top, a, labels=False)
            ratio_axis = top.secondary_xaxis("top")
            ratio_axis.set_xticks(a["kept"], labels=[f"{r:g}" for r in a["ratio"]])
            ratio_axis.xaxis.set_minor_locator(NullLocator())
            ratio_axis.tick_params(labelsize=9.5)
            ratio_axis.set_xlabel("pruning ratio", fontsize=10)
            bottom.axhline(0, color=COLORS["chance"], lw=1.1, ls="--")
            x, d = a["kept"], a["delta"]
            sig = np.array([excludes([lo, hi], 0) for lo, hi in zip(a["delta_lo"], a["delta_hi"])])
            err = np.vstack([d - a["delta_lo"], a["delta_hi"] - d])
            # clipped at 0: a percentile interval can miss its point estimate by float rounding (ratio 0: 1e-17)
            bottom.errorbar(x, d, yerr=np.clip(np.nan_to_num(err), 0, None), fmt="none", ecolor=COLORS["value"],
                            capsize=3, lw=1.3)
            bottom.plot(x[sig], d[sig], "o", color=COLORS["value"])
            bottom.plot(x[~sig], d[~sig], "o", mfc="white", mec=COLORS["value"], mew=1.6)
            _kept_axis(bottom, a)
            bottom.set_xlabel("dims kept (log scale)")
        axes[0, 0].set_ylabel("held-out AUROC")
        axes[1, 0].set_ylabel("value \u2212 random")
        handles = _sweep_handles(draws) + [
            Line2D([], [], ls="", marker="o", color=COLORS["value"], label="difference: CI excludes 0"),
            Line2D([], [], ls="", marker="o", mfc="white", mec=COLORS["value"], mew=1.6, label="CI includes 0")]
        fig.legend(handles=handles, loc="outside lower center", ncol=4)
        png = to_png(fig)
    top_ratio = max(r["ratio"] for rows in sweep.values() for r in rows)
    wins = []
    for pos, layer in panels:
        if layer is not None and str(layer) in sweep:
            a = _sweep_arrays(sweep[str(layer)], pos)
            wins += [excludes([lo, hi], 0) and d > 0 for lo, hi, d, r in
                     zip(a["delta_lo"], a["delta_hi"], a["delta"], a["ratio"]) if r > 0]
    caption = (
        f"Pruning sweep at each position's chosen layer: a fresh probe retrained on the top-ranked dims (L1 norm "
        f"of the main probe's first-layer weights) against the control, {draws} fresh probes on as many random "
        f"dims each (the mean; dashes: each draw), and the full probe with the other dims masked (not retrained). "
        f"{sample_text(res)} Bands: {CI_BOOT} (random dims: of the mean over draws). Bottom: the paired "
        f"difference value \u2212 random over the same held-out problems with its {CI_BOOT}; filled where the CI "
        f"excludes 0 (uncorrected). Top ratio {top_ratio:g}.")
    if wins and not any(wins):
        caption += (" At no pruned ratio do the top-ranked dims beat random dims (every CI of the difference "
                    "includes 0 or lies below it): no evidence here that the ranking finds special dims.")
    return Figure("sweep_chosen_layer", caption, png, alt="AUROC against kept dims, value vs random dims")


def sweep_grid_figure(res: dict) -> Figure | None:
    """Small multiples: every swept layer x position (up to 8 layers)."""
    sweep = res.get("sweep") or {}
    layers = sorted_layers(sweep)
    if not layers or len(layers) > 8:
        return None
    positions = positions_of(res)
    draws, _ = sweep_settings(res)
    chosen = chosen_layers(res)
    with styled():
        fig = new_figure(WIDTH_IN, 1.0 + 2.15 * len(positions))
        axes = fig.subplots(len(positions), len(layers), squeeze=False, sharey="row", sharex=True)
        for i, pos in enumerate(positions):
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                a = _sweep_arrays(sweep[str(layer)], pos)
                _draw_arms(ax, a, masked=False, bands=False)
                _kept_axis(ax, a, labels=i == len(positions) - 1)
                is_chosen = chosen.get(pos) == layer
                ax.set_title(f"layer {layer}" + (" (chosen)" if is_chosen else ""), loc="left", fontsize=10.5,
                             fontweight="bold" if is_chosen else "normal")
                if i == len(positions) - 1:
                    ax.set_xlabel("dims kept", fontsize=10)
                if j == 0:
                    ax.set_ylabel(f"{POSITION_SHORT[pos]}\nAUROC")
                ax.tick_params(axis="x", labelsize=8.5)
        handles = [h for h in _sweep_handles(draws, masked=False) if h.get_label() != "each random draw"]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
        png = to_png(fig)
    ratios = ", ".join(f"{r['ratio']:g} ({r['kept_dims']})" for r in sorted(sweep[str(layers[0])], key=lambda r: r["ratio"]))
    caption = (f"Every swept layer (columns) at every position (rows): top-ranked dims against the mean of {draws} "
               f"random draws of as many dims, both retrained. Pruning ratios (dims kept): {ratios}. "
               f"{sample_text(res)} Whiskers: {CI_BOOT} (the two arms are drawn slightly apart). Control: random "
               "dims of the same number; chance dashed. 'chosen': the layer chosen on validation for that row's "
               "position. x: dims kept, log scale.")
    return Figure("sweep_all_layers", caption, png, alt="pruning sweep, all layers")


def sweep_delta_figure(res: dict) -> Figure | None:
    """Heatmap of value - random per layer x pruned ratio, one panel per position (scales to any depth)."""
    sweep = res.get("sweep") or {}
    layers = sorted_layers(sweep)
    if not layers:
        return None
    positions = positions_of(res)
    ratios = sorted({r["ratio"] for rows in sweep.values() for r in rows if r["ratio"] > 0})
    if not ratios:
        return None
    grids, stars = {}, {}
    for pos in positions:
        g = np.full((len(layers), len(ratios)), np.nan)
        s = np.zeros_like(g, bool)
        for i, layer in enumerate(layers):
            for r in sweep[str(layer)]:
                if r["ratio"] in ratios:
                    d = (r.get("value_minus_random") or {}).get(pos) or {}
                    g[i, ratios.index(r["ratio"])] = num(d.get("delta"))
                    s[i, ratios.index(r["ratio"])] = excludes(d.get("ci95"), 0)
        grids[pos], stars[pos] = g, s
    vmax = max(0.05, float(np.nanmax(np.abs(np.stack(list(grids.values()))))) if np.isfinite(
        np.nanmax(np.abs(np.stack(list(grids.values()))))) else 0.05)
    kept = {}
    for rows in sweep.values():
        for r in rows:
            kept.setdefault(r["ratio"], r["kept_dims"])
    with styled():
        h = min(11.0, 1.9 + 0.34 * len(layers))
        fig = new_figure(WIDTH_IN, max(3.2, h))
        axes = fig.subplots(1, len(positions), squeeze=False, sharey=True)[0]
        im = None
        for ax, pos in zip(axes, positions):
            g = grids[pos]
            im = ax.imshow(g, cmap="PuOr_r", vmin=-vmax, vmax=vmax, aspect="auto")
            for i in range(g.shape[0]):
                for j in range(g.shape[1]):
                    if np.isfinite(g[i, j]):
                        dark = abs(g[i, j]) > 0.6 * vmax
                        ax.text(j, i, f"{g[i, j]:+.2f}" + ("*" if stars[pos][i, j] else ""), ha="center",
                                va="center", fontsize=9 if len(ratios) <= 7 else 7.5,
                                color="white" if dark else "black",
                                fontweight="bold" if stars[pos][i, j] else "normal")
            ax.set_xticks(range(len(ratios)))
            ax.set_xticklabels([f"{r:g}\n({kept[r]})" for r in ratios])
            ax.set_title(POSITION_LABELS[pos], loc="left")
            ax.set_xlabel("pruning ratio (dims kept)")
            ax.grid(False)
            ax.set_yticks(range(len(layers)))
            ax.set_yticklabels([str(l) for l in layers])
        axes[0].set_ylabel("layer")
        cb = fig.colorbar(im, ax=list(axes), shrink=0.9, pad=0.01)
        cb.set_label("AUROC, value dims \u2212 random dims")
        png = to_png(fig)
    n_cells = int(sum(np.isfinite(g).sum() for g in grids.values()))
    n_star = int(sum(s.sum() for s in stars.values()))
    n_pos = int(sum((s & (g > 0)).sum() for g, s in zip(grids.values(), stars.values())))
    caption = (f"Value dims minus random dims (paired held-out AUROC difference, both retrained), per swept layer "
               f"and pruning ratio. {sample_text(res)} *, bold: the {CI_BOOT} excludes 0 (uncorrected; "
               f"{n_star} of {n_cells} cells, {n_pos} of them favouring value dims; about {0.05 * n_cells:.1f} "
               "would by chance if the ranking were no better than random). Control: random dims of the same "
               "number (mean over draws). Orange: value dims better; purple: random dims better.")
    if n_pos == 0:
        caption += " No cell shows the top-ranked dims ahead of random ones."
    return Figure("sweep_difference", caption, png, alt="heatmap of value minus random AUROC")


def sweep_tables(res: dict) -> list[Table]:
    sweep = res.get("sweep") or {}
    layers = sorted_layers(sweep)
    if not layers:
        return []
    ratios = sorted({r["ratio"] for rows in sweep.values() for r in rows})
    kept = {}
    for rows in sweep.values():
        for r in rows:
            kept.setdefault(r["ratio"], r["kept_dims"])
    tables = []
    for pos in positions_of(res):
        rows = []
        for layer in layers:
            by = {r["ratio"]: r for r in sweep[str(layer)]}
            row = [str(layer)]
            for ratio in ratios:
                r = by.get(ratio)
                if r is None:
                    row.append("")
                    continue
                v = ((r.get("value_dims") or {}).get(pos) or {}).get("auroc")
                m = ((r.get("random_dims") or {}).get(pos) or {}).get("auroc")
                d = (r.get("value_minus_random") or {}).get(pos) or {}
                star = excludes(d.get("ci95"), 0)
                text = esc(f"{f3(v, 2)} / {f3(m, 2)} ({signed(d.get('delta'), 2)}{'*' if star else ''})")
                row.append(Html(f"<b>{text}</b>" if star else text))
            rows.append(row)
        header = ["layer"] + [f"{r:g} ({kept[r]})" for r in ratios]
        tables.append(Table(
            f"Pruning sweep, {POSITION_LABELS[pos]}: value dims / random dims (difference), held-out AUROC; "
            f"columns: pruning ratio (dims kept). *, bold: the difference's {CI_BOOT} excludes 0.",
            table_html(header, rows), collapsed=len(layers) > 8))
    return tables


# ---------------------------------------------------------------------------------------------------------
# value neurons


def value_neuron_table(run_dir: Path) -> tuple[Table, list[str]] | None:
    vn = load_json(Path(run_dir) / "probe" / "value_neurons.json")
    if not isinstance(vn, dict) or not vn.get("layers"):
        return None
    layers = sorted_layers(vn["layers"])
    where = defaultdict(list)
    for layer in layers:
        for e in vn["layers"][str(layer)]:
            where[e["dim"]].append(layer)
    rows = []
    for layer in layers:
        for e in sorted(vn["layers"][str(layer)], key=lambda e: e["rank"]):
            others = [l for l in where[e["dim"]] if l != layer]
            rows.append([str(layer), e["dim"], e["rank"], f3(e.get("score")), ", ".join(map(str, others)) or "-"])
    k = len(vn["layers"][str(layers[0])])
    frac = vn.get("fraction")
    caption = (f"Value neurons: per layer the top {k} of {vn.get('hidden_size')} dims "
               f"({frac:.0%} by sweep.value_neuron_fraction) ranked by {vn.get('ranking', 'score')}. "
               "rank 0 = highest score; score = the L1 norm (in z-scored input units). Last column: other layers "
               "where the same residual-stream dim is also a value neuron.")
    paragraphs = []
    shared = {d: ls for d, ls in where.items() if len(ls) > 1}
    if len(layers) > 1:
        paragraphs.append(
            f"{len(shared)} of {len(where)} distinct value-neuron dims recur in more than one layer"
            + (": " + "; ".join(f"dim {d} at layers {', '.join(map(str, ls))}" for d, ls in
                                sorted(shared.items(), key=lambda kv: -len(kv[1]))[:8]) if shared else "")
            + ". The residual stream keeps its coordinates from block to block, so a dim recurring across "
              "layers is one direction read at several depths.")
    return Table(caption, table_html(["layer", "dim", "rank", "score", "also at layers"], rows),
                 collapsed=len(rows) > 60), paragraphs


# ---------------------------------------------------------------------------------------------------------
# the section


def headline_table(res: dict) -> Table:
    chosen = (res.get("summary") or {}).get("chosen_layer") or {}
    states = n_states(res)
    rows = []
    for pos in positions_of(res):
        c = chosen.get(pos) or {}
        if c.get("layer") is None:
            rows.append([POSITION_LABELS[pos], "-", "-", Html(f'<span class="muted">{esc(c.get("note") or "no layer chosen")}</span>'),
                         "", "", ""])
            continue
        auroc = esc(f"{f3(c.get('auroc'))} {ci_text(c.get('ci95'))}")
        sig = bool(c.get("holm_significant"))
        rows.append([POSITION_LABELS[pos], c["layer"], f3(c.get("validation_auroc")),
                     Html(f"<b>{auroc}</b>" if sig else auroc), states.get(pos), p_text(c.get("p_value")),
                     "yes" if sig else "no: not distinguishable from chance"])
    problems, rollouts = held_out(res)
    return Table(
        f"Headline: per position, the layer whose main probe ({res['main']}) has the highest AUROC on the "
        f"validation problems, and its AUROC on the {problems} held-out problems ({rollouts} rollouts) with the "
        f"{CI_BOOT}; p: two-sided Wald test against 0.5; Holm: whether it survives the correction over the "
        "whole layer x position table.",
        table_html(["position", "layer", "validation AUROC", "held-out AUROC [95% CI]", "states", "p",
                    "Holm-significant"], rows, align="lrrrrrl"), lead=True)


def _capped(res: dict) -> str | None:
    tr = res.get("training") or {}
    runs = [t for per in tr.values() for t in per.values() if isinstance(t, dict)]
    hit = [t for t in runs if t.get("early_stopping") and is_num(t.get("epochs_run"))
           and t.get("epochs_run") >= (t.get("epochs_cap") or float("inf"))]
    if not hit:
        return None
    return (f"{len(hit)} of {len(runs)} probes ran to the epoch cap ({hit[0].get('epochs_cap')}) before early "
            "stopping triggered: they may be undertrained (raise probe.epochs).")


def _training_text(res: dict) -> str | None:
    tr = res.get("training") or {}
    runs = [t for per in tr.values() for t in per.values() if isinstance(t, dict)]
    if not runs:
        return None
    run = [t.get("epochs_run") for t in runs if is_num(t.get("epochs_run"))]
    best = [t.get("best_epoch") for t in runs if is_num(t.get("best_epoch"))]
    cap = runs[0].get("epochs_cap")
    early = runs[0].get("early_stopping")
    span = f"{min(run)}" if min(run) == max(run) else f"{min(run)}-{max(run)}"
    text = (f"Training: {len(runs)} probes (layers x probes) ran {span} epochs"
            + (f" (cap {cap}, early stopping on validation loss)" if early else f" ({cap} epochs, no early stopping)")
            + (f", best epochs {min(best)}-{max(best)}." if best and min(best) != max(best) else
               f", best epoch {best[0]}." if best else "."))
    return text


def section(run_dir: Path) -> Section | None:
    run_dir = Path(run_dir)
    res = load(run_dir)
    if res is None:
        return None
    sec = Section("Value probes and pruning sweep")
    cfg = (res.get("settings") or {}).get("probe") or {}
    split = res.get("split") or {}
    part = lambda name: split.get(name) or {}  # noqa: E731
    cap = res.get("capture") or {}
    arch = (f"MLP {cap.get('hidden_size')} \u2192 {cfg.get('hidden')} \u2192 1" if cfg.get("arch") == "mlp"
            else f"linear {cap.get('hidden_size')} \u2192 1")
    sec.paragraphs.append(
        f"Main probe {res['main']} ({arch}, {cfg.get('output', '')} output, "
        f"{'z-scored' if cfg.get('standardize') else 'raw'} inputs), trained on {cfg.get('level')}-level states "
        f"of {part('train').get('problems')} training problems ({part('train').get('rollouts')} rollouts); "
        f"{part('validation').get('problems')} validation problems ({part('validation').get('rollouts')} rollouts) "
        f"for early stopping and for choosing the headline layer; everything below is measured on "
        f"{part('held_out').get('problems')} held-out problems ({part('held_out').get('rollouts')} rollouts), "
        f"split by problem (probe.split_seed {split.get('split_seed', cfg.get('split_seed'))}). "
        f"TD(0) and Monte-Carlo probes are fit side by side on the same data.")
    chosen = (res.get("summary") or {}).get("chosen_layer") or {}
    sec.tables.append(headline_table(res))
    sec.paragraphs.append(
        "How to read the positions: s\u2080 is the last prompt token, before anything is generated, so it can only "
        "reflect the problem (its difficulty); step ends pool every step boundary of the response; the last token "
        "has read the whole response, including any stated answer or self-assessment, so a high AUROC there can "
        "reflect what the model has just written rather than a value estimate.")
    t = _training_text(res)
    if t:
        sec.paragraphs.append(t)

    problems = part("held_out").get("problems")
    if is_num(problems) and problems < 30:
        sec.notes.append(f"Only {problems} held-out problems: every CI here is wide, and a point estimate can move "
                         "by 0.1 between seeds or splits.")
    mc = res.get("multiple_comparisons") or {}
    for label in labels_of(res):
        if label in mc and not mc[label].get("significant"):
            sec.notes.append(f"No cell of the {label} probe's table (of {mc[label].get('family_size')}) survives "
                             "the Holm-Bonferroni correction: no layer or position shows a value signal "
                             "distinguishable from chance at this sample size.")
    null_tops, top = [], {}
    for pos in positions_of(res):
        top = (chosen.get(pos) or {}).get("sweep_at_top_ratio") or {}
        d = top.get("value_minus_random") or {}
        if top and not excludes(d.get("ci95"), 0):
            null_tops.append(f"{POSITION_SHORT[pos]} {f3(top.get('value_dims_auroc'))} vs "
                             f"{f3(top.get('random_dims_auroc'))}, difference {signed(d.get('delta'))} "
                             f"{ci_text(d.get('ci95'), 3, sign=True)}")
    if null_tops:
        top = next(((chosen.get(p) or {}).get("sweep_at_top_ratio") for p in positions_of(res)
                    if (chosen.get(p) or {}).get("sweep_at_top_ratio")), {})
        sec.notes.append(
            f"At the top pruning ratio {top.get('ratio'):g} ({plural(top.get('kept_dims'), 'dim')}), chosen layer, value dims "
            f"vs random dims: {'; '.join(null_tops)}. The difference's CI includes 0 there: no evidence that "
            "the top-ranked dims beat random ones.")
    capped = _capped(res)
    if capped:
        sec.notes.append(capped)
    sec.figures.append(auroc_figure(res))
    for fig in (sweep_figure(res), sweep_delta_figure(res), sweep_grid_figure(res)):
        if fig is not None:
            sec.figures.append(fig)
    sec.tables.append(auroc_table(res))
    diff = difference_table(res)
    if diff is not None:
        sec.tables.append(diff)
    sec.tables.extend(sweep_tables(res))
    vn = value_neuron_table(run_dir)
    if vn is not None:
        sec.tables.append(vn[0])
        sec.paragraphs.extend(vn[1])
    return sec
