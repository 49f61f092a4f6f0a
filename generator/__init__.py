"""rulegen: firewall code for self-hosted CircleCI Server installs."""

__version__ = "0.1.0"


def run() -> None:
    """The `rulegen` command (and `python -m generator`).

    The command line is imported here rather than by the console script, so that a
    Ctrl-C while it is still loading exits 130 without a traceback.
    """
    import sys

    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    # One name however it was started (console script, python -m): in usage lines
    # and for shell completion, which reads _RULEGEN_COMPLETE.
    main(prog_name="rulegen")
