"""Figures of the run report: `draw` lays out panels of mean curves with bands in one PNG.

A panel is a dict: 'title', 'x' (frames), 'lines' of ``(colour, band, label, style)`` with
band ``(3, T)`` mean, low, high; optional 'ylabel', 'xlabel' and 'switches' ((frames, game),
dotted lines, named with 'name_switches').
"""

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 90
STYLE = {"font.size": 7, "axes.titlesize": 9, "axes.grid": True, "grid.alpha": 0.3}


def _draw_panel(ax, panel: dict) -> None:
  switches = panel.get("switches", ())
  top = max([np.max(panel["x"], initial=0)] + [f for f, _ in switches])
  scale, unit = next(((s, f" ({u})") for s, u in ((1e6, "M"), (1e3, "k")) if top >= s), (1, ""))
  x = panel["x"] / scale
  for colour, (mean, low, high), label, style in panel["lines"]:
    ax.fill_between(x, low, high, color=colour, alpha=0.18, lw=0)
    marker = "o" if np.isfinite(mean).sum() == 1 else None  # a lone point shows as a dot
    ax.plot(x, mean, color=colour, lw=1.4, ls=style, label=label, marker=marker)
  if not any(np.isfinite(line[1][0]).any() for line in panel["lines"]):
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
  for frames, game in switches:
    ax.axvline(frames / scale, color="0.55", lw=0.6, ls=":")
    if panel.get("name_switches"):
      ax.text(frames / scale, 1, f" {game}", transform=ax.get_xaxis_transform(), rotation=90)
  ax.ticklabel_format(axis="y", useOffset=False)  # small changes read as values
  ax.set(title=panel["title"], xlabel=panel.get("xlabel", "frames") + unit)
  ax.set_ylabel(panel.get("ylabel", ""))


def draw(path: str, panels: list[dict], ncols: int) -> str:
  """Draws `panels` row by row into the PNG `path`, with one legend."""
  ncols = min(ncols, len(panels))
  nrows = -(-len(panels) // ncols)
  with matplotlib.rc_context(STYLE):
    fig = Figure(figsize=(max(4.0 * ncols, 6.0), 2.9 * nrows), layout="constrained")  # inches
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
      _draw_panel(ax, panel)
    for ax in axes[len(panels) :]:
      ax.set_visible(False)
    if labelled := [ax for ax in axes if ax.get_legend_handles_labels()[0]]:
      labelled[0].legend()
    fig.savefig(path, dpi=DPI)
  return path
