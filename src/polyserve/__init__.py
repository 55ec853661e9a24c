"""PolyServe: serve LLM requests with many latency SLOs on one shared GPU fleet.

After "PolyServe: Efficient Multi-SLO Serving at Scale" (Zhu et al., arXiv 2507.17769).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
