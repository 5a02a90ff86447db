"""Analysis of study results: the official MediaEval evaluation, decision thresholds,
bootstrap intervals, late fusion of prediction files and of a study's best trials, the
study-results reader, and the Table 1 report with its plots. Command line: ``python -m analysis``."""
