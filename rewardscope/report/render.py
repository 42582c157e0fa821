"""write_report: one self-contained HTML file (figures embedded as base64 PNG) plus the PNGs beside it.

Nothing in the HTML is fetched: no script, no CDN, no web font (a system font stack), every image a data: URI.
"""

from __future__ import annotations

import base64
import datetime
import traceback
import warnings
from pathlib import Path

from rewardscope.errors import RewardscopeError
from rewardscope.io import atomic_path, write_text
from rewardscope.report.core import Figure, Section, Table, esc, load_json, load_yaml, table_html
from rewardscope.report.style import DISPLAY_DPI, SAVE_DPI

CSS = """
:root { --fg: #1d1d1f; --muted: #666; --line: #ddd; --note: #fff6e0; --note-line: #e0b050; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fafafa;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 64px; background: white; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 21px; margin: 40px 0 8px; border-bottom: 2px solid var(--line);
  padding-bottom: 4px; } h3 { font-size: 16px; margin: 20px 0 6px; }
p { margin: 8px 0; max-width: 78ch; }
.muted { color: var(--muted); }
nav { font-size: 14px; margin: 8px 0 16px; } nav a { margin-right: 16px; }
.notes { background: var(--note); border-left: 4px solid var(--note-line); padding: 8px 14px; margin: 12px 0; }
.notes p { margin: 4px 0; }
.error { background: #fdecea; border-left: 4px solid #d9534f; padding: 8px 14px; }
figure { margin: 22px 0; } figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 13.5px; color: #333; margin-top: 6px; max-width: 100ch; }
figcaption b { color: var(--fg); }
table.data { border-collapse: collapse; font-size: 13.5px; margin: 6px 0 4px; }
table.data th, table.data td { border-bottom: 1px solid var(--line); padding: 3px 10px; }
table.data th { background: #f3f3f3; text-align: center; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; } td.txt { text-align: left; }
td .chosen { background: #f6efb0; padding: 0 3px; }
.tablecap { font-size: 13.5px; color: #333; margin: 18px 0 2px; max-width: 100ch; }
.scroll { overflow-x: auto; }
details { margin: 8px 0; } summary { cursor: pointer; color: #0b5cab; }
pre, code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 13px; }
pre { background: #f5f5f5; padding: 8px 12px; overflow-x: auto; }
pre.cmds { white-space: pre-wrap; overflow-wrap: anywhere; } pre.cmds .c { color: #777; }
table.facts td { padding: 2px 14px 2px 0; vertical-align: top; border: none; } table.facts td:first-child { color: var(--muted); white-space: nowrap; }
"""


def figures_dir(out: Path) -> Path:
    """Where the PNGs of report `out` go: <out without suffix>/figures (run_dir/report/figures by default)."""
    return out.with_suffix("") / "figures"


def write_report(run_dir: Path, out: Path | None = None, *, strict: bool = False) -> Path:
    """Write the HTML report of `run_dir` to `out` (default run_dir/report.html) and its figures as PNG files
    under figures_dir(out); returns `out`. One section per entry of SECTIONS whose artifacts exist. A section
    that fails is shown as an error box (with a warning) unless `strict`, which raises."""
    from rewardscope.report import SECTIONS  # read at call time: stages register theirs by adding to it

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RewardscopeError(f"{run_dir}: no such run directory")
    out = Path(out) if out is not None else run_dir / "report.html"
    from rewardscope.stages import STAGES

    # The registry's stages first, in pipeline order, then sections of commands outside it (transfer).
    order = [s.report for s in STAGES.values() if s.report in SECTIONS]
    order += [key for key in SECTIONS if key not in order]
    sections: list[Section] = []
    for key in order:
        fn = SECTIONS[key]
        try:
            sec = fn(run_dir)
        except Exception as e:  # noqa: BLE001 - one broken artifact should not cost the whole report
            if strict:
                raise
            warnings.warn(f"report section {key!r} failed: {type(e).__name__}: {e}", stacklevel=2)
            sec = Section(f"{key} (failed)", notes=[f"This section could not be built: {type(e).__name__}: {e}"],
                          paragraphs=[traceback.format_exc(limit=3)], failed=True)
        if sec is None:
            continue
        sec.key = key
        sections.append(sec)

    fig_dir = figures_dir(out)
    fig_dir.mkdir(parents=True, exist_ok=True)
    written = set()
    for sec in sections:
        for fig in sec.figures:
            name = f"{sec.key}-{fig.name}.png"
            with atomic_path(fig_dir / name) as tmp:
                tmp.write_bytes(fig.png)
            written.add(name)
    for stale in fig_dir.glob("*.png"):  # figures of sections that no longer exist
        if stale.name not in written:
            stale.unlink()
    write_text(out, render_html(run_dir, sections, fig_dir, out))
    return out


