"""The CoNLST algorithm in plain PyTorch: no Ray, no I/O.

base.py           one object per stage (USB's AlgorithmBase shape); SourceTraining and its step
registry.py       the algorithms by stage name (@register), and what a stage may read (StageData)
conl.py           CoNL, stage 1 (Eq. 4-8): negative pool, gamma, its step L_CL + lambda L_CLCS
self_training.py  self-training, stage 2 (Eq. 9-14): labelling, selection, strong views, its step
losses.py         Eq. 1, 6, 7, 8, 9-11, 12, 13, 14
negatives.py      complementary labels (Eq. 4), negative pool (Eq. 5)
thresholds.py     selection rules behind one interface: fixed, FlexMatch, class quantiles
prior.py          a target language's class prior without labels (EM, BBSE) and the bias that corrects to it
augment.py        random token masking
"""
