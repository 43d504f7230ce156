"""conlst_ray: CoNLST (contrastive negative learning + self-training) on Ray.

    from conlst_ray import load_model, run   # the Python API (conlst_ray/api.py)
"""

__version__ = "0.1.0"

_API = ("Classifier", "RunResult", "load_model", "run")


def __getattr__(name: str):
    """The API on first use: ``import conlst_ray`` alone stays cheap (every
    command and worker imports the package) and loads neither torch nor Ray."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
