"""Where a training stage reads and writes. The names are the run
directory's (``pipeline/rundir.py`` spells the layout and builds this);
the training code only follows the paths it is handed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StageFiles:
    root: Path          # the stage's folder
    model: Path         # the trained model
    metrics: Path       # one record per epoch (an SSL iteration counts as one)
    steps: Path         # one record per optimizer step
    checkpoint: Path    # the checkpoint file of a stage trained in-process
    ray_train: Path     # Ray Train's storage of a stage trained by a worker group
    thresholds: Path    # the selection thresholds each worker applied, per SSL iteration
    tensorboard: Path   # the driver's TensorBoard event files
    corpus: Path        # the token cache the stage reads (shared by the run's stages)
