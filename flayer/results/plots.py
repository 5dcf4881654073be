"""Plots of runs (one run's accuracy per round; several runs compared)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from flayer.util.atomic import write_atomic  # noqa: E402


def plot_run(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    """Personalized accuracy per round (weighted, and mean +- std across clients)."""
    ev = [r for r in rows if r["accuracy"] != ""]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    if ev:
        x = [r["round"] for r in ev]
        mean = [r["accuracy_mean"] for r in ev]
        std = [r["accuracy_std"] for r in ev]
        ax.plot(x, [r["accuracy"] for r in ev], label="accuracy (sample-weighted)", marker=".")
        ax.plot(x, mean, label="mean over clients", linestyle="--")
        ax.fill_between(x, [m - s for m, s in zip(mean, std, strict=True)],
                        [m + s for m, s in zip(mean, std, strict=True)], alpha=0.2,
                        label="± std across clients")
        ax.legend(loc="lower right")
    else:  # e.g. every evaluation failed: say so on the plot, not with an empty legend
        ax.text(0.5, 0.5, "no evaluated round", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("round")
    ax.set_ylabel("personalized test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    tr = [r for r in rows if r["train_loss"] != ""]
    bx.plot([r["round"] for r in tr], [r["train_loss"] for r in tr], marker=".")
    bx.set_xlabel("round")
    bx.set_ylabel("train loss")
    bx.grid(alpha=0.3)
    for axis in (ax, bx):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    try:  # all or nothing: a reader (or a stop) never meets half a PNG
        write_atomic(out, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)
