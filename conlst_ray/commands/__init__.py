"""The command-line entry points (``python -m conlst_ray.<command>``, with
thin aliases at the package root): argument parsing, config loading, Ray
start-up and exit codes. Library code lives in the other packages."""
