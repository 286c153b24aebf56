"""Band figures: how every report draws its curves (the run report, the continual benchmark,
continual MinAtar, the twin), so they read alike and the drawing code exists once.

A figure is a grid of panels, each a dict with
- 'title', 'x' (1-D), 'lines': (colour, (mean, low, high), label, style[, x]) tuples; the
  band between low and high is shaded (None: no band); a line's own x, if given, replaces the
  panel's (runs of different lengths in one panel); a line with one finite point is a dot;
- optional 'xlabel' (a unit is appended when x reaches 1e3 or 1e6: '(k)', '(M)'), 'ylabel',
  'yscale' ('log'), 'switches' ((x, name) of dotted vertical lines, named if 'name_switches').
The first panel with labelled lines holds the figure's one legend, of every panel's labels.
"""

import matplotlib
import numpy as np
from matplotlib.figure import Figure

DPI = 90
PALETTE = "#1f77b4 #d62728 #2ca02c #ff7f0e #9467bd #8c564b #e377c2 #bcbd22 #17becf".split()
STYLE = {"font.size": 7, "axes.titlesize": 9, "axes.grid": True, "grid.alpha": 0.3}


@matplotlib.rc_context(STYLE)
def draw(path: str, panels: list[dict], ncols: int = 3, sharey_rows: bool = False) -> str:
  """Writes `panels` to the PNG `path` (`sharey_rows`: one y-scale per row); returns it."""
  ncols = min(ncols, len(panels))
  nrows = -(-len(panels) // ncols)
  fig = Figure(figsize=(max(4.0 * ncols, 6.0), 2.9 * nrows), layout="constrained")  # inches
  axes = []
  for i in range(len(panels)):
    row_start = axes[i - i % ncols] if sharey_rows and i % ncols else None
    axes.append(fig.add_subplot(nrows, ncols, i + 1, sharey=row_start))
  for ax, panel in zip(axes, panels):
    switches = panel.get("switches", ())
    xs = [panel["x"]] + [line[4] for line in panel["lines"] if len(line) > 4]
    top = max([np.max(x, initial=0) for x in xs] + [x for x, _ in switches])
    scale, unit = (1e6, " (M)") if top >= 1e6 else (1e3, " (k)") if top >= 1e3 else (1, "")
    for colour, (mean, low, high), label, style, *own_x in panel["lines"]:
      x = np.asarray(own_x[0] if own_x else panel["x"]) / scale
      if low is not None:
        ax.fill_between(x, low, high, color=colour, alpha=0.18, lw=0)
      marker = "o" if np.isfinite(mean).sum() == 1 else None
      ax.plot(x, mean, color=colour, lw=1.4, ls=style, label=label, marker=marker)
    if not any(np.isfinite(line[1][0]).any() for line in panel["lines"]):
      ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for at, name in switches:
      ax.axvline(at / scale, color="0.55", lw=0.6, ls=":")
      if panel.get("name_switches"):
        ax.text(at / scale, 1, f" {name}", transform=ax.get_xaxis_transform(), rotation=90)
    if panel.get("yscale"):
      ax.set_yscale(panel["yscale"])
    else:
      ax.ticklabel_format(axis="y", useOffset=False)  # small changes read as values
    ax.set(title=panel["title"], xlabel=panel.get("xlabel", "frames") + unit)
    ax.set_ylabel(panel.get("ylabel", ""))
  legend, first = {}, None  # label -> its first line; the first axes with a label
  for ax in axes:
    for line, label in zip(*ax.get_legend_handles_labels()):
      legend.setdefault(label, line)
      first = first or ax
  if first:
    first.legend(legend.values(), legend.keys())
  fig.savefig(path, dpi=DPI)
  return path