# ---------------------------------------------------------------------------------------------------------
# HTML


def _png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _figure_html(sec: Section, fig: Figure, number: int, fig_dir: Path, out: Path) -> str:
    w, h = _png_size(fig.png)
    width = fig.width_px or round(w * DISPLAY_DPI / SAVE_DPI)
    data = base64.b64encode(fig.png).decode("ascii")
    try:
        rel = (fig_dir / f"{sec.key}-{fig.name}.png").relative_to(out.parent)
    except ValueError:
        rel = fig_dir / f"{sec.key}-{fig.name}.png"
    return (f'<figure id="fig-{esc(sec.key)}-{esc(fig.name)}"><img src="data:image/png;base64,{data}" '
            f'width="{width}" alt="{esc(fig.alt or fig.name)}">'
            f"<figcaption><b>Figure {number}.</b> {esc(fig.caption)} "
            f'<span class="muted">({esc(rel)})</span></figcaption></figure>')


def _table_html(table: Table) -> str:
    body = f'<div class="scroll">{table.html}</div>'
    cap = f'<p class="tablecap">{esc(table.caption)}</p>'
    if table.collapsed:
        return f"<details><summary>{esc(table.caption.split('. ')[0])} (click to expand)</summary>{cap}{body}</details>"
    return cap + body


def _section_html(sec: Section, start: int, fig_dir: Path, out: Path) -> tuple[str, int]:
    parts = [f'<section id="{esc(sec.key)}"><h2>{esc(sec.title)}</h2>']
    if sec.notes:
        cls = "error" if sec.failed else "notes"
        parts.append(f'<div class="{cls}">' + "".join(f"<p>{esc(n)}</p>" for n in sec.notes) + "</div>")
    for p in sec.paragraphs:
        if sec.failed:
            parts.append(f"<pre>{esc(p)}</pre>")
        else:
            parts.append(f"<p>{esc(p)}</p>")
    for t in sec.tables:
        if t.lead:
            parts.append(_table_html(t))
    n = start
    for fig in sec.figures:
        n += 1
        parts.append(_figure_html(sec, fig, n, fig_dir, out))
    for t in sec.tables:
        if not t.lead:
            parts.append(_table_html(t))
    parts.append("</section>")
    return "".join(parts), n


def render_html(run_dir: Path, sections: list[Section], fig_dir: Path, out: Path) -> str:
    import rewardscope

    head = header_html(run_dir)
    nav = "".join(f'<a href="#{esc(s.key)}">{esc(s.title)}</a>' for s in sections)
    body, n = [], 0
    for sec in sections:
        html, n = _section_html(sec, n, fig_dir, out)
        body.append(html)
    if not sections:
        body.append('<div class="notes"><p>No stage has written results in this run directory yet '
                    "(rollout/rollouts/summary.json, probe/results.json, transfer/*.json).</p></div>")
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>rewardscope report: {esc(run_dir.name)}</title><style>{CSS}</style></head><body><main>"
        f'{head}<nav><a href="#run">Run</a>{nav}</nav>{"".join(body)}'
        f'<p class="muted" style="margin-top:40px">Written by rewardscope {esc(rewardscope.__version__)} '
        f"on {esc(when)}. Figures: {esc(fig_dir)}</p></main></body></html>"
    )


# ---------------------------------------------------------------------------------------------------------
# header: the run, its sizes, how to reproduce it


