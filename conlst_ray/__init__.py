"""conlst_ray: CoNLST (contrastive negative learning + self-training) on Ray."""

__version__ = "0.1.0"
