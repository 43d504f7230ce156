"""The models: the encoder with its classification and contrastive heads
(encoder.py), multilingual-e5-small offline (e5.py), seq2seq translators for
back-translation and translate-train (translation.py)."""
