"""rulegen: firewall code for self-hosted CircleCI Server installs."""

__version__ = "0.1.0"
GC_YOUNG = 50_000  # new container objects between two young collections (default 700)


def run() -> None:
    """The `rulegen` command (and `python -m generator`).

    The command line is imported here rather than by the console script, so that a
    Ctrl-C while it is still loading exits 130 without a traceback.
    """
    import gc
    import sys

    # A run makes few reference cycles, yet with the default thresholds (a young
    # collection every 700 new objects) the collector runs some forty times in a
    # `generate`, walking the modules' objects again and again (12-14 ms of its
    # 0.2 s). Peak memory is the same at 100,000 addresses.
    gc.set_threshold(GC_YOUNG, 10, 10)
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    try:
        # One name however it was started (console script, python -m): in usage
        # lines and for shell completion, which reads _RULEGEN_COMPLETE.
        main(prog_name="rulegen")
    finally:
        # The run is over (click exits through SystemExit): the interpreter's final
        # collections would walk every object of the modules only to free what
        # tearing them down frees anyway, 8-10 ms of a 0.1 s generate. Exit
        # handlers still run and the modules are still torn down; what a cycle
        # holds then goes with the process (every file was closed before this).
        gc.freeze()
