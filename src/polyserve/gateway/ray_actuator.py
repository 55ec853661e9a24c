"""``RayEngineActuator``: the policy's scale actions carried out on Ray actors (``polyserve up --backend ray``).

The mirror of ``LocalEngineActuator`` with engine actors instead of engine processes, and the same contract
(``actuator.Actuator``): ``activate`` makes sure the server's engine runs (a new actor when it has none),
``deactivate`` with ``stop_idle`` stops the actor of a server released to the idle pool, and ``supervise``
(every scrape round) replaces the engine of a wanted server whose actor died: ``ray.kill``, a crash, its
node lost. The handle's ``alive()`` is a zero-timeout ``ray.wait`` on the actor's serving call
(``polyserve.engine.ray_actor``), so supervision never blocks the event loop. Until the replacement serves,
the scraper has marked the server dead (it refuses connections), so nothing is routed to it; the new
actor serves on a new URL, which the actuator writes into the server's ``Backend``.

The gateway does not import the engine: ``launch(sid)`` (blocking, run in a worker thread) is handed in by
``polyserve up``, which knows each server's engine config; ``shutdown`` releases the Ray connection (and a
local Ray that ``up`` started) after the last actor is stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from polyserve.gateway.actuator import LocalEngineActuator
from polyserve.gateway.backend import Backend


class RayEngineActuator(LocalEngineActuator):
    def __init__(
        self,
        backends: list[Backend],
        launch: Callable[[int], object],
        engines: dict[int, object] | None = None,
        *,
        stop_idle: bool = True,
        shutdown: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(backends, launch, engines, stop_idle=stop_idle)
        self._shutdown = shutdown

    async def aclose(self) -> None:
        await super().aclose()
        self._release()

    def close_sync(self) -> None:
        super().close_sync()
        self._release()

    def _release(self) -> None:
        if self._shutdown is not None:
            with contextlib.suppress(Exception):
                self._shutdown()
            self._shutdown = None
