"""Headless figures of a grid (matplotlib's Agg canvas, no pyplot): loss curves, bars, attention maps.

Every function draws measured run records only and writes one PNG; a variant keeps its colour in every figure.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from gptlab.files import write_if_changed
from gptlab.record import RunRecord
from gptlab.stats import Summary

DPI = 110
LABEL_WIDTH = 26  # characters per line of a variant name in a legend or on an axis
MAX_TICK_CHARS = 32  # label a heatmap's axes with the prompt's characters up to this length

Color = tuple[float, float, float, float]
Curve = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # steps, mean, min, max


def variant_colors(names: Sequence[str]) -> dict[str, Color]:
    """One fixed colour per variant, in grid order."""
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def wrap(name: str) -> str:
    return "\n".join(textwrap.wrap(name, LABEL_WIDTH)) or name


def save(fig: Figure, path: Path) -> Path:
    """Render to PNG and write it only if the image changed (matplotlib's PNGs carry no date)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    write_if_changed(path, buffer.getvalue())
    return path


def error(summary: Summary) -> float:
    """The error bar: std over seeds, 0 for a single seed."""
    return 0.0 if math.isnan(summary.std) else summary.std


def mean_curve(runs: Sequence[RunRecord]) -> Curve:
    """Steps evaluated in every run, and the mean, min and max val loss over the runs at those steps."""
    by_step = [{row["step"]: row["val_loss"] for row in run.history} for run in runs]
    common = sorted(set.intersection(*(set(losses) for losses in by_step)))
    losses = np.array([[run[step] for step in common] for run in by_step])
    return np.array(common), losses.mean(axis=0), losses.min(axis=0), losses.max(axis=0)


def loss_curves(runs_by_variant: dict[str, list[RunRecord]], colors: dict[str, Color], labels: dict[str, str],
                bold: str, dashed: set[str], path: Path) -> Path:
    """Two panels. Top: val loss against step, mean over seeds as a line, min-max over seeds as a band. Bottom:
    each variant's mean minus the baseline's over the second half of training, where curves that lie within
    a few hundredths of each other on top come apart; a variant far off that scale is clipped and labelled."""
    fig = Figure(figsize=(8, 7.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 2])
    curves = {name: mean_curve(runs) for name, runs in runs_by_variant.items()}
    floor, start = math.inf, -math.inf
    for name, (steps, mean, low, high) in curves.items():
        # the bold line goes underneath, so a variant with the same curve still shows on top of it
        top.plot(steps, mean, color=colors[name], label=wrap(labels[name]), linewidth=4 if name == bold else 1.6,
                 alpha=0.7 if name == bold else 1.0, linestyle="--" if name in dashed else "-",
                 zorder=1.5 if name == bold else 2)
        top.fill_between(steps, low, high, color=colors[name], alpha=0.2, linewidth=0)
        floor = min(floor, float(low.min()))
        start = max(start, float(mean[1] if len(mean) > 1 else mean[0]))
    # The first evaluation (untrained, ~ln(vocab)) would squash the part that differs: start the axis below it.
    top.set_ylim(floor - 0.05 * (start - floor), start + 0.05 * (start - floor))
    top.set_ylabel("validation loss")
    top.set_title("Validation loss: mean over seeds, band = min to max")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    difference_panel(bottom, curves, colors, bold, dashed)
    return save(fig, path)


def difference_panel(ax: Any, curves: dict[str, Curve], colors: dict[str, Color], bold: str,
                     dashed: set[str]) -> None:
    """Mean val loss minus the baseline's mean, at the steps both evaluated, over the second half of training."""
    if bold not in curves:
        ax.set_axis_off()
        return
    base = dict(zip(curves[bold][0].tolist(), curves[bold][1].tolist()))
    last = max(base)
    differences: dict[str, np.ndarray] = {}
    for name, (steps, mean, _, _) in curves.items():
        pairs = [(s, m - base[s]) for s, m in zip(steps.tolist(), mean.tolist()) if s in base and s >= last / 2]
        if pairs:
            differences[name] = np.array(pairs)
    finals = sorted(abs(float(d[-1, 1])) for d in differences.values())
    typical = finals[len(finals) // 2] if finals else 0.0
    scale = max([f for f in finals if f <= 4 * typical] or [0.01]) * 1.3 or 0.01
    for name, points in differences.items():
        ax.plot(points[:, 0], points[:, 1].clip(-scale, scale), color=colors[name],
                linewidth=3 if name == bold else 1.6, linestyle="--" if name in dashed else "-")
        final = float(points[-1, 1])
        if abs(final) > scale:
            ax.annotate(f"{final:+.3f} (off scale)", (points[-1, 0], math.copysign(scale, final)), fontsize=8,
                        color=colors[name], ha="right", va="top" if final > 0 else "bottom")
    ax.set_ylim(-scale, scale)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("minus the baseline")
    ax.set_title("Second half of training: mean val loss minus the baseline's (lower is better)", fontsize=10)
    ax.grid(alpha=0.3)


def bar_chart(ranked: list[tuple[str, Summary]], colors: dict[str, Color], labels: dict[str, str],
              fmt: str) -> tuple[Figure, Any, list[Summary]]:
    """A figure of horizontal bars in the given order (first on top) with std error bars (none for one seed)
    and each mean written beside its bar; returns the figure, its axes and the summaries."""
    fig = Figure(figsize=(8, 1.2 + 0.45 * len(ranked)))
    ax = fig.add_subplot()
    names, summaries = [n for n, _ in ranked], [s for _, s in ranked]
    y = np.arange(len(names))[::-1]
    errors = [error(s) for s in summaries]
    means = [s.mean for s in summaries]
    ax.barh(y, means, color=[colors[n] for n in names], alpha=0.85)
    spread = [i for i, s in enumerate(summaries) if s.n > 1]  # one seed has no spread: no bar drawn for it
    if spread:
        ax.errorbar([means[i] for i in spread], y[spread], xerr=[errors[i] for i in spread], fmt="none",
                    ecolor="black", capsize=4, linewidth=1)
    ax.set_yticks(y, [wrap(labels[n]) for n in names])
    for yi, mean, err in zip(y, means, errors):
        ax.annotate(format(mean, fmt), (mean + err, yi), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig, ax, summaries


def final_loss_bars(ranked: list[tuple[str, Summary]], colors: dict[str, Color], labels: dict[str, str],
                    path: Path) -> Path:
    """Final val loss per variant in the grid's order, error bar = std over seeds; the axis is zoomed, not from 0."""
    fig, ax, summaries = bar_chart(ranked, colors, labels, ".3f")
    low = min(s.mean - error(s) for s in summaries)
    high = max(s.mean + error(s) for s in summaries)
    margin = max(0.1 * (high - low), 0.01)
    left = low - 3 * margin
    left = 0.0 if left < low / 2 else left  # zoom in only where the bars would otherwise look alike
    ax.set_xlim(left, high + 3 * margin)
    note = f" (axis starts at {left:.2f})" if left > 0 else ""
    ax.set_xlabel(f"final validation loss, lower is better{note}")
    ax.set_title(bars_title("Final validation loss", summaries))
    return save(fig, path)


def bars_title(what: str, summaries: list[Summary]) -> str:
    if all(s.n == 1 for s in summaries):
        return f"{what}: one seed each (no error bars)"
    return f"{what}: mean over seeds, error bar = std over seeds"


def throughput_bars(ranked: list[tuple[str, Summary]], colors: dict[str, Color], labels: dict[str, str],
                    path: Path) -> Path:
    """Training throughput per variant in the grid's order, error bar = std over seeds, axis from 0."""
    fig, ax, summaries = bar_chart(ranked, colors, labels, ",.0f")
    ax.set_xlim(0, 1.2 * max(s.mean + error(s) for s in summaries))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_xlabel("training tokens per second, higher is faster (evaluation time excluded)")
    ax.set_title(bars_title("Throughput", summaries))
    return save(fig, path)


def attention_grid(maps: list[tuple[str, dict[str, Any]]], labels: dict[str, str], path: Path) -> Path:
    """One heatmap per variant: a head's attention (row = query position, column = key position) on one prompt."""
    columns = min(3, len(maps))
    rows = math.ceil(len(maps) / columns)
    fig = Figure(figsize=(3.6 * columns + 0.8, 3.6 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    image = None
    for ax, (name, attention) in zip(axes, maps):
        weights = np.array(attention["weights"], dtype=float)
        image = ax.imshow(weights, cmap="viridis", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0))
        ax.set_title(wrap(labels[name]), fontsize=10)
        chars = [repr(c)[1:-1] or " " for c in attention["prompt"][: len(weights)]]
        if len(chars) <= MAX_TICK_CHARS:
            ticks = range(len(chars))
            ax.set_xticks(ticks, chars, fontsize=8, family="monospace")
            ax.set_yticks(ticks, chars, fontsize=8, family="monospace")
        ax.set_xlabel("key (attended to)", fontsize=9)
        ax.set_ylabel("query", fontsize=9)
    for ax in axes[len(maps):]:
        ax.set_axis_off()
    first = maps[0][1]
    prompt = repr(first["prompt"][:40]) + (" ..." if len(first["prompt"]) > 40 else "")
    fig.suptitle(f"Attention of layer {first.get('layer', 0)}, head {first.get('head', 0)} on {prompt}", fontsize=11)
    assert image is not None
    fig.colorbar(image, ax=list(axes[: len(maps)]), shrink=0.8, label="attention weight (square-root scale)")
    return save(fig, path)
