"""PolyServe: serve LLM requests with many latency SLOs on one shared GPU fleet.

After "PolyServe: Efficient Multi-SLO Serving at Scale" (Zhu et al., arXiv 2507.17769).

Notebook API::

    import polyserve
    summary = polyserve.simulate("trace.csv", instances=32, rate=50, policy="round-robin")
    summary["attainment"], summary["tiers"]["t20"]["attainment"]
"""

__version__ = "0.1.0"


def simulate(*args, **kwargs):
    from polyserve.experiments.runner import simulate as _simulate

    return _simulate(*args, **kwargs)


simulate.__doc__ = "Run one simulation and return its summary dict; see polyserve.experiments.runner.simulate."

__all__ = ["__version__", "simulate"]
