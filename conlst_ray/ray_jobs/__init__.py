"""What runs on the Ray cluster, each job behind a plain function the
drivers (pipeline/, commands/) call:

corpus_cache.py   corpora sharded into the cache, a Ray task per language
tokens.py         cached shards tokenised into memory-mapped token files (Ray tasks)
sharded.py        the driver of every Ray Data job over cached shards, resumable per shard
pseudo_label.py   pseudo-labels q of the target rows (Ray Data, an actor pool)
translate.py      back-translation and translate-train (Ray Data, an actor pool)
train.py          a training stage's driver side: what it reads tokenised once, then this
                  process (one CPU worker) or a TorchTrainer
worker.py         its worker side: the stage body over memory-mapped token files, and the
                  sessions it runs in (a Ray Train worker: DDP, checkpoints; this process)
progress.py       the driver's thread that shows a stage move: progress lines, TensorBoard
tune.py           the Ray Tune search: one trial = CoNL then self-training
"""
