"""The discrete-event simulator: the instance model (``instance``: continuous batching, chunked prefill, KV,
preemption, aborts), the cluster (``cluster``: the virtual-clock host of ``polyserve.control.FleetDriver``),
its configuration (``config``), requests (``request``) and the work bound (``bound``)."""
