"""Fault injection for the recovery tests, through ``fit_stage``'s
``step_hook`` seam (production passes none and pays nothing for it)."""

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ray.cloudpickle

from conlst_ray.training.distributed import world


@dataclass
class KillOnce:
    """The last worker dies (os._exit) once, before optimizer step ``step``;
    ``marker`` records that it did, so the restarted group runs on."""
    step: int
    marker: str
    after_s: float = 0.0

    def __call__(self, step: int) -> None:
        if step != self.step:
            return
        rank, size = world()
        marker = Path(self.marker)
        if rank == size - 1 and not marker.exists():
            # Ray Train's controller collects reported checkpoints on its health
            # poll (every 2 s): a worker that dies sooner after a report loses that
            # checkpoint and the group restarts from the one before. A real failure
            # can hit that window; the test waits it out to check the restore itself.
            time.sleep(self.after_s)
            marker.write_text("failed once")
            os._exit(1)


# The workers cannot import this tests module: the hook travels by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
