"""The project's MLflow conventions, shared by the study driver and the analysis package.

`tracking.names` holds what the MLflow UI shows (tags, run names, metric
names); `tracking.runs` the store-side helpers (the experiment, nested runs,
the parent-run filter, the dataset input); `tracking.study_run` finds a
study's parent run again from its study.json, for the analysis commands.
None imports `study` or `analysis`, so both can import them.
"""
