"""``serving.loop``: the bench's loop is uvloop where uvloop imports, asyncio's own where it does not."""

from __future__ import annotations

import asyncio
import builtins
import sys

import pytest

from polyserve.serving.loop import loop_factory, run


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not a dependency on Windows")
def test_run_uses_uvloop_where_it_is_installed() -> None:
    assert run(_loop_module()).startswith("uvloop")


def test_run_falls_back_to_asyncio_when_uvloop_cannot_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def no_uvloop(name: str, *a: object, **k: object) -> object:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real(name, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert loop_factory() is None
    assert run(_loop_module()).startswith("asyncio")


def test_run_returns_the_coroutines_result_and_raises_its_error() -> None:
    async def ok() -> int:
        await asyncio.sleep(0)
        return 7

    async def bad() -> None:
        raise ValueError("from the coroutine")

    assert run(ok()) == 7
    with pytest.raises(ValueError, match="from the coroutine"):
        run(bad())
