"""Figures of the run report: one function per figure, each a grid of panels drawn by `draw`.

A band is ``(mean, low, high)`` over a frame grid ``x``; a variant keeps one colour in every
figure. matplotlib's object API on the Agg canvas is used, so no global pyplot state.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Optional, Sequence

import numpy as np

MAX_PNG_BYTES = 140_000
Band = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclasses.dataclass
class Line:
    color: str
    band: Band
    label: Optional[str] = None
    style: str = "-"


@dataclasses.dataclass
class Panel:
    title: str
    x: np.ndarray
    lines: list[Line]
    ylabel: str = ""
    xlabel: str = "frames"
    switches: Sequence[tuple[int, str]] = ()  # (frames, game) of sequential game switches
    name_switches: bool = False
    empty: str = "no data"


def _scale(top: float) -> tuple[float, str]:
    return next(((s, f" ({u})") for s, u in ((1e6, "M"), (1e3, "k")) if top >= s), (1.0, ""))


def _draw_line(ax, x: np.ndarray, line: Line) -> None:
    mean, low, high = line.band
    ok, bounded = np.isfinite(mean), np.isfinite(low) & np.isfinite(high)
    if bounded.sum() >= 2:
        ax.fill_between(x, np.where(bounded, low, np.nan), np.where(bounded, high, np.nan),
                        color=line.color, alpha=0.18, lw=0)
    elif bounded.sum() == 1:
        ax.errorbar(x[bounded], mean[bounded], yerr=[mean[bounded] - low[bounded],
                    high[bounded] - mean[bounded]], color=line.color, capsize=3)
    ax.plot(x, mean, color=line.color, lw=1.4, ls=line.style, label=line.label,
            marker="o" if ok.sum() == 1 else None, ms=4)


def draw(path: str, panels: list[Panel], ncols: int, size: tuple[float, float],
         dpi: int) -> str:
    """Draws `panels` row by row into the PNG `path`; one legend, on the first panel with
    labelled lines. A figure over MAX_PNG_BYTES is saved again at a lower resolution."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, p in zip(axes, panels):
        scale, unit = _scale(max([np.max(p.x, initial=0)] + [f for f, _ in p.switches]))
        for line in p.lines:
            _draw_line(ax, p.x / scale, line)
        if not any(np.isfinite(line.band[0]).any() for line in p.lines):
            ax.text(0.5, 0.5, p.empty, ha="center", va="center", transform=ax.transAxes)
        for frames, game in p.switches:
            ax.axvline(frames / scale, color="0.55", lw=0.6, ls=":")
            if p.name_switches:
                ax.text(frames / scale, 1.0, f" {game}", transform=ax.get_xaxis_transform(),
                        fontsize=6, rotation=90, va="top", color="0.35")
        ax.ticklabel_format(axis="y", useOffset=False)  # small changes read as values
        ax.set_title(p.title, fontsize=9)
        ax.set_xlabel(p.xlabel + unit, fontsize=8)
        ax.set_ylabel(p.ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    labelled = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if labelled:
        labelled[0].legend(fontsize=7, loc="best")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    if os.path.getsize(path) > MAX_PNG_BYTES:
        fig.savefig(path, dpi=int(dpi * (0.9 * MAX_PNG_BYTES / os.path.getsize(path)) ** 0.5))
    return path


def curves(path: str, game: str, x: np.ndarray, summaries: dict, colors: dict[str, str],
           ylabel: str, dpi: int) -> str:
    """Return vs frames of one game, a band per variant (report_stats.Summary); a thin dashed
    line continues the mean of the runs that went further than the shortest."""
    lines = [Line(colors[v], s.band, f"{v} (n={len(s.reached)})") for v, s in summaries.items()]
    lines += [Line(colors[v], (s.partial,) * 3, style="--") for v, s in summaries.items()]
    return draw(path, [Panel(game, x, lines, ylabel)], 1, (5.0, 3.2), dpi)


def aggregate(path: str, x: np.ndarray, bands: dict[str, dict[str, Band]],
              colors: dict[str, str], num_games: int, dpi: int) -> str:
    """Median and IQM of human-normalized scores over frames, a band per variant."""
    return draw(path, [Panel(f"{name} HNS ({num_games} games)", x,
                             [Line(colors[v], b[key], v) for v, b in bands.items()],
                             "human-normalized score")
                       for key, name in (("median", "Median"), ("iqm", "IQM"))],
                2, (4.4, 3.1), dpi)


def diagnostics(path: str, x: np.ndarray, panels: dict[str, list[dict[str, Band]]],
                colors: dict[str, str], switches, dpi: int) -> str:
    """Training diagnostics: per panel title, bands by variant of one quantity (solid) or
    two (solid, dashed)."""
    return draw(path, [Panel(title, x, [Line(colors[v], b, None if k else v, ("-", "--")[k])
                                        for k, bands in enumerate(quantities)
                                        for v, b in bands.items()], switches=switches)
                       for title, quantities in panels.items()], 3, (3.6, 2.7), dpi)


def elr_layers(path: str, x: np.ndarray, layers: dict[str, dict[str, Band]],
               colors: dict[str, str], switches, dpi: int) -> str:
    """log10 of the effective learning rate logged, one panel per layer."""
    return draw(path, [Panel(layer, x, [Line(colors[v], b, v) for v, b in bands.items()],
                             "log10 ELR", switches=switches) for layer, bands in layers.items()],
                min(3, len(layers)), (3.4, 2.5), dpi)


def sequence(path: str, title: str, x: np.ndarray, bands: dict[str, Band],
             counts: dict[str, int], colors: dict[str, str], switches, ylabel: str,
             dpi: int) -> str:
    """Sequential runs from frame 0 to their end, game switches marked and named."""
    lines = [Line(colors[v], b, f"{v} (n={counts[v]})") for v, b in bands.items()]
    return draw(path, [Panel(title, x, lines, ylabel, switches=switches, name_switches=True)],
                1, (7.0, 3.2), dpi)


def visits(path: str, games: dict[str, tuple[np.ndarray, dict]], colors: dict[str, str],
           dpi: int) -> str:
    """Each game's visits aligned at the switch into it, a band per (variant, visit)
    Summary: first visit solid, second dashed, later ones dotted."""
    return draw(path, [Panel(g, x, [Line(colors[v], s.band, f"{v} v{visit}",
                                         {1: "-", 2: "--"}.get(visit, ":"))
                                    for (v, visit), s in summaries.items()], "training return",
                             "frames since switch", empty="no episode finished\nwithin a visit")
                       for g, (x, summaries) in games.items()],
                min(3, len(games)), (3.3, 2.4), dpi)
