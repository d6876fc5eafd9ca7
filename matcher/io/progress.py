"""Progress reporting without a terminal inside the library: long jobs (indexing, matching folders) call a
:data:`Progress` callback ``(stage, done, total)``; the command line and interactive callers turn that into
progress bars with :class:`ProgressBars` (tqdm, on stderr)."""
from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "ProgressBars", "no_progress"]

Progress = Callable[[str, int, int], None]  # (stage name, items done so far, items in total)


def no_progress(stage: str, done: int, total: int) -> None:
    """A :data:`Progress` that shows nothing."""


class ProgressBars:
    """A :data:`Progress` drawing one tqdm bar per stage (``unit`` items); call :meth:`close` at the end."""

    def __init__(self, unit: str = "img", enabled: bool = True) -> None:
        self.unit, self.enabled = unit, enabled
        self._bars: dict[str, object] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(total=total, desc=stage, unit=self.unit, leave=True)
        bar.total = total  # type: ignore[attr-defined]
        bar.update(done - bar.n)  # type: ignore[attr-defined]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()  # type: ignore[attr-defined]
        self._bars.clear()
