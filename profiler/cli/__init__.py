"""The command line: commands, and how each prints its typed answer."""
