"""Reports of finished runs: per-language and per-class tables, calibration
before -> after CoNL, stage costs (report.py), the ablation table
(ablation.py), their analyses, figures and table writers."""
