"""rulegen: firewall code for self-hosted CircleCI Server installs."""

__version__ = "0.1.0"
