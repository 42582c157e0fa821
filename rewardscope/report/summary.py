"""summary_table: the run's headline figures as a short plain-text table for the terminal."""

from __future__ import annotations

from pathlib import Path

from rewardscope.report.core import ci_text, excludes, f3, load_json, p_text, plural, signed
from rewardscope.report.probe import POSITIONS, load as load_probe, n_boot
from rewardscope.report.rollout import rollout_summary
from rewardscope.report.style import POSITION_SHORT
from rewardscope.report.transfer import transfer_files


def _columns(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def summary_table(run_dir: Path) -> str:
    """Rollout accuracy (Wilson CI, n); the chosen layer's held-out AUROC with its CI at each position; the
    sweep's headline (value dims vs random dims at the top ratio, with the paired difference's CI)."""
    run_dir = Path(run_dir)
    lines = [f"rewardscope summary: {run_dir.name}"]
    ro = rollout_summary(run_dir)
    if ro is not None:
        n, r = ro.get("n_problems"), ro.get("n_rollouts")
        per = f" x {r // n}" if n and r and r % n == 0 else ""
        lines.append(f"rollouts  accuracy {f3(ro.get('accuracy'))} {ci_text(ro.get('accuracy_ci95'))} "
                     f"(95% Wilson CI over problems), n = {n} problems{per} = {r} rollouts")
    else:
        lines.append("rollouts  (no rollouts/summary.json)")
    res = load_probe(run_dir)
    if res is None:
        lines.append("probe     (no probe/results.json)")
    else:
        s = res.get("summary") or {}
        chosen = s.get("chosen_layer") or {}
        ho, va = s.get("held_out") or {}, s.get("validation") or {}
        lines.append(f"probe     main {res.get('main')}; layer chosen on {va.get('problems')} validation problems")
        lines.append(f"          held out: {ho.get('problems')} problems, {ho.get('rollouts')} rollouts; "
                     f"95% bootstrap CI over problems ({n_boot(res)} resamples)")
        rows = [["position", "layer", "AUROC", "95% CI", "n states", "p", "Holm"]]
        main = res["auroc"].get(res["main"], {})
        for pos in POSITIONS:
            c = chosen.get(pos)
            if not c:
                continue
            layer = c.get("layer")
            cell = (main.get(str(layer)) or {}).get(pos) or {} if layer is not None else {}
            rows.append([POSITION_SHORT[pos], "-" if layer is None else str(layer), f3(c.get("auroc")),
                         ci_text(c.get("ci95")), str(cell.get("n_states", "")), p_text(c.get("p_value")),
                         "yes" if c.get("holm_significant") else "no"])
        lines += _columns(rows)
        tops = [(pos, (chosen.get(pos) or {}).get("sweep_at_top_ratio")) for pos in POSITIONS]
        tops = [(pos, t) for pos, t in tops if t]
        if tops:
            t0 = tops[0][1]
            draws = ((res.get("settings") or {}).get("sweep") or {}).get("random_draws")
            kept = plural(t0.get("kept_dims"), "dim") + " kept"
            lines.append(f"sweep     top ratio {t0.get('ratio'):g} ({kept}), chosen layer: value dims vs random dims "
                         f"(mean of {draws} draws)")
            rows = [["position", "layer", "value", "random", "value-random", "95% CI", ""]]
            for pos, t in tops:
                d = t.get("value_minus_random") or {}
                verdict = ("value dims ahead" if excludes(d.get("ci95"), 0) and (d.get("delta") or 0) > 0
                           else "random dims ahead" if excludes(d.get("ci95"), 0) else "CI includes 0")
                rows.append([POSITION_SHORT[pos], str((chosen.get(pos) or {}).get("layer")),
                             f3(t.get("value_dims_auroc")), f3(t.get("random_dims_auroc")), signed(d.get("delta")),
                             ci_text(d.get("ci95"), 3, sign=True), verdict])
            lines += _columns(rows)
    for path in transfer_files(run_dir):
        t = load_json(path) or {}
        means = (t.get("summary") or {}).get("iou_by_ratio_mean_over_layers") or {}
        pruned = {float(k): v for k, v in means.items() if float(k) > 0}
        if pruned:
            top = max(pruned)
            m = pruned[top]
            lines.append(f"transfer  vs {path.stem}: mean IoU over layers at ratio {top:g} "
                         f"{f3(m.get('mean_iou'))} (random {f3(m.get('mean_random_iou_expected'))})")
    ablation = load_json(run_dir / "ablate" / "results.json")
    if ablation:
        s = ablation["summary"]
        base = s["unablated_accuracy"]
        lines.append(f"ablate    unablated accuracy {f3(base['value'])} {ci_text(base['ci95'])} on {s['problems']} "
                     f"held-out problems; {s['significant_after_holm']} of {s['family_size']} paired tests survive Holm")
        rows = [["layer", "fraction", "arm", "accuracy", "minus unablated", "95% CI", "Holm"]]
        for layer, slots in ablation["table"].items():
            for slot, cells in slots.items():
                for arm, c in cells.items():
                    d = c["minus_unablated"]
                    rows.append([layer, slot, arm, f3(c["accuracy"]["value"]), signed(d["delta"]),
                                 ci_text(d["ci95"], 3, sign=True), "yes" if d.get("holm_significant") else "no"])
        lines += _columns(rows)
        control = s.get("positive_control")
        if control:
            lines.append(f"          positive control: control-token rate {f3(control['unablated_token_rate'])} "
                         f"unablated, {f3(control['control_token_rate'])} with its direction removed, "
                         f"{f3(control['random_directions_token_rate'])} with random directions")
    return "\n".join(lines)
