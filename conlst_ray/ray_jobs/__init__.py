"""What runs on the Ray cluster, each job behind a plain function the
drivers (pipeline/, commands/) call:

corpus_cache.py   corpora sharded into the cache, a Ray task per language
tokens.py         cached shards tokenised into memory-mapped token files (Ray tasks)
sharded.py        the driver of every Ray Data job over cached shards, resumable per shard
pseudo_label.py   pseudo-labels q of the target rows (Ray Data, an actor pool)
translate.py      back-translation and translate-train (Ray Data, an actor pool)
stage_data.py     what a training stage reads, tokenised once, memory-mapped
stage_run.py      one training stage's body, in this process or on a Ray Train worker
worker.py         what a Ray Train worker adds: DDP, checkpoints reported to Ray Train
train.py          a stage's driver: in this process (one CPU worker) or a TorchTrainer
progress.py       the driver's thread that shows a stage move: progress lines, TensorBoard
tune.py           the Ray Tune search: one trial = CoNL then self-training
"""
