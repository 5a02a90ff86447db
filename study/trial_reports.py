"""What a trial reports to Ray Tune beside its epoch's record: the keys its scheduler, the
recorder and the driver read. Free of PyTorch, so that a scheduler and a test's stand-in
trials import them without the training stack."""

SKIPPED_KEY = "skipped_checkpoints"  # reported once when damaged checkpoints were passed over
FAILED_KEY = "trial_failed"  # the last result of a trial that failed for good: the cause
TRACEBACK_KEY = "trial_traceback"  # ... and its traceback
STORAGE_KEY = "storage_fault"  # the last result of a trial stopped by a full/unwritable disk
# Marks the one result of a trial restored after its last epoch: that epoch's record again
# (Ray refuses a trial that ends without ever reporting the metric), not a new epoch.
ENDED_KEY = "ended_before"
# The first result of a trial restored from a checkpoint: the restored epoch's record again,
# with the selection metric of every epoch so far (a JSON list). A scheduler that decides on
# histories (`race`) learns where a resumed trial stands before it trains on.
RESTORED_KEY = "restored_scores"
