"""The commands of `rulegen`, one module each, named as the command: generator/cli.py
imports only the one that runs."""
