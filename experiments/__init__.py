"""Experiment configs and the ``slf`` command line."""
