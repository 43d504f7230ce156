"""Plain-PyTorch training machinery shared by every stage (no Ray):

batches.py      tokenised rows -> padded batches, prefetching
inference.py    class distributions, accuracy per language, precision
optim.py        AdamW groups, warm-up/decay schedule, seeds
distributed.py  rank, all-reduce/all-gather, the global batch plan
loop.py         the one step loop that runs a stage's algorithm object, and what
                follows each epoch (dev scores, kept epoch, log, checkpoint)
frozen_cache.py the frozen lower layers' states of each row, computed once
classifier.py   a trained model with its tokenizer and labels, for labelling new text
stage_files.py  where a stage writes (the run directory names the files)
"""
