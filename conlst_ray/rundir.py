"""One run directory per run: every stage writes below it, and marks itself
complete only after its outputs are in place, so ``--resume`` can skip it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conlst_ray.config import atomic_write_text, save_config

DONE_FILE = "DONE.json"


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def of(cls, cfg) -> "RunDir":
        """The run directory a config names (not created)."""
        return cls(Path(cfg.output_dir) / (cfg.run_name or time.strftime("run-%Y%m%d-%H%M%S")))

    @classmethod
    def create(cls, cfg, resume: bool = False) -> "RunDir":
        run = cls.of(cfg)
        if run.root.exists() and any(run.root.iterdir()) and not resume:
            raise FileExistsError(f"run directory {run.root} exists; pass --resume to continue it "
                                  f"or choose another run_name")
        run.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.root / "config.yaml")
        return run

    def stage(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_done(self, name: str) -> bool:
        return (self.root / name / DONE_FILE).is_file()

    def mark_done(self, name: str, metrics: dict) -> None:
        atomic_write_text(self.stage(name) / DONE_FILE, json.dumps(metrics, indent=2, default=float))
