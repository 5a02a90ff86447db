"""A study folder's format, below everything that writes or reads it.

`records` holds what the folder is (study.json, trials/, the labels, rungs.json)
with its reader and writer; `search_space` and `budgets` what a study runs
(a space's YAML, as study.json records it, and the training protocols);
`reuse` the trials one study folder takes over from another's. The
driver (`study`), the analysis (`analysis`) and tagging (`tagging`) import
them; they import only `mer_models` and `tracking`.
"""
