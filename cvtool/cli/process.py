"""The `cvtool` process around the Typer app: every outcome mapped onto one exit status and
one stderr line (tracebacks only with --debug), library warnings as cvtool's own one-line
warnings, and a quiet end when stdout's reader goes away."""

from __future__ import annotations

import errno
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import typer

try:  # recent typer releases vendor click; older ones raise click's own exceptions
    from typer import TyperException as ClickUsageProblem
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import ClickException as ClickUsageProblem

from cvtool.cli import torchrun
from cvtool.cli.options import readable_help
from cvtool.core.context import Environment, StdoutClosed, activated
from cvtool.core.results import one_line, shown
from cvtool.core.status import CvtoolError, ExitStatus

# A full disk or quota is the resource-unavailable status, not a bug.
RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# So is a place cvtool may not write: a read-only file system, a folder it lacks rights to.
# (Inputs that cannot be read are error records; what reaches here is a write or a create.)
REFUSED_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def main(app: typer.Typer, argv: list[str] | None = None) -> None:
    closed = _fill_closed_streams()
    if "stdout" in closed:
        # Records would go nowhere (or, were fd 1 reused by a file cvtool opens, into it).
        _report(Environment(), "error: standard output is closed; redirect it to a file or "
                               "to /dev/null instead (>/dev/null)")
        sys.exit(ExitStatus.UNAVAILABLE)
    env = Environment(debug=os.environ.get("CVTOOL_DEBUG", "") not in ("", "0"))
    status = run_cli(app, argv, env)
    if torchrun.launched():
        torchrun.report(status, env.last_error, env.lost_peers)
    if status in (ExitStatus.INTERRUPTED, ExitStatus.BROKEN_PIPE):
        # Reader and decoding threads may still be blocked (stdin, a pipe); finalising the
        # interpreter around them can abort the process. Every record is already flushed.
        _flush_quietly()
        os._exit(status)
    sys.exit(status)


def _fill_closed_streams() -> set[str]:
    """Put /dev/null where the process was started with fd 0, 1 or 2 closed (`2>&-`), so no
    file cvtool opens later takes that number (torch's C++ warnings would land in a lock file
    or records.jsonl), and give Python a stream there: with sys.stderr None, rich falls back
    to stdout and the summary line would land among the records. Returns the closed ones."""
    closed = set()
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            closed.add(name)
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        stream = open(fd, "r" if fd == 0 else "w", closefd=False)  # noqa: SIM115 - the process's
        setattr(sys, name, stream)
    return closed


def _flush_quietly() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def run_cli(app: typer.Typer, argv: list[str] | None = None,
            env: Environment | None = None) -> int:
    """Run the app and map every outcome onto an exit status; tracebacks only with --debug."""
    env = env or Environment(debug=os.environ.get("CVTOOL_DEBUG", "") not in ("", "0"))
    argv = sys.argv[1:] if argv is None else argv
    env.debug = env.debug or "--debug" in argv
    env.argv = list(argv)
    command = readable_help(typer.main.get_command(app))
    try:
        with activated(env), _warnings_as_lines(env):
            result = command.main(argv, prog_name="cvtool", standalone_mode=False)
        return int(result or 0)
    except typer.Exit as done:
        return done.exit_code
    except ClickUsageProblem as exc:  # click's usage errors: bad option, missing value
        _report(env, usage_line(exc))
        return ExitStatus.USAGE
    except (typer.Abort, KeyboardInterrupt):
        _report(env, "interrupted")
        return ExitStatus.INTERRUPTED
    except (StdoutClosed, BrokenPipeError):
        _silence_stdout()
        return ExitStatus.BROKEN_PIPE
    except CvtoolError as exc:
        _report(env, f"error: {exc.message}")
        return exc.status
    except OSError as exc:
        if exc.errno in REFUSED_ERRNOS:
            where = exc.filename or "standard output"
            _report(env, f"error: cannot write {where}: {os.strerror(exc.errno).lower()}")
            return ExitStatus.UNAVAILABLE
        if exc.errno not in RESOURCE_ERRNOS:
            return _internal_error(env, exc)
        if exc.filename is None and env.stdout is sys.stdout:
            _silence_stdout()  # what stdout still buffers cannot be written either
        where = exc.filename or "standard output"
        _report(env, f"error: {os.strerror(exc.errno).lower()} writing {where}; no file was left "
                     "half-written (training continues with --resume once there is room)")
        return ExitStatus.UNAVAILABLE
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line unless --debug
        if _lost_peers(exc):
            env.lost_peers = True
            _report(env, "error: lost the other training ranks (one of them failed or was "
                         "stopped); its own error says why")
            return ExitStatus.UNAVAILABLE
        return _internal_error(env, exc)


def _lost_peers(exc: BaseException) -> bool:
    """A collective that failed because a peer rank went away (gloo, NCCL, the store)."""
    if os.environ.get("RANK") is None:
        return False
    names = {kind.__name__ for kind in type(exc).__mro__}
    text = str(exc).lower()
    return bool(names & {"DistBackendError", "DistNetworkError", "DistStoreError"}) or any(
        phrase in text for phrase in ("closed by peer", "reset by peer", "connection refused",
                                      "broken pipe"))


def _internal_error(env: Environment, exc: BaseException) -> int:
    if env.debug:
        traceback.print_exc(file=env.stderr)
    _report(env, f"error: internal error: {type(exc).__name__}: {one_line(exc)} "
                 "(run with --debug for the traceback)")
    return ExitStatus.INTERNAL


@contextmanager
def _warnings_as_lines(env: Environment) -> Iterator[None]:
    """Python warnings (Pillow's, torch's) as cvtool's own one-line warnings, without the
    library's file and line; each distinct one once per run."""
    seen: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        text = one_line(message if isinstance(message, Warning) else Warning(message))
        if text not in seen:
            seen.add(text)
            env.warn(text)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        # Libraries' deprecation notes (pycocotools under numpy 2, ...) are for their callers'
        # developers, not for the person running cvtool; cvtool's own still show.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("default", category=DeprecationWarning, module=r"cvtool\b")
        # cvtool checks every image against its own --max-pixels before decoding it.
        warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
        warnings.showwarning = show
        yield


def usage_line(exc: BaseException) -> str:
    """A command-line parsing error as one line, as cvtool's own usage errors are, naming the
    command's --help (click prints four lines: usage, a hint, a blank, the error)."""
    message = one_line(Exception(exc.format_message()))  # type: ignore[attr-defined]
    message = message.replace("Value error, ", "").rstrip(".")  # the validator's prefix
    context = getattr(exc, "ctx", None)
    where = f"; see `{context.command_path} --help`" if context is not None else ""
    return f"error: {message}{where}"


def _report(env: Environment, message: str) -> None:
    if env.debug and sys.exc_info()[0] is not None:
        traceback.print_exc(file=env.stderr)
    env.last_error = message
    if torchrun.launched():
        return  # cvtool's launcher says it, once for all ranks
    try:
        print(shown(message), file=env.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass


def _silence_stdout() -> None:
    # Python flushes stdout at exit; a closed pipe would then print a second error.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

