"""Figures of runs: one run's accuracy per round (accuracy.png) and several runs compared
(comparison.png).

Round 0 is the evaluation before any training, far below every later round: an axis that
holds it leaves the rounds that tell methods apart as one flat line. So each figure also
shows the later rounds on an axis of their own (`later_range`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from flayer.util.atomic import write_atomic  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from flayer.results.statistics import Curve, GroupStats

# Curves needed to tell apart up to 20 groups: 10 colours, each once solid and once dashed.
STYLES = [(colour, dash) for dash in ("-", "--") for colour in (f"C{i}" for i in range(10))]
ZOOM_FROM = 4  # groups from which comparison.png's second panel zooms on the leading half
TICK_STEPS = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)
MAX_TICKS = 11


def round_ticks(first: int, last: int) -> list[int]:
    """Round numbers for the x axis, from `first` to `last` and never past it: every round,
    or every k-th with `last` itself at the end."""
    span = max(1, last - first)
    step = next((s for s in TICK_STEPS if span / s <= MAX_TICKS - 1), TICK_STEPS[-1])
    ticks = list(range(first + (-first) % step, last + 1, step)) or [first]
    if ticks[-1] != last:
        if last - ticks[-1] < step / 2 and len(ticks) > 1:
            ticks[-1] = last
        else:
            ticks.append(last)
    return ticks


def set_rounds(ax: Axes, first: int, last: int) -> None:
    """The x axis spans the rounds first..last, ticked by `round_ticks`."""
    pad = max(0.3, (last - first) * 0.03)
    ax.set_xlim(first - pad, last + pad)
    ax.set_xticks(round_ticks(first, last))
    ax.set_xlabel("round")


def later_range(values: Sequence[float], margin: float = 0.15) -> tuple[float, float]:
    """An accuracy range that holds `values` with a margin, within [0, 1]; at least two
    points wide, so that a flat curve stays readable."""
    low, high = float(min(values)), float(max(values))
    pad = max((high - low) * margin, 0.01)
    return max(0.0, low - pad), min(1.0, high + pad)


def _save(fig: Figure, out: Path) -> None:
    try:  # all or nothing: a reader (or a stop) never meets half a PNG
        write_atomic(out, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)


# ---- accuracy.png: one run --------------------------------------------------------------------

def _accuracy_panel(ax: Axes, ev: list[dict[str, Any]], zoom: bool) -> None:
    """Sample-weighted accuracy, the mean over clients and its ± std band (clipped to
    [0, 1]), the best round marked; `zoom`: the rounds after round 0 only, on their own
    range."""
    if zoom:
        ev = [r for r in ev if r["round"] > 0]
    x = np.array([r["round"] for r in ev])
    acc = np.array([r["accuracy"] for r in ev], dtype=float)
    mean = np.array([r["accuracy_mean"] for r in ev], dtype=float)
    std = np.array([r["accuracy_std"] for r in ev], dtype=float)
    ax.fill_between(x, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), alpha=0.18,
                    color="C0", linewidth=0, label="mean ± std across clients")
    ax.plot(x, acc, color="C0", marker=".", label="accuracy (sample-weighted)")
    ax.plot(x, mean, color="C1", linestyle="--", label="mean over clients")
    new = [r for r in ev if r.get("new_accuracy", "") != ""]
    if new:  # clients never seen in training, at the rounds they were evaluated
        ax.plot([r["round"] for r in new], [r["new_accuracy"] for r in new], color="C2",
                marker="s", markersize=4, label="new clients (sample-weighted)")
        acc_range = np.concatenate([acc, [r["new_accuracy"] for r in new]])
    else:
        acc_range = acc
    best = int(np.argmax(acc))
    ax.plot(x[best], acc[best], marker="*", markersize=14, color="C3", linestyle="none",
            label=f"best: {100 * acc[best]:.2f}% (round {x[best]})")
    first = 0 if not zoom else int(x[0])
    set_rounds(ax, first, int(x[-1]))
    if zoom:
        ax.set_ylim(*later_range(np.concatenate([acc_range, mean])))
        ax.set_title("after round 0", fontsize="medium")
    else:
        ax.set_ylim(0, 1.02)
        ax.set_title("all rounds (0: before training)", fontsize="medium")
        ax.set_ylabel("personalized test accuracy")
        ax.legend(loc="lower right", fontsize="small")  # below the curves, once trained
    ax.grid(alpha=0.3)


def plot_run(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    """Personalized accuracy per round (sample-weighted, and the mean ± std across clients)
    over all rounds and, where two or more rounds after round 0 were evaluated, zoomed on
    them; then the train loss."""
    ev = [r for r in rows if r["accuracy"] != ""]
    zoom = sum(1 for r in ev if r["round"] > 0) >= 2
    fig, axes = plt.subplots(1, 3 if zoom else 2, figsize=(15 if zoom else 10, 4.2))
    ax, bx = axes[0], axes[-1]
    if ev:
        _accuracy_panel(ax, ev, zoom=False)
        if zoom:
            _accuracy_panel(axes[1], ev, zoom=True)
    else:  # e.g. every evaluation failed: say so on the plot, not with an empty legend
        ax.text(0.5, 0.5, "no evaluated round", ha="center", va="center",
                transform=ax.transAxes)
    tr = [r for r in rows if r["train_loss"] != ""]
    if tr:
        bx.plot([r["round"] for r in tr], [r["train_loss"] for r in tr], marker=".")
        set_rounds(bx, int(tr[0]["round"]), int(tr[-1]["round"]))
    bx.set_ylabel("train loss")
    bx.set_title("train loss", fontsize="medium")
    bx.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)


# ---- comparison.png: several groups of runs ------------------------------------------------

def zoom_range(curves: list[Curve]) -> tuple[float, float]:
    """Accuracy range of the zoom panel: from a point below the median final accuracy to just
    above the highest curve, so that the leading half of the methods fills the panel."""
    finals = sorted(c.mean[-1] for c in curves)
    low = finals[len(finals) // 2] - 0.01
    high = max(max(c.high) for c in curves) + 0.005
    return max(0.0, low), min(1.0, high)


def plot_groups(stats: list[GroupStats], out: Path, title: str) -> None:
    """Accuracy per round, one curve per group (mean over seeds) in the order given (the
    table's), the seed spread shaded, under `title`. A second panel shows the second half of
    the rounds on its own accuracy range; from ZOOM_FROM groups on, on the leading half of the
    groups, where the personalized methods sit close together."""
    drawn = [(g, g.curve) for g in stats if g.curve is not None]
    curves = [c for _, c in drawn]
    last = max((c.rounds[-1] for c in curves), default=0)
    half = max(1, last // 2)
    later = [m for c in curves for r, m in zip(c.rounds, c.mean, strict=True) if r >= half]
    two = len(drawn) >= ZOOM_FROM or len({r for c in curves for r in c.rounds if r > 0}) >= 2
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(14 if two else 8, 5.5),
                             squeeze=False)
    panels = list(axes[0])
    for ax in panels:
        for i, (g, curve) in enumerate(drawn):
            colour, dash = STYLES[i % len(STYLES)]
            ax.plot(curve.rounds, curve.mean, color=colour, linestyle=dash,
                    label=f"{g.label} (n={len(g.runs)})")
            if len(g.runs) > 1:
                ax.fill_between(curve.rounds, curve.low, curve.high, color=colour, alpha=0.2)
        set_rounds(ax, 0, last)
        ax.grid(alpha=0.3)
    panels[0].set_ylabel("personalized test accuracy")
    if two:
        leading = len(drawn) >= ZOOM_FROM
        panels[1].set_ylim(*(zoom_range(curves) if leading else later_range(later)))
        set_rounds(panels[1], half, last)
        panels[1].set_title(("leading half, " if leading else "") + "second half of the rounds",
                            fontsize="medium")
    if drawn:
        panels[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:  # say so rather than draw an empty legend
        panels[0].text(0.5, 0.5, "no evaluated round", ha="center", va="center",
                       transform=panels[0].transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)
