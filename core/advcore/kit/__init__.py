"""The plugin author's kit behind advcore.testing: the conformance probe and the package
scaffold of advcore new-plugin. It may import analyses and every layer below.
"""