def _defaults() -> dict | None:
    try:
        from rewardscope.config import Recipe

        return Recipe().to_dict()
    except Exception:  # noqa: BLE001 - the header only loses its "changed from the defaults" table
        return None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def header_html(run_dir: Path) -> str:
    cfg = load_yaml(run_dir / "config.yaml") or {}
    results = load_json(run_dir / "results.json") or {}
    model, data, rollout = cfg.get("model") or {}, cfg.get("data") or {}, cfg.get("rollout") or {}
    facts: list[tuple[str, str]] = [("run directory", str(run_dir.resolve()))]
    capture = load_json(run_dir / "capture" / "metadata.json") or {}
    fp = capture.get("model_fingerprint") or (load_json(run_dir / "rollout" / "rollouts" / "recipe.json") or {}).get(
        "model_fingerprint")
    m = model.get("name") or capture.get("model") or "?"
    if model.get("revision"):
        m += f" @ {model['revision']}"
    if capture.get("num_layers"):
        m += f"; {capture['num_layers']} layers, hidden size {capture.get('hidden_size')}"
    if fp:
        m += f"; weights {fp}"
    facts.append(("model", m))
    ds = data.get("dataset") or "?"
    for key in ("variant", "hf_id", "hf_config", "split", "path"):
        if data.get(key) not in (None, "", "default") or (key == "variant" and data.get(key) == "default"
                                                          and data.get("dataset") == "organism"):
            ds += f", {key} {data[key]}"
    for key in ("n_problems", "limit", "seed"):
        if data.get(key) is not None:
            ds += f", {key} {data[key]}"
    facts.append(("dataset", ds))
    ro = results.get("rollout") or load_json(run_dir / "rollout" / "rollouts" / "summary.json") or {}
    if ro:
        facts.append(("rollouts", f"{ro.get('n_problems')} problems x {rollout.get('n', '?')} = "
                                  f"{ro.get('n_rollouts')} rollouts; temperature {rollout.get('temperature')}, "
                                  f"top-p {rollout.get('top_p')}, max {rollout.get('max_new_tokens')} new tokens"))
    if capture:
        facts.append(("captured states", f"{capture.get('n_rows')} rows x {len(capture.get('layers') or [])} "
                                         f"layers ({capture.get('positions')} positions, {capture.get('dtype')})"))
    probe = load_json(run_dir / "probe" / "results.json") or {}
    split = probe.get("split") or {}
    if split:
        parts = [f"{name} {split[name].get('problems')} problems ({split[name].get('rollouts')} rollouts)"
                 for name in ("train", "validation", "held_out") if isinstance(split.get(name), dict)]
        facts.append(("split", f"by {split.get('by', 'problem')}, split seed {split.get('split_seed')}: "
                               + ", ".join(parts)))
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in facts)
    cfg_path = run_dir.resolve() / "config.yaml"
    stages = cfg.get("stages") or []
    cmds = [f"# the whole run: every stage the recipe names ({', '.join(stages)}); finished stages are skipped",
            f"rewardscope run {cfg_path}"]
    from rewardscope.stages import closure

    per_stage = [s.name for s in closure(stages)] if stages else []
    if per_stage:
        cmds.append("# or stage by stage")
        cmds += [f"rewardscope {s} {cfg_path}" for s in per_stage]
    transfers = []
    for t in sorted((run_dir / "transfer").glob("*.json")) if (run_dir / "transfer").is_dir() else []:
        tj = load_json(t) or {}
        if tj.get("run_a") and tj.get("run_b"):
            transfers.append(f"rewardscope transfer {tj['run_a']} {tj['run_b']}")
    if transfers:
        cmds += ["# transfer to the other runs (each needs its own finished run)"] + transfers
    cmds += ["# this report",
             f'python -c "from rewardscope.report import write_report; write_report(\'{run_dir.resolve()}\')"']
    parts = ['<header id="run">', f"<h1>rewardscope report: {esc(run_dir.name)}</h1>",
             f'<table class="facts">{rows}</table>']
    if cfg:
        lines = [f'<span class="c">{esc(c)}</span>' if c.startswith("#") else esc(c) for c in cmds]
        parts.append('<h3>Reproduce</h3><pre class="cmds">' + "\n".join(lines) + "</pre>")
        parts.append('<p class="muted">config.yaml is the resolved recipe; the run directory name hashes every '
                     "key that can change a result, so the same recipe lands in the same directory and finished "
                     "stages are skipped.</p>")
        defaults = _defaults()
        if defaults is not None:
            flat, dflat = _flatten(cfg), _flatten(defaults)
            changed = [(k, v, dflat.get(k, "(not a default key)")) for k, v in flat.items()
                       if k not in ("out_dir",) and dflat.get(k, object()) != v]
            if changed:
                parts.append("<details><summary>Settings that differ from the defaults "
                             f"({len(changed)})</summary>"
                             + table_html(["key", "this run", "default"],
                                          [[k, repr(v) if isinstance(v, str) and not v.strip() else v, d]
                                           for k, v, d in changed], numeric_from=9) + "</details>")
        parts.append("<details><summary>config.yaml</summary><pre>"
                     + esc((run_dir / "config.yaml").read_text(encoding="utf-8")) + "</pre></details>")
    else:
        parts.append('<p class="muted">No config.yaml in this run directory: the commands that produced it are '
                     "unknown.</p>")
    parts.append("</header>")
    return "".join(parts)


__all__ = ["write_report", "figures_dir", "render_html"]
