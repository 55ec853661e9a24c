"""Experiments on the simulator: one run (``runner``), a goodput search (``goodput``), a policy comparison
(``compare``). The wiring from specs (CLI flags, the Python API) to simulations and their reports.

Where the simulations run: ``executor`` (the ``Executor`` protocol: inline, a local process pool, or Ray via
``ray_executor``); ``speculation`` lists the rates a sequential goodput search may ask for next, so idle
workers can run them ahead without changing any result."""
