"""The `torchpredict` command: commands.py parses the options and runs each subcommand, demo.py the demo."""

from torchpredict.cli.commands import main

__all__ = ["main"]
