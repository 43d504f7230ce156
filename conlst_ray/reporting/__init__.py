"""Reports of finished runs, and the run as a library call:

library.py      run(cfg) -> RunResult: the pipeline, then its report (the command and the API call it)

report.py       per-language and per-class tables, calibration before -> after CoNL, stage costs
ablation.py     the ablation table over several runs
analysis.py     what the tables are computed from: recall per class, confidence bands, transitions
selection.py    which stage model a run hands back, chosen without target labels
prior.py        the free baseline: each target language's class prior and the models corrected to it
labelling_job.py every stage model's predictions on the target rows (a pseudo-labelling Ray job
                when the corpus is large)
figures.py      the calibration histograms
tables.py       markdown and CSV table writers
"""
