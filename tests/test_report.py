"""The HTML report (rewardscope.report) on a small real run of the demo organism, plus a second run with another
probe seed and `transfer` between them: self-contained HTML, valid PNG figures, every image rendered by headless
Chromium, a full-page screenshot; summary_table on the same run; absent, partial, failing and null-result inputs."""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest

import rewardscope
from rewardscope.report import SECTIONS, Section, summary_table, write_report
from rewardscope.report import probe as probe_section

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--data.n_problems=40", "--rollout.n=4", "--probe.hidden=32", "--probe.epochs=4", "--probe.bootstrap=50",
         "--sweep.ratios=[0.0, 0.9]", "--sweep.random_draws=2",
         "--stages=[rollout, capture, probe]"]  # the ablate section's own test: tests/test_ablate_stage.py
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Run A (probe.seed 0) and run B (probe.seed 1, same split), and A/transfer/<B>.json. About 30 s."""
    out = tmp_path_factory.mktemp("report-runs")
    dirs = []
    for seed in (0, 1):
        recipe = rewardscope.load_recipe(REPO / "recipes" / "demo.yaml",
                                         SMALL + [f"--out_dir={out}", f"--probe.seed={seed}"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny held-out sets warn about one-class resamples
            dirs.append(rewardscope.run(recipe))
    from rewardscope.transfer import transfer_runs

    transfer_runs(dirs[0], dirs[1])
    return dirs[0], dirs[1]


@pytest.fixture(scope="module")
def report(runs) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no section may fail (that would be a warning)
        return write_report(runs[0], strict=True)


def _figures(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "report" / "figures").glob("*.png"))


def test_report_is_self_contained(runs, report):
    run_a, run_b = runs
    assert report == run_a / "report.html"
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"https?://", html), "the report must not reference any URL"
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs), refs
    assert "<script" not in html.lower() and "url(" not in html and "@import" not in html and "<link" not in html
    for key in ("rollout", "probe", "transfer"):
        assert f'<section id="{key}">' in html
    # every figure file is a valid PNG and is embedded, byte for byte
    from PIL import Image

    names = {p.name for p in _figures(run_a)}
    assert names == {"rollout-outcomes.png", "probe-auroc_by_layer.png", "probe-sweep_chosen_layer.png",
                     "probe-sweep_difference.png", "probe-sweep_all_layers.png",
                     f"transfer-iou_{run_b.name}.png"}
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == len(names)
    for path in _figures(run_a):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.size[0] >= 1000 and im.size[1] >= 400
        assert base64.b64encode(data).decode() in embedded
    # the header: model, dataset, sizes, split, the command that reproduces the run
    assert f"rewardscope run {run_a.resolve() / 'config.yaml'}" in html
    assert f"rewardscope transfer {run_a} {run_b}" in html
    assert "40 problems x 4 = 160 rollouts" in html
    res = json.loads((run_a / "probe" / "results.json").read_text())
    held = res["split"]["held_out"]
    assert f"held_out {held['problems']} problems ({held['rollouts']} rollouts)" in html
    # captions name n, the control and the CI
    assert "95% percentile bootstrap over held-out problems" in html and "Wilson" in html
    assert f"Held out: {held['problems']} problems, {held['rollouts']} rollouts" in html
    assert "Control: chance" in html and "random dims" in html and "expected IoU of two random sets" in html
    # the value-neuron table: every layer's top dim
    vn = json.loads((run_a / "probe" / "value_neurons.json").read_text())
    for layer, dims in vn["layers"].items():
        assert f'<td class="txt">{layer}</td><td class="num">{dims[0]["dim"]}</td>' in html


def test_report_renders_in_chromium(runs, report, tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("headless Chromium not found: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the test extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--window-size=1280,900", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(120)
        driver.get(report.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
        assert len(images) == len(_figures(runs[0]))
        assert all(complete and w > 0 and h > 0 for complete, w, h in images), images
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'));")
        assert fetched == [], f"the page fetched {fetched}"
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(1280, min(int(height) + 40, 30000))
        shot = tmp_path / "report-screenshot.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert shot.read_bytes().startswith(PNG_MAGIC)
    print(f"\nreport screenshot: {shot}")


def test_summary_table(runs):
    run_a = runs[0]
    text = summary_table(run_a)
    ro = json.loads((run_a / "rollout" / "rollouts" / "summary.json").read_text())
    lo, hi = ro["accuracy_ci95"]
    assert f"accuracy {ro['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] (95% Wilson CI over problems)" in text
    assert "n = 40 problems x 4 = 160 rollouts" in text
    res = json.loads((run_a / "probe" / "results.json").read_text())
    chosen = res["summary"]["chosen_layer"]
    lines = text.splitlines()
    for pos, name in (("s0", "s\u2080"), ("step_end", "step ends"), ("last", "last token")):
        c = chosen[pos]
        row = f"{c['auroc']:.3f}  [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"
        hits = [l for l in lines if l.strip().startswith(name) and row in l]
        assert len(hits) == 1, (pos, row, text)
        assert hits[0].split()[len(name.split())] == str(c["layer"])
        top = c["sweep_at_top_ratio"]
        d = top["value_minus_random"]
        sweep_row = (f"{top['value_dims_auroc']:.3f}  {top['random_dims_auroc']:.3f}   {d['delta']:+.3f}        "
                     f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
        assert any(l.strip().startswith(name) and sweep_row in l for l in lines), (sweep_row, text)
    assert "top ratio 0.9 (" in text and "mean of 2 draws" in text
    assert f"held out: {res['summary']['held_out']['problems']} problems" in text
    assert len(lines) <= 15 and max(map(len, lines)) <= 110


def test_empty_and_partial_run_dirs(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert all(fn(empty) is None for fn in SECTIONS.values())
    html = write_report(empty).read_text()
    assert "No stage has written results" in html
    assert "(no rollouts/summary.json)" in summary_table(empty) and "(no probe/results.json)" in summary_table(empty)
    with pytest.raises(rewardscope.RewardscopeError, match="no such run directory"):
        write_report(tmp_path / "missing")

    # rollouts only: one section, one figure; a figure left from an older report is removed
    partial = tmp_path / "partial"
    (partial / "rollout" / "rollouts").mkdir(parents=True)
    shutil.copy(runs[0] / "rollout" / "rollouts" / "summary.json", partial / "rollout" / "rollouts" / "summary.json")
    shutil.copy(runs[0] / "rollout" / "rollouts.parquet", partial / "rollout" / "rollouts.parquet")
    shutil.copy(runs[0] / "config.yaml", partial / "config.yaml")
    stale = partial / "report" / "figures" / "probe-auroc_by_layer.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    out = write_report(partial, tmp_path / "elsewhere" / "r.html")
    assert out == tmp_path / "elsewhere" / "r.html"
    assert [p.name for p in (tmp_path / "elsewhere" / "r" / "figures").glob("*.png")] == ["rollout-outcomes.png"]
    write_report(partial)
    assert [p.name for p in _figures(partial)] == ["rollout-outcomes.png"]
    html = (partial / "report.html").read_text()
    assert '<section id="rollout">' in html and '<section id="probe">' not in html
    assert "accuracy" in summary_table(partial) and "(no probe/results.json)" in summary_table(partial)


def test_null_result_reads_as_null(runs, tmp_path):
    """No Holm-significant cell and no value-dims advantage: captions and notes say so."""
    res = json.loads((runs[0] / "probe" / "results.json").read_text())
    null = copy.deepcopy(res)
    for table in null["auroc"].values():
        for cells in table.values():
            for cell in cells.values():
                cell["holm_significant"] = False
    for mc in null["multiple_comparisons"].values():
        mc["significant"] = 0
    for rows in null["sweep"].values():
        for row in rows:
            for d in row["value_minus_random"].values():
                d["delta"], d["ci95"] = 0.01, [-0.05, 0.07]
    for c in null["summary"]["chosen_layer"].values():
        c["holm_significant"] = False
        c["sweep_at_top_ratio"]["value_minus_random"] = {"delta": 0.01, "ci95": [-0.05, 0.07]}
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "results.json").write_text(json.dumps(null))
    sec = probe_section.section(tmp_path)
    by_name = {f.name: f.caption for f in sec.figures}
    assert "No cell of TD(0) or Monte-Carlo survives the correction" in by_name["auroc_by_layer"]
    assert "At no pruned ratio do the top-ranked dims beat random dims" in by_name["sweep_chosen_layer"]
    assert "No cell shows the top-ranked dims ahead of random ones" in by_name["sweep_difference"]
    notes = " ".join(sec.notes)
    assert "survives the Holm-Bonferroni correction" in notes and "includes 0" in notes
    assert "CI includes 0" in summary_table(tmp_path) and " no" in summary_table(tmp_path)


def test_sections_registry(runs, tmp_path, monkeypatch):
    """A later stage adds its section by adding a function; a failing one becomes an error box (or raises)."""
    run_a = runs[0]
    monkeypatch.setitem(SECTIONS, "extra", lambda run_dir: Section("Extra stage", paragraphs=["<b>hello</b>"]))
    out = write_report(run_a, tmp_path / "r.html")
    html = out.read_text()
    assert '<section id="extra"><h2>Extra stage</h2>' in html and "&lt;b&gt;hello&lt;/b&gt;" in html
    assert html.index('id="probe"') < html.index('id="extra"')

    def broken(run_dir):
        raise ValueError("bad artifact")

    monkeypatch.setitem(SECTIONS, "extra", broken)
    with pytest.warns(UserWarning, match="report section 'extra' failed: ValueError: bad artifact"):
        html = write_report(run_a, tmp_path / "r.html").read_text()
    assert 'class="error"' in html and '<section id="probe">' in html
    with pytest.raises(ValueError, match="bad artifact"):
        write_report(run_a, tmp_path / "r.html", strict=True)


def test_many_layers(runs, tmp_path):
    """A 28-layer run (the real results repeated): bands instead of whiskers, no small multiples (unreadable
    past 8 layers), heatmaps that grow with depth, long tables collapsed."""
    import warnings as w

    src = runs[0]
    res = json.loads((src / "probe" / "results.json").read_text())
    n = len(res["sweep"])
    for key in ("sweep", "td0_minus_monte_carlo", "training"):
        res[key] = {str(i): res[key][str(i % n)] for i in range(28)}
    for label in res["auroc"]:
        res["auroc"][label] = {str(i): res["auroc"][label][str(i % n)] for i in range(28)}
    vn = json.loads((src / "probe" / "value_neurons.json").read_text())
    vn["layers"] = {str(i): [{"dim": (7 * i + k) % 128, "rank": k, "score": 3.0 - k / 10} for k in range(4)]
                    for i in range(28)}
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "results.json").write_text(json.dumps(res))
    (tmp_path / "probe" / "value_neurons.json").write_text(json.dumps(vn))
    with w.catch_warnings():
        w.simplefilter("error")
        out = write_report(tmp_path, strict=True)
    names = sorted(p.name for p in _figures(tmp_path))
    assert names == ["probe-auroc_by_layer.png", "probe-sweep_chosen_layer.png", "probe-sweep_difference.png"]
    from PIL import Image

    with Image.open(tmp_path / "report" / "figures" / "probe-sweep_difference.png") as im:
        assert im.size[1] > 1500  # one row per layer
    html = out.read_text()
    assert "Bands: 95% percentile bootstrap" in html
    assert html.count("<details><summary>Value neurons") == 1  # 112 rows: collapsed
