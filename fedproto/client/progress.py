"""Progress display for remote fits: a rich progress bar in a terminal, nothing elsewhere."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from fedproto.types import FitProgressEvent

__all__ = ["FitProgressBar", "FitProgressCallback", "wants_bar"]

#: Called with each progress event of a fit.
FitProgressCallback = Callable[[FitProgressEvent], None]


def wants_bar(progress: bool | FitProgressCallback | None) -> bool:
    """Whether to draw a bar: asked for explicitly, or by default when stderr is a terminal."""
    if progress is None:
        return sys.stderr.isatty()
    return progress is True


class FitProgressBar:
    """A context manager whose ``update`` method is a fit progress callback drawing a bar per epoch."""

    def __init__(self, label: str, epochs: int = 0) -> None:
        self.label = label
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} batches"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self._task: TaskID | None = None
        self._epoch = 0

    def __enter__(self) -> FitProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, event: FitProgressEvent) -> None:
        """Show one progress event."""
        if self._task is None or event.epoch != self._epoch:
            self._epoch = event.epoch
            self._task = self._progress.add_task(
                f"{self.label} epoch {event.epoch}", total=event.batches_per_epoch, loss=event.running_loss
            )
        self._progress.update(self._task, completed=event.batch, loss=event.running_loss)
