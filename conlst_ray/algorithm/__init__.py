"""The CoNLST algorithm in plain PyTorch: no Ray, no I/O.

losses.py      Eq. 1, 6, 7, 8, 9-11, 12, 13, 14
negatives.py   complementary labels (Eq. 4), negative pool (Eq. 5)
thresholds.py  FlexMatch class-wise thresholds / fixed threshold
augment.py     random token masking
steps.py       one training step per stage, returning (loss, logs)
"""
