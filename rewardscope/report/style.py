"""One look for every figure: colours, fonts and sizes, and PNG rendering without pyplot.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas directly (no pyplot, no global backend
switch), inside `rc_context(STYLE)`, so importing the report never changes a user's matplotlib state.

Sizes: figures are designed at their display size, DISPLAY_DPI pixels per inch (a 10.5 in figure is shown
1050 px wide), and saved at SAVE_DPI for sharp text; the HTML shows each image at its design width, so an
11 pt font reads as about 15 px on a laptop screen.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from typing import Iterator

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

DISPLAY_DPI = 100
SAVE_DPI = 200
WIDTH_IN = 10.5  # the HTML's content column is 1100 px

# Okabe-Ito (colour-blind safe); each concept keeps its colour in every figure.
COLORS = {
    "TD(0)": "#0072B2",  # blue
    "Monte-Carlo": "#E69F00",  # orange
    "other": "#009E73",  # green: any other TD(lambda)
    "value": "#D55E00",  # vermillion: top-ranked (value) dims
    "random": "#6E6E6E",  # grey: the random-dims control
    "masked": "#CC79A7",  # pink: full probe, other inputs masked
    "chance": "#404040",
    "chosen": "#ECECEC",  # light grey band: the layer chosen on validation problems
}

POSITION_LABELS = {"s0": "s\u2080 (before generation)", "step_end": "step ends", "last": "last token"}
POSITION_SHORT = {"s0": "s\u2080", "step_end": "step ends", "last": "last token"}

STYLE = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same glyphs on every machine
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 13,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#E3E3E3",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "lines.linewidth": 1.8,
    "lines.markersize": 7,
    "legend.frameon": False,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    "svg.fonttype": "none",
}


def label_color(label: str) -> str:
    return COLORS.get(label, COLORS["other"])


@contextmanager
def styled() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(width: float = WIDTH_IN, height: float = 4.0) -> MplFigure:
    """A figure on the Agg canvas; call inside `styled()`."""
    fig = MplFigure(figsize=(width, height), dpi=DISPLAY_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: MplFigure) -> bytes:
    """PNG bytes at SAVE_DPI, without the 'Software' metadata (it holds a URL)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=SAVE_DPI, metadata={"Software": None})
    return buf.getvalue()
