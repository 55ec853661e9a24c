"""Core vocabulary shared by every face of PolyServe.

Reading guide:
- ``errors``   the typed exception tree (only the CLI turns them into exit codes);
- ``tiers``    SLO tiers (TPOT/TTFT targets) and the tier set requests are binned into;
- ``fleet``    the router's view of the fleet: per-server ledger, load index, idle pool, pending queues,
               requests (with their token deadlines), routing decisions and scale actions;
- ``registry`` name -> factory registries for pluggable parts (routers, schedulers, models);
- ``units``    the simulator's integer-nanosecond clock and conversions.

Nothing here imports from other polyserve packages; ``policy/`` may import only this package.
"""

from polyserve.core.errors import (
    ConfigError,
    InputError,
    ModelDoesNotFitError,
    PolyServeError,
    RegistryError,
)
from polyserve.core.tiers import Tier, TierSet

__all__ = [
    "ConfigError",
    "InputError",
    "ModelDoesNotFitError",
    "PolyServeError",
    "RegistryError",
    "Tier",
    "TierSet",
]
