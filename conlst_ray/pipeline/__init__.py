"""The driver side of a run: the stages in order (stages.py), the run
directory that owns every path of a run (rundir.py), and the checks made
before any expensive work (preflight.py)."""
