"""The driver side of a run: the stages in order (stages.py), one trial of a
search (search.py), the run directory that owns every path of a run and of
a search (rundir.py), the checks made before any expensive work
(preflight.py), starting or joining Ray (ray_setup.py), and how a failure
becomes the user's one line (errors.py)."""
