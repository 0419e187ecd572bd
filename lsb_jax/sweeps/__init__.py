"""Sweep recipes per task family: configs, presets, the task on `train.sweep`, summaries, figures."""
