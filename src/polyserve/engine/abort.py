"""``AbortableInstance``: the simulator's ``Instance`` plus ``abort(req)``, for clients that go away.

A live engine must free a request's seat and KV cache when its client disconnects (vLLM aborts it in the
scheduler). The simulator never needs that, so the instance model has no ``abort``; this subclass adds one
without touching the model's accounting:

- a request still **waiting** (new, or preempted and queued for recompute) holds no KV: it leaves the queue at
  once;
- a request in the **running batch** (prefilling or decoding) is part of the iteration in flight, whose token
  and KV counts were fixed when it was planned. Removing it mid-iteration would corrupt them, so it is marked
  and dropped at the next iteration boundary, before the next plan: exactly where a preemption would remove
  it, with the same bookkeeping (``_leave_decode`` / releasing the prefilled chunk). Its seat and KV are free
  for the very next iteration; the iteration in flight still counts it (it was computed).

Tokens the request emits in that last iteration reach the host's callbacks as usual; the host drops them.
Coupling: this relies on ``Instance._plan_next`` being the one place that plans an iteration, and on the
preemption helpers' accounting; the instance tests of both must keep passing together.
"""

from __future__ import annotations

import contextlib
import heapq

from polyserve.sim.instance import Instance
from polyserve.sim.request import DECODING, DONE, NEW, PREFILLING, WAITING, SimRequest


class AbortableInstance(Instance):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._aborted: list[SimRequest] = []
        self.aborts = 0

    def abort(self, req: SimRequest) -> None:
        """Remove ``req`` from this instance: now if it waits, at the next iteration boundary if it runs.

        Idempotent; a finished request is left alone.
        """
        if req.state == DONE:
            return
        self.aborts += 1
        if req.state in (NEW, WAITING):
            self._remove_waiting(req)
            req.state = DONE
        elif req.state in (PREFILLING, DECODING):
            self._aborted.append(req)

    @property
    def pending_aborts(self) -> int:
        """Aborted requests still in the iteration in flight (gone at its end)."""
        return len(self._aborted)

    def _remove_waiting(self, req: SimRequest) -> None:
        if self._edf:
            for i, entry in enumerate(self._wheap):
                if entry[2] is req:
                    self._wheap[i] = self._wheap[-1]
                    self._wheap.pop()
                    heapq.heapify(self._wheap)
                    return
        else:
            with contextlib.suppress(ValueError):
                self.waiting.remove(req)

    def _drop_aborted(self) -> None:
        for req in self._aborted:
            if req.state == DECODING and self.decoding.get(req.rid) is req:
                self._leave_decode(req)
            elif req.state == PREFILLING and req in self.prefilling:
                self.prefilling.remove(req)
                self.kv_used -= req.prefilled
                req.prefilled = 0
            elif req.state == WAITING:  # preempted since it was marked
                self._remove_waiting(req)
            else:
                continue  # finished in the last iteration
            req.state = DONE
        self._aborted.clear()

    def _plan_next(self, now: int) -> None:
        if self._aborted:
            self._drop_aborted()
        super()._plan_next(now)
