"""Analyses of finished runs: the generalization gap, plots and sweeps. It may import
evaluation, the engine and every layer below.
"""
