"""Training: the Trainer (`trainer`) built once from a recipe, and the components that own their cadence
(checkpoint, selection, metric_logger, sample_grids, nonfinite, shutdown), the loop's state, resume checks and
claiming the run folder."""
