"""Progress bars for long work (rich), which callers can switch off."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def track(total: int, description: str, *, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Show a progress bar of ``total`` steps; yields ``advance(n=1, **fields)``.

    With ``enabled=False``, or when the output is neither a terminal nor a notebook (a log
    file, where a live bar cannot redraw and would leave only blank lines), nothing is printed
    and ``advance`` does nothing.
    """
    console = Console()
    if not enabled or not (console.is_terminal or console.is_jupyter):
        yield lambda n=1, **fields: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total, status="")

        def advance(n: int = 1, **fields: object) -> None:
            progress.update(task, advance=n, **fields)

        yield advance
