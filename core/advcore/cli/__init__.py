"""The command line (advcore ...) and the paper recipes it runs (recipe TOML files are package
data in advcore/recipe_files). It may import every layer below; nothing imports it.
"""
