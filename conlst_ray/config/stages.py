"""The pipeline's stages as data: one record per stage, read by the
fingerprints (what a stage depends on and which stages a recomputed one
invalidates), the run directory (which stages hold a model, which hold
output shards), the progress lines, the stage costs, the model card and the
library's result. A stage's name is its folder in a run directory and its
name in every fingerprint and progress line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

SOURCE, PSEUDO_LABELS, CONL, BACKTRANSLATION, SSL = "source", "pseudo_labels", "conl", "backtranslation", "ssl"


@dataclass(frozen=True)
class Stage:
    name: str
    title: str                            # what the model card calls its model, or what it makes
    kind: str                             # "train": a model (Ray Train); "sharded": output shards (Ray Data)
    reads: tuple[str, ...] = ()           # the stages whose outputs it reads
    epochs_key: Optional[str] = None      # the config key that counts its passes (a training stage)
    pass_name: str = "epoch"              # what one pass is called in its progress lines
    batch_section: Optional[str] = None   # the config section whose batch_size counts its examples
    rows: tuple[str, ...] = ()            # what the report's tables call its model: the first after another
                                          # target stage, the last when it starts from the source model
    enabled_key: Optional[str] = None     # the config switch that turns it off (None: always runs)
    over_target: bool = False             # a training stage over the unlabelled target rows
    source_files: bool = False            # its fingerprint names the labelled source files (it trains on them)


STAGES = (
    Stage(SOURCE, "source fine-tuning (the zero-shot model)", "train", epochs_key="source.epochs",
          batch_section="source", rows=("zero-shot",)),
    Stage(PSEUDO_LABELS, "the source model's pseudo-labels of the target rows", "sharded", reads=(SOURCE,)),
    Stage(CONL, "contrastive negative learning (CoNL)", "train", reads=(SOURCE, PSEUDO_LABELS),
          epochs_key="conl.epochs", batch_section="conl", rows=("CoNL",), enabled_key="conl.enabled",
          over_target=True),
    Stage(BACKTRANSLATION, "back-translations of the target rows", "sharded"),
    Stage(SSL, "self-training (CoNLST when it follows CoNL)", "train", reads=(SOURCE, CONL, BACKTRANSLATION),
          epochs_key="ssl.iterations", pass_name="iteration", batch_section="ssl",
          rows=("CoNLST", "self-training"), enabled_key="ssl.enabled", over_target=True, source_files=True),
)
BY_NAME = {stage.name: stage for stage in STAGES}
NAMES = tuple(stage.name for stage in STAGES)
TRAINED = tuple(stage.name for stage in STAGES if stage.kind == "train")
TARGET = tuple(stage for stage in STAGES if stage.over_target)  # after the pseudo-labels, in order
SHARDED = tuple(stage.name for stage in STAGES if stage.kind == "sharded")


def downstream(name: str) -> list[str]:
    """Every stage that reads ``name``'s output, directly or through another
    (in pipeline order): a recomputed stage invalidates them all."""
    found: list[str] = []
    for stage in STAGES:
        if any(r == name or r in found for r in stage.reads):
            found.append(stage.name)
    return found
