"""Fitting models: the one resumable loop (loop.py), metric learning on it (metric.py),
pretraining the backbone on the source classes (pretrain.py) and what training monitors
(monitoring.py). Import from the modules: this package file stays empty so that a stage pays
only for what it uses (and declares it in dvc.yaml)."""
