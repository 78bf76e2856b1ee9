"""Architectures (features + head) and loading model files from other code bases. It may
import the kernel and the foundation modules.
"""
