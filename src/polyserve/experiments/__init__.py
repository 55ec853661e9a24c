"""Experiments on the simulator: one run (``runner``), a goodput search (``goodput``), a policy comparison
(``compare``). The wiring from specs (CLI flags, the Python API) to simulations and their reports."""
