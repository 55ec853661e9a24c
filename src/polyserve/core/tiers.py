"""SLO tiers: the classes that requests are binned into by their TPOT SLO.

A tier carries a TPOT SLO and a TTFT SLO of the form ``base + per_input_token * input_tokens`` (a long prompt
is allowed proportionally more time to first token). A ``TierSet`` keeps tiers ordered tightest-first, which
is the order lazy promotion walks (a looser request may be hosted on a *tighter* tier's server).

Tier files are TOML::

    [[tier]]
    name = "t20"
    tpot_ms = 20
    ttft_ms = 500                   # base TTFT
    ttft_ms_per_input_token = 0.1   # added per prompt token
    weight = 1                      # share of requests in the default mix

Failure modes: a malformed file raises ``InputError`` naming the file, the tier's line and the field; an
empty set, duplicate names or duplicate TPOTs raise ``ConfigError``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from polyserve.core.errors import ConfigError, InputError


@dataclass(frozen=True, slots=True)
class Tier:
    """One SLO class. Times in milliseconds, as operators write them."""

    name: str
    tpot_ms: float
    ttft_ms: float
    ttft_ms_per_input_token: float = 0.0
    weight: float = 1.0  # relative share in the default mix; 0 = never drawn

    def __post_init__(self) -> None:
        for field, value in (
            ("tpot_ms", self.tpot_ms),
            ("ttft_ms", self.ttft_ms),
            ("ttft_ms_per_input_token", self.ttft_ms_per_input_token),
            ("weight", self.weight),
        ):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"tier {self.name!r}: {field} must be a finite number >= 0, got {value!r}")
        if self.tpot_ms <= 0:
            raise ConfigError(f"tier {self.name!r}: tpot_ms must be > 0, got {self.tpot_ms!r}")
        if not self.name or not self.name.replace("-", "_").replace(".", "_").isidentifier():
            raise ConfigError(f"tier name {self.name!r}: use letters, digits, '-', '_' or '.'")

    def ttft_slo_ms(self, input_tokens: int) -> float:
        """The TTFT SLO for a prompt of ``input_tokens`` tokens."""
        return self.ttft_ms + self.ttft_ms_per_input_token * input_tokens


class TierSet(Sequence[Tier]):
    """An ordered set of tiers, tightest TPOT first. Index 0 is the tightest tier."""

    def __init__(self, tiers: Sequence[Tier], source: str = "<inline>") -> None:
        if not tiers:
            raise ConfigError(f"{source}: no tiers defined; give at least one [[tier]] table")
        names = [t.name for t in tiers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"{source}: duplicate tier name(s): {', '.join(sorted(dup))}")
        tpots = [t.tpot_ms for t in tiers]
        if len(set(tpots)) != len(tpots):
            raise ConfigError(
                f"{source}: two tiers share a TPOT SLO; tiers are binned by TPOT, so each needs its own"
            )
        self._tiers: tuple[Tier, ...] = tuple(sorted(tiers, key=lambda t: t.tpot_ms))
        self._index = {t.name: i for i, t in enumerate(self._tiers)}
        self.source = source

    # Sequence protocol -------------------------------------------------------------------------------------
    def __getitem__(self, i):  # type: ignore[override]
        return self._tiers[i]

    def __len__(self) -> int:
        return len(self._tiers)

    def __iter__(self) -> Iterator[Tier]:
        return iter(self._tiers)

    def __repr__(self) -> str:
        return f"TierSet({[t.name for t in self._tiers]!r}, source={self.source!r})"

    # Lookups -----------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [t.name for t in self._tiers]

    def index(self, name: str) -> int:  # type: ignore[override]
        """Index of the tier called ``name``; raises ``ConfigError`` listing the known names."""
        try:
            return self._index[name]
        except KeyError:
            raise ConfigError(f"unknown tier {name!r}; known tiers: {', '.join(self.names)}") from None

    def by_name(self, name: str) -> Tier:
        return self._tiers[self.index(name)]

    def index_for_tpot(self, tpot_ms: float) -> int | None:
        """The loosest tier whose TPOT is at most ``tpot_ms``; None if every tier is looser than asked.

        A request asking for a TPOT of 40 ms goes to the 30 ms tier (a tier that promises *at least* what was
        asked); one asking for 10 ms when the tightest tier is 20 ms has no tier and must be rejected.
        """
        best: int | None = None
        for i, t in enumerate(self._tiers):
            if t.tpot_ms <= tpot_ms:
                best = i
        return best

    def weights(self) -> list[float]:
        """Normalised mix weights, tightest first."""
        total = sum(t.weight for t in self._tiers)
        if total <= 0:
            raise ConfigError(f"{self.source}: tier weights sum to 0; give at least one tier a weight > 0")
        return [t.weight / total for t in self._tiers]

    def with_weights(self, weights: dict[str, float]) -> TierSet:
        """A copy with the mix weights replaced (names not listed get weight 0)."""
        for name in weights:
            self.index(name)
        tiers = [
            Tier(t.name, t.tpot_ms, t.ttft_ms, t.ttft_ms_per_input_token, float(weights.get(t.name, 0.0)))
            for t in self._tiers
        ]
        return TierSet(tiers, self.source)

    def to_dict(self) -> list[dict[str, float | str]]:
        return [
            {
                "name": t.name,
                "tpot_ms": t.tpot_ms,
                "ttft_ms": t.ttft_ms,
                "ttft_ms_per_input_token": t.ttft_ms_per_input_token,
                "weight": t.weight,
            }
            for t in self._tiers
        ]

    # Loading -----------------------------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: str | Path) -> TierSet:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InputError(str(path), None, "file", f"cannot read tier file: {e.strerror or e}") from None
        return cls.from_toml_text(text, str(path))

    @classmethod
    def from_toml_text(cls, text: str, source: str = "<tiers>") -> TierSet:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            line = getattr(e, "lineno", None)
            raise InputError(source, line, "toml", str(e).split(" (at line")[0]) from None
        tables = doc.get("tier")
        if not isinstance(tables, list) or not tables:
            raise InputError(source, None, "tier", "no [[tier]] tables found; each tier is a [[tier]] table")
        header_lines = [i + 1 for i, ln in enumerate(text.splitlines()) if ln.strip().startswith("[[tier]]")]
        allowed = {"name", "tpot_ms", "ttft_ms", "ttft_ms_per_input_token", "weight"}
        tiers: list[Tier] = []
        for k, table in enumerate(tables):
            line = header_lines[k] if k < len(header_lines) else None
            unknown = set(table) - allowed
            if unknown:
                raise InputError(
                    source, line, sorted(unknown)[0], f"unknown key; allowed: {', '.join(sorted(allowed))}"
                )
            for req in ("name", "tpot_ms", "ttft_ms"):
                if req not in table:
                    raise InputError(
                        source, line, req, "missing (every [[tier]] needs name, tpot_ms, ttft_ms)"
                    )
            if not isinstance(table["name"], str):
                raise InputError(source, line, "name", "must be a string")
            vals: dict[str, float] = {}
            for key in ("tpot_ms", "ttft_ms", "ttft_ms_per_input_token", "weight"):
                if key not in table:
                    continue
                v = table[key]
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                    raise InputError(source, line, key, f"must be a finite number >= 0, got {v!r}")
                vals[key] = float(v)
            if vals["tpot_ms"] <= 0:
                raise InputError(source, line, "tpot_ms", "must be > 0")
            try:
                tiers.append(Tier(name=table["name"], **vals))
            except ConfigError as e:
                raise InputError(source, line, "name", str(e)) from None
        return cls(tiers, source)
