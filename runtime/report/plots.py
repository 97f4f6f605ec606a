"""The report's plots as PNG bytes: loss by step, and tokens per example against max_length.

matplotlib draws on its Agg canvas from a Figure of its own (never pyplot's global state) in matplotlib's default
style, whatever a matplotlibrc says, and writes no "Software" tag: the same numbers give the same bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

DPI = 100
SIZE = (8.0, 3.6)  # inches: 800 x 360 pixels
TRAIN_COLOR, VALIDATION_COLOR, LIMIT_COLOR = "#1f77b4", "#ff7f0e", "#d62728"
HISTOGRAM_BARS = 40
MARKERS_UP_TO = 30  # points drawn as markers too, so that a short run's few points show


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _style():
    """matplotlib's defaults, whatever a matplotlibrc says; held while drawing and while saving."""
    import matplotlib.style

    return matplotlib.style.context("default")


def _figure():
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    return figure, figure.add_subplot()


def pixel_size() -> tuple[int, int]:
    return round(SIZE[0] * DPI), round(SIZE[1] * DPI)


def loss_curves(train: Sequence[tuple[int, float]], validation: Sequence[tuple[int, float]], max_steps: int | None) -> bytes:
    """Training and validation loss against the step they were logged at."""
    with _style():
        return _loss_curves(train, validation, max_steps)


def _loss_curves(train, validation, max_steps) -> bytes:
    from matplotlib.ticker import MaxNLocator

    figure, ax = _figure()
    for points, label, color, marker in ((train, "train", TRAIN_COLOR, "o"), (validation, "validation", VALIDATION_COLOR, "s")):
        if points:
            steps, losses = zip(*points)
            ax.plot(steps, losses, label=f"{label} loss", color=color, marker=marker if len(points) <= MARKERS_UP_TO else None, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if max_steps:
        ax.set_xlim(0, max_steps * 1.04)  # room for the markers of the last step
    ax.margins(y=0.15)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return _png(figure)


def length_histogram(split: str, lengths: Sequence[int], max_length: int) -> bytes:
    """How many examples have how many tokens, with max_length drawn as a dashed line."""
    with _style():
        return _length_histogram(split, lengths, max_length)


def _length_histogram(split, lengths, max_length) -> bytes:
    from matplotlib.ticker import MaxNLocator

    figure, ax = _figure()
    upper = max([max_length, *lengths])
    width = max(1, -(-upper // HISTOGRAM_BARS))
    edges = list(range(0, upper + width + 1, width))  # the last bar holds `upper`
    ax.hist(lengths, bins=edges, color=TRAIN_COLOR if split == "train" else VALIDATION_COLOR, edgecolor="white", linewidth=0.5)
    ax.axvline(max_length, color=LIMIT_COLOR, linestyle="--", linewidth=1.5, label=f"max_length {max_length}")
    ax.set_title(f"{split}: {len(lengths):,} examples", loc="left", fontsize=10)
    ax.set_xlabel("tokens per example")
    ax.set_ylabel("examples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, edges[-1] + width)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="best")
    return _png(figure)


def reward_curves(series: dict[str, Sequence[tuple[int, float]]], max_steps: int | None) -> bytes:
    """GRPO's and RLOO's rewards against the step they were logged at: the weighted total, and each reward's mean."""
    with _style():
        from matplotlib.ticker import MaxNLocator

        figure, ax = _figure()
        for name, points in series.items():
            if points:
                steps, values = zip(*points)
                total = name == "reward"
                ax.plot(steps, values, label="total (weighted)" if total else name, linewidth=2.2 if total else 1.2, marker="o" if len(points) <= MARKERS_UP_TO else None, markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward of the sampled completions")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if max_steps:
            ax.set_xlim(0, max_steps * 1.04)
        ax.margins(y=0.15)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
        return _png(figure)
