"""A sweep's pictures and report, beside its leaderboard:

    parallel.png   every trial as a line across its searched values and the metric
    curves.png     each trial's validation curve; a trial ASHA stopped ends early
    report.md      the leaderboard with both pictures

`write_all` takes the leaderboard rows (searched values, metric, `status`, `curve`); both
sweeps call it.
"""

from __future__ import annotations

import math
import os

from ..core.io import atomic_write, save_text


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; set here, not at import time
    import matplotlib.pyplot as plt

    return plt


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def axis_positions(values: list) -> tuple[list[float], list[str], list[float]]:
    """Values of one axis → positions in [0, 1], tick labels and tick positions: numbers on a
    linear or (spanning 100× or more, all positive) log scale; anything else as categories."""
    if all(_finite(v) for v in values):
        lo, hi = min(values), max(values)
        log = lo > 0 and hi / lo >= 100
        f = (lambda v: math.log10(v)) if log else (lambda v: v)  # noqa: E731
        span = (f(hi) - f(lo)) or 1.0
        pos = [(f(v) - f(lo)) / span if hi > lo else 0.5 for v in values]
        return pos, [f"{lo:.3g}", f"{hi:.3g}"], ([0.0, 1.0] if hi > lo else [0.5, 0.5])
    names = sorted({str(v) for v in values})
    where = {n: (i / (len(names) - 1) if len(names) > 1 else 0.5) for i, n in enumerate(names)}
    return [where[str(v)] for v in values], names, [where[n] for n in names]


def plot_parallel(rows: list[dict], keys: list[str], metric: str, label: str, path: str) -> str | None:
    """One line per trial with a finite metric, across the searched values and the metric,
    coloured by the metric (lower: darker)."""
    done = [r for r in rows if _finite(r.get(metric))]
    if not done:
        return None
    plt = _pyplot()
    columns = [*keys, metric]
    placed = [axis_positions([r.get(c) for r in done]) for c in columns]
    scores = [r[metric] for r in done]
    lo, hi = min(scores), max(scores)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(1.9 * len(columns) + 1.5, 4.2), dpi=100)
    for i, r in enumerate(done):
        shade = (r[metric] - lo) / (hi - lo) if hi > lo else 0.0
        ax.plot(range(len(columns)), [p[0][i] for p in placed], "o-", color=cmap(shade), alpha=0.85,
                label=f"{r['trial']} ({_num(r[metric])})")
    for x, (_, ticks, where) in enumerate(placed):
        ax.axvline(x, color="0.6", linewidth=0.8)
        for text, y in zip(ticks, where, strict=True):
            ax.annotate(text, (x, y), xytext=(4, 0), textcoords="offset points", fontsize=8, va="center")
    ax.set_xticks(range(len(columns)), [*keys, label], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(f"{len(done)} trials: searched values and {label}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(plt, fig, path)


def plot_curves(rows: list[dict], path: str, ylabel: str = "val/loss (nats/token)") -> str | None:
    """Every trial's validation curve by epoch; a trial stopped early (ASHA) ends early, dashed."""
    traced = [r for r in rows if r.get("curve")]
    if not traced:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for r in traced:
        epochs, values = zip(*r["curve"], strict=True)
        ax.plot(epochs, values, "o-" if r.get("status") != "STOPPED" else "o--", markersize=3,
                label=f"{r['trial']} {r.get('status', '').lower()}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("validation curves", fontsize=10)
    return _save(plt, fig, path)


def _num(value) -> str:
    return f"{value:.4g}" if _finite(value) else str(value)


def _save(plt, fig, path: str) -> str:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def write_all(folder: str, name: str, rows: list[dict], keys: list[str], metric: str, label: str) -> list[str]:
    """parallel.png, curves.png (where there is something to draw) and report.md in `folder`."""
    pictures = [p for p in (plot_parallel(rows, keys, metric, label, os.path.join(folder, "parallel.png")),
                            plot_curves(rows, os.path.join(folder, "curves.png"))) if p]
    best = next((r for r in rows if _finite(r.get(metric))), None)
    lines = [f"# Sweep {name}", "",
             f"{len(rows)} trials over {', '.join(keys)}; {label}, lower is better."
             + (f" Best: trial {best['trial']}, {_num(best[metric])}." if best else " No trial reported it."), ""]
    lines += [f"![{os.path.basename(p)[:-4]}]({os.path.basename(p)})" for p in pictures]
    board = os.path.join(folder, "leaderboard.md")
    if os.path.exists(board):
        with open(board, encoding="utf-8") as f:
            lines += ["", "## Leaderboard", "", f.read().rstrip()]
    return [*pictures, save_text(os.path.join(folder, "report.md"), "\n".join(lines) + "\n")]
