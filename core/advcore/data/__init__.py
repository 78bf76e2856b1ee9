"""Datasets, the deterministic loader and on-device augmentation, class-balanced subsets
(plugins rank their own KIND:N through advcore_training_subset) and extra-data mixing.
It may import the kernel and the foundation modules.
"""
