"""Search spaces written in YAML (``tune.search_space``), checked before any
trial starts. No Ray here: ``ray_jobs/tune.py`` turns a checked space into
Ray Tune domains.

    tune:
      search_space:
        conl.gamma: {type: uniform, low: 0.7, high: 0.95}
        conl.lambda_clcs: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
        conl.num_negatives: {type: randint, low: 4, high: 16}     # high exclusive
        conl.lr: {type: choice, values: [2.0e-6, 5.0e-6]}
        ssl.lr: {type: grid, values: [1.0e-4, 2.0e-4]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conlst_ray.config.keys import base_type, find_key, keys
from conlst_ray.config.loading import with_values
from conlst_ray.config.sections import Config, ConfigError

DISTRIBUTIONS = {
    "choice": ("values",),
    "grid": ("values",),
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "randint": ("low", "high"),
}


@dataclass(frozen=True)
class Dimension:
    key: str           # dotted config key, e.g. conl.gamma
    kind: str          # one of DISTRIBUTIONS
    low: Any = None
    high: Any = None
    values: tuple = ()


def _config_keys(cls=Config) -> set[str]:
    return {key.name for key in keys(cls)}


def parse_search_space(space: dict, base: Config) -> list[Dimension]:
    """Check every entry: a known config key, a known distribution with its
    fields, low < high, positive bounds for loguniform, and values that are
    valid for the key (every choice and both bounds are checked against the
    config's own ranges). Errors name the key."""
    import difflib

    known = _config_keys()
    dims = []
    for key, spec in (space or {}).items():
        where = f"tune.search_space.{key}"
        if key not in known or key.startswith("tune."):
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown config key '{key}'{hint}")
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"{where}: expected a mapping with a 'type' ({'|'.join(DISTRIBUTIONS)})")
        kind = spec["type"]
        if kind not in DISTRIBUTIONS:
            raise ConfigError(f"{where}: unknown distribution '{kind}'; choose one of {list(DISTRIBUTIONS)}")
        extra = set(spec) - {"type", *DISTRIBUTIONS[kind]}
        missing = [k for k in DISTRIBUTIONS[kind] if k not in spec]
        if missing or extra:
            raise ConfigError(f"{where}: '{kind}' takes {list(DISTRIBUTIONS[kind])}"
                              + (f"; missing {missing}" if missing else "")
                              + (f"; unexpected {sorted(extra)}" if extra else ""))
        if kind in ("choice", "grid"):
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: values must be a non-empty list")
            dim = Dimension(key, kind, values=tuple(values))
            candidates = list(values)
        else:
            if kind in ("uniform", "loguniform") and _is_int_key(base, key):
                raise ConfigError(f"{where}: '{kind}' draws real numbers but {key} is an integer; "
                                  f"use randint or choice")
            low, high = _number(where, "low", spec["low"]), _number(where, "high", spec["high"])
            if not low < high:
                raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
            if kind == "loguniform" and low <= 0:
                raise ConfigError(f"{where}: loguniform needs low > 0, got {low}")
            if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
                raise ConfigError(f"{where}: randint needs integer bounds")
            dim = Dimension(key, kind, low=low, high=high)
            candidates = [low, high - 1 if kind == "randint" else high]
        for value in candidates:  # each must make a valid config
            try:
                apply(base, {key: value})
            except ConfigError as exc:
                raise ConfigError(f"{where}: value {value!r} is invalid: {exc}") from None
        dims.append(dim)
    return dims


def _is_int_key(base: Config, key: str) -> bool:
    """Whether the config key holds an integer (Optional[int] included)."""
    return base_type(find_key(type(base), key).field.annotation) is int


def _number(where: str, name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {name} must be a number, got {value!r}") from None


def apply(base: Config, params: dict) -> Config:
    """A copy of ``base`` with dotted ``params`` set, checked like any config."""
    return with_values(base, params)
