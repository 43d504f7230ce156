"""The training stages' algorithms by stage name, each registered where it
is defined (``@register("conl")``, as USB registers its algorithms), and
what a stage's algorithm may read (``StageData``): the worker builds the
one its stage names, never an if-chain over the stages."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config

ALGORITHMS: dict[str, type] = {}


def register(stage: str) -> Callable[[type], type]:
    """Class decorator: the algorithm of training stage ``stage`` (its name
    in config/stages.py, its config section, its records)."""
    def add(cls: type) -> type:
        if ALGORITHMS.get(stage, cls) is not cls:
            raise ValueError(f"stage {stage!r} has an algorithm already: {ALGORITHMS[stage].__name__}")
        cls.name = stage
        ALGORITHMS[stage] = cls
        return cls
    return add


@dataclass
class StageData:
    """What a stage's algorithm may read: the labelled source rows, the
    target rows, and, loaded only by the stage that asks, the pseudo-labels'
    distribution of each target row and the rows' back-translations."""
    source: Any
    target: Any = None
    pseudo_labels: Callable[[], Any] = lambda: None
    backtranslations: Callable[[], Any] = lambda: None


def algorithm_of(stage: str) -> type:
    """The registered algorithm class of ``stage`` (every module of this
    package imported once, so that each has registered its own)."""
    if stage not in ALGORITHMS:
        package = importlib.import_module(__package__)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{__package__}.{module.name}")
    if stage not in ALGORITHMS:
        raise KeyError(f"no algorithm is registered for stage {stage!r} (have: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[stage]


def build_algorithm(stage: str, model, cfg: "Config", tokenizer, device, data: StageData):
    """The algorithm object of ``stage`` over ``data``."""
    return algorithm_of(stage).from_stage_data(model, cfg, tokenizer, device, data)
