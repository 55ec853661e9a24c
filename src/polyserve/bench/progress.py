"""The live progress line of ``polyserve bench`` (rich, on stderr; only when stderr is a terminal)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from polyserve.bench.runner import Progress


class ProgressLine:
    """``with ProgressLine(console) as line: run(progress=line.update)``; a no-op when not enabled."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self._state: Progress | None = None
        self._t0 = time.monotonic()
        self._live: Live | None = None

    def __rich__(self) -> Text:
        s = self._state
        elapsed = time.monotonic() - self._t0
        if s is None:
            return Text(f"bench: connecting ... {elapsed:.1f} s")
        done = s.completed + s.failed
        att = f"{s.attained / done:.1%}" if done else "-"
        return Text(
            f"bench: sent {s.sent}/{s.total}  completed {s.completed}  failed {s.failed}  "
            f"in flight {s.sent - done}  attained {s.attained} ({att})  {elapsed:.1f} s"
        )

    def update(self, state: Progress) -> None:
        self._state = state

    def __enter__(self) -> ProgressLine:
        if self.enabled:
            self._t0 = time.monotonic()
            self._live = Live(self, console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None
