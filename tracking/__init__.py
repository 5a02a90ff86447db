"""The project's MLflow conventions, shared by the study driver and the analysis package.

`tracking.names` holds what the MLflow UI shows (tags, run names, metric
names); `tracking.runs` the store-side helpers (the experiment, nested runs,
the parent-run filter, the dataset input). Neither imports `study` or
`analysis`, so both can import it.
"""
