"""The house style of every figure: palette, markers, font sizes, resolution and the widest
picture the Dagster UI shows uncut.

- `PALETTE`: ten qualitative colours, Okabe and Ito's eight colour-blind-safe colours (black
  as dark grey) plus two of Paul Tol's (wine, grey); `MARKERS`: ten filled markers. Charts with
  one line or bar per method pair the two (`method_style`), so methods stay apart in black and
  white too; each method keeps one slot in every chart (`METHOD_SLOTS`).
- Fonts: `FONT_MIN` pt is the smallest text anywhere (tick labels, legends, captions); `FONT`
  for axis labels, `FONT_TITLE` for titles, at `DPI` dots per inch, so 8 pt is 12 px.
- `MAX_WIDTH_IN`: figures are laid out at most this wide (`MAX_WIDTH_IN * DPI` = 1,100 px).
  The UI shows a long markdown metadata value in a dialog of at most 80 % of the window's width
  with 20 px of padding on either side, and an image in it at its own size, scrolled, not
  shrunk (`MetadataEntryDialogAction` in dagster-webserver 1.13's ui-core): 1,112 px on a
  1,440-px-wide window. Wide content goes into rows.
- `save`: the one way a figure is written: the Agg canvas (no pyplot state), the figure's own
  size (no tight bounding box, so what the layout places is what is saved), PNG at `DPI`.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["DPI", "FONT", "FONT_MIN", "FONT_TITLE", "MARKERS", "MAX_HEIGHT_IN", "MAX_WIDTH_IN", "METHOD_SLOTS", "PALETTE",
           "colour", "method_style", "new_figure", "save"]

DPI = 110
MAX_WIDTH_IN = 10.0
MAX_HEIGHT_IN = 30.0
FONT_MIN = 8.0
FONT = 9.0
FONT_TITLE = 10.0
SEQUENTIAL = "viridis"  # heatmaps of one sign (0 .. 1)
DIVERGING = "RdBu_r"  # signed values centred at 0

PALETTE = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#56B4E9",  # sky blue
    "#CC79A7",  # reddish purple
    "#F0E442",  # yellow
    "#333333",  # black (as dark grey)
    "#882255",  # wine
    "#AAAAAA",  # grey
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", "h")


def colour(index: int) -> str:
    """The palette's colour number `index` (cycling)."""
    return PALETTE[index % len(PALETTE)]


#: A fixed colour and marker slot per concept-scoring method, so a method looks the same in every
#: chart: the paper's method and its main variants get the strongest colours, yellow goes to an
#: ablation baseline.
METHOD_SLOTS = {"www": 0, "www_gradcam_tvmf": 1, "www_tvmf": 2, "clip_dissect": 3, "www_gradcam": 4,
                "template_only": 5, "l2": 6, "cosine": 7, "no_template": 8, "l1": 9}


def method_style(method: str, index: int = 0) -> dict:
    """Colour and marker of `method` (its slot; an unknown method takes slot `index`)."""
    slot = METHOD_SLOTS.get(method, index)
    return {"color": PALETTE[slot % len(PALETTE)], "marker": MARKERS[slot % len(MARKERS)]}


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A bare figure of at most `MAX_WIDTH_IN` x `MAX_HEIGHT_IN` inches with the house fonts."""
    figure = Figure(figsize=(min(width, MAX_WIDTH_IN), min(height, MAX_HEIGHT_IN)), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: str | Path) -> Path:
    """Write `figure` as PNG at `DPI` (folders created) and return the path. A figure made wider
    than `MAX_WIDTH_IN` elsewhere is saved at a lower resolution, so it still fits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    width = figure.get_figwidth()
    dpi = DPI if width <= MAX_WIDTH_IN else DPI * MAX_WIDTH_IN / width
    figure.savefig(path, format="png", dpi=dpi)
    return path
