"""The leaderboard's figures as PNG bytes: validation curves, gains over the baseline, and gains
per superclass. Matplotlib's Agg backend: no display needed, in a pod or a test.
"""

from __future__ import annotations

import io
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kd_data.cifar100 import COARSE_LABEL_NAMES  # noqa: E402
from kd_results.records import BASELINE, TEACHER, label  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def plot_curves(records: list[dict]) -> bytes:
    """Validation accuracy per epoch of each label, mean over trials with a ± std band."""
    figure, axes = plt.subplots(figsize=(8, 5))
    groups: dict[str, list[list[float]]] = {}
    for record in records:
        if "failure" not in record:
            groups.setdefault(label(record), []).append(record["val_accuracy_curve"])
    for name, curves in groups.items():
        length = min(len(c) for c in curves)
        values = 100 * np.array([c[:length] for c in curves])
        epochs = np.arange(1, length + 1)
        mean, std = values.mean(axis=0), values.std(axis=0)
        # A one-epoch curve is a single point: draw it as a marker, or it is invisible.
        axes.plot(epochs, mean, label=name, linewidth=2.2 if name in (TEACHER, BASELINE) else 1.4,
                  marker="o" if length == 1 else None)
        axes.fill_between(epochs, mean - std, mean + std, alpha=0.15)
    axes.set(xlabel="epoch (main stage)", ylabel="validation top-1 accuracy (%)",
             title="Validation accuracy per epoch (mean ± std over trials)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    return _png(figure)


def plot_gains(rows: list[dict]) -> bytes:
    """Top-1 gain over the baseline per method (± std over trials), from aggregated rows."""
    students = [row for row in rows if "gain" in row]
    figure, axes = plt.subplots(figsize=(8, 4))
    gains = [100 * row["gain"] for row in students]
    axes.bar([row["label"] for row in students], gains, yerr=[100 * row["gain_std"] for row in students],
             color=["tab:green" if g >= 0 else "tab:red" for g in gains], capsize=4)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set(ylabel="top-1 gain over baseline (points)", title="Gain over the undistilled student")
    axes.tick_params(axis="x", rotation=30)
    return _png(figure)


def plot_superclass_gains(records: list[dict]) -> bytes:
    """Superclass x method heatmap of top-1 gains, mean over trials."""
    compared = [r for r in records if "superclass_gain" in r]
    methods = sorted({r["method"] for r in compared})
    if not methods:  # e.g. every student diverged: the report still has the figure, saying why it is empty
        figure, axes = plt.subplots(figsize=(6, 2))
        axes.text(0.5, 0.5, "no student was evaluated against its baseline", ha="center", va="center")
        axes.set_axis_off()
        return _png(figure)
    matrix = np.array([[100 * statistics.fmean(r["superclass_gain"].get(k, np.nan) for r in compared
                                               if r["method"] == method)
                        for method in methods] for k in range(len(COARSE_LABEL_NAMES))])
    limit = max(np.nanmax(np.abs(matrix)), 1e-9)
    figure, axes = plt.subplots(figsize=(1.0 + 0.9 * len(methods), 7))
    image = axes.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    axes.set_xticks(range(len(methods)), methods, rotation=40, ha="right")
    axes.set_yticks(range(len(COARSE_LABEL_NAMES)), COARSE_LABEL_NAMES, fontsize=8)
    figure.colorbar(image, ax=axes, label="top-1 gain over baseline (points)")
    axes.set_title("Gain per superclass")
    return _png(figure)
