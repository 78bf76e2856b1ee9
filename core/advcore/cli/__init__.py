"""The command line (advcore ...) and the paper recipes it runs (recipe TOML files are package
data in advcore/recipe_files). ``app`` holds the typer app, the command registry and the exit
codes; ``commands/`` the built-in commands, one module per concern, registered through the
``advcore.commands`` entry points like any package's; ``options`` their shared options. It may
import every layer below; nothing imports it.
"""
