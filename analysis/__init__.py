"""Analysis of study results: the official MediaEval evaluation, decision thresholds,
bootstrap intervals, late fusion and the study-results reader. Command line: ``python -m analysis``."""
