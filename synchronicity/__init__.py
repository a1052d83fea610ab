"""The ``synchronicity`` command line: every entry point, and the local network launcher.

:mod:`synchronicity.cli` parses the arguments and maps errors to exit codes (0 success,
1 verification failed, 2 usage error, 3 operational error; spec/cli.md); each command lives in
a small ``cmd_*`` module imported only when it runs, so ``synchronicity verify`` needs nothing
beyond the base install. :mod:`synchronicity.localnet` and :mod:`synchronicity.launcher` run a
network of real processes on this machine.

A worked example, from Python (the same as ``synchronicity keygen`` in a shell):

>>> import tempfile, pathlib
>>> from synchronicity.cli import main
>>> out = pathlib.Path(tempfile.mkdtemp()) / "log.key"
>>> main(["keygen", "example.com/log", "--out", str(out)])  # doctest: +ELLIPSIS
example.com/log+...
0
"""

__all__ = ["cli", "launcher", "localnet"]
