"""Figure helpers shared by the studies (matplotlib ``Figure`` objects, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

CLASS_COLOURS = ("#1f77b4", "#d62728")


def figure(
    ncols: int = 1, nrows: int = 1, *, width: float = 5.0, height: float = 4.2, **kwargs
) -> tuple[Figure, np.ndarray]:
    """A new figure with an array of axes (always 2-D: ``axes[row, col]``)."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def plane(
    ax,
    values: Tensor,
    lim: float,
    *,
    x: Tensor | None = None,
    y: Tensor | None = None,
    curves: Sequence[Tensor] = (),
    title: str = "",
    cmap: str = "viridis",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    label: str = "P(class 1)",
    square: float | None = 1.0,
    boundary: bool = True,
    max_points: int = 600,
):
    """Draw a ``[G, G]`` map over ``[-lim, lim]^2`` (row 0 at the bottom) with overlays.

    ``x, y``: data points and labels; ``curves``: reference polylines ``[P, 2]`` (the true
    boundary); ``square``: half-width of the training domain outline; ``boundary``: draw the
    0.5 contour of ``values``.
    """
    v = values.detach().cpu().numpy()
    extent = (-lim, lim, -lim, lim)
    im = ax.imshow(
        v, origin="lower", extent=extent, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
    )
    if boundary:
        g = np.linspace(-lim, lim, v.shape[0])
        ax.contour(g, g, v, levels=[0.5], colors="white", linewidths=1.2)
    for c in curves:
        c = c.detach().cpu().numpy()
        ax.plot(c[:, 0], c[:, 1], color="black", lw=1.2, ls="--")
    if x is not None and y is not None:
        xs, ys = x[:max_points].cpu().numpy(), y[:max_points].cpu().numpy()
        for k in np.unique(ys):
            sel = ys == k
            ax.scatter(
                xs[sel, 0],
                xs[sel, 1],
                s=5,
                c=CLASS_COLOURS[int(k) % 2],
                edgecolors="white",
                linewidths=0.3,
                label=f"class {int(k)}",
            )
    if square:
        ax.add_patch(
            Rectangle(
                (-square, -square), 2 * square, 2 * square, fill=False, ec="white", ls=":", lw=1
            )
        )
    ax.set(
        xlim=(-lim, lim),
        ylim=(-lim, lim),
        aspect="equal",
        title=title,
        xlabel="$x_0$",
        ylabel="$x_1$",
    )
    ax.figure.colorbar(im, ax=ax, shrink=0.8, label=label)
    return im


def curves(
    ax,
    series: dict[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "epoch",
    ylabel: str = "",
    logy: bool = False,
):
    """Line plot of named series against their index (1-based)."""
    for name, values in series.items():
        if len(values):
            ax.plot(np.arange(1, len(values) + 1), values, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def integer_ticks(ax, *, x: bool = True, y: bool = False) -> None:
    """Only whole-number ticks on the chosen axes (node indices, flip counts, seeds)."""
    from matplotlib.ticker import MaxNLocator

    if x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def shared_colorbar(fig, axes, mappable, label: str) -> None:
    """One colour bar for a grid of heat maps that share a colour scale."""
    fig.colorbar(mappable, ax=list(axes), shrink=0.6, label=label)
