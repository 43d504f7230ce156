"""The driver side of a run: the stages in order (stages.py), one trial of a
search (search.py), the run directory that owns every path of a run and of
a search (rundir.py), and the checks made before any expensive work
(preflight.py)."""
