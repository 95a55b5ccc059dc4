"""Calibration against the Ahmadvand 2023 trial: observed data, summaries, ABC-SMC, screens."""
