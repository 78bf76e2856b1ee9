"""Evaluating checkpoints: the evaluation attacks, AutoAttack, sanity checks, corruptions
and margins. It may import the engine and every layer below it.
"""
