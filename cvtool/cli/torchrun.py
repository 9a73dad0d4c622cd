"""`cvtool train ... --nproc-per-node N`: launching torchrun on this machine, and what a
train command asks of the torchrun it may be running under (its rank, whether it was restarted).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from cvtool.core.context import Environment
from cvtool.core.results import shown


def rank() -> int:
    """This process's RANK under torchrun (any launcher that sets WORLD_SIZE > 1), else -1."""
    from cvtool.train.world import from_environment

    world = from_environment()
    return world.rank if world.distributed else -1


def restarted() -> bool:
    from cvtool.train.world import from_environment

    world = from_environment()
    return world.distributed and world.restarts > 0


REPORTS = "CVTOOL_RANK_REPORTS"  # where ranks leave their outcome for cvtool's launcher
_PREFIX = "\x1fcvtool-rank-${rank}\x1f"  # torchrun's tee prefix: marks a rank's own lines
_RANK_LINE = re.compile("^\x1fcvtool-rank-(\\d+)\x1f(.*)$", re.DOTALL)


def launch(env: Environment, processes: int) -> int:
    """`torchrun --standalone --nproc_per_node N -m cvtool ARGS` (a free port on this machine),
    ARGS being this command's own without --nproc-per-node. The ranks' own output comes
    through (tee'd by torchrun, its prefix taken off); torchrun's own log lines, traceback and
    failure table do not. Each rank reports how it ended instead of printing its error, and
    the launcher says it once per failed rank (once in all where they agree), exiting with the
    status of the rank that failed first for a reason of its own."""
    import subprocess
    import sys
    import tempfile
    import threading

    env.log(f"launching {processes} ranks: torchrun --standalone --nproc_per_node={processes} "
            "-m cvtool ...")
    # torchrun would set 1 (and say so); CPU ranks share the machine's cores instead.
    threads = str(max(1, (os.cpu_count() or 1) // processes))
    with tempfile.TemporaryDirectory(prefix="cvtool-ranks-") as reports:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", "--log-dir", os.path.join(reports, "logs"),
                   "--tee", "3", "--log-line-prefix-template", _PREFIX,
                   "-m", "cvtool", *without_nproc(env.argv)]
        environment = {**os.environ, REPORTS: reports, "PYTHONUNBUFFERED": "1",
                       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=environment)
        copies = [threading.Thread(target=_ranks_lines, args=(pipe, target), daemon=True)
                  for pipe, target in ((process.stdout, env.stdout), (process.stderr, env.stderr))]
        for copy in copies:
            copy.start()
        code = process.wait()
        for copy in copies:
            copy.join()
        for pipe in (process.stdout, process.stderr):
            pipe.close()
        return _outcome(env, read_reports(reports, processes), processes, code)


def _ranks_lines(pipe: Any, target: Any) -> None:
    """Copy the lines of torchrun's stream that come from a rank (prefix removed)."""
    for raw in iter(pipe.readline, b""):
        match = _RANK_LINE.match(raw.decode("utf-8", "replace"))
        if match:
            try:
                target.write(match.group(2))
                target.flush()
            except (OSError, ValueError):
                pass  # a closed stream: keep draining so the ranks never block on the pipe


def launched() -> bool:
    """Whether this process is a rank of cvtool's own launcher (which prints its errors)."""
    return bool(os.environ.get(REPORTS)) and os.environ.get("RANK") is not None


def report(status: int, message: str | None, lost: bool) -> None:
    """Leave this rank's outcome for cvtool's launcher: its exit status, its one-line error,
    and whether it only stopped because another rank failed (`lost`)."""
    path = os.path.join(os.environ[REPORTS], f"rank-{os.environ['RANK']}.json")
    try:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"status": int(status), "message": message, "lost": lost,
                       "time": time.time()}, handle)
    except OSError:
        pass


def read_reports(directory: str, processes: int) -> dict[int, dict[str, Any]]:
    found = {}
    for number in range(processes):
        try:
            with open(os.path.join(directory, f"rank-{number}.json"), encoding="utf-8") as file:
                found[number] = json.load(file)
        except (OSError, ValueError):
            continue
    return found


def _outcome(env: Environment, reports: dict[int, dict[str, Any]], processes: int,
             code: int) -> int:
    """The lines and exit status of a finished launch (see `launch`)."""
    failed = {number: entry for number, entry in reports.items() if entry["status"] != 0}
    missing = [number for number in range(processes) if number not in reports]
    if code == 0 and not failed and not missing:
        return 0
    causes = sorted((entry["time"], number) for number, entry in failed.items()
                    if not entry["lost"])
    messages = {str(entry["message"]) for entry in failed.values()}
    if len(messages) == 1 and not missing and len(failed) == processes:
        _say(env, next(iter(messages)))  # every rank said the same: once
    else:
        for number, entry in sorted(failed.items()):
            _say(env, f"error: rank {number}: {str(entry['message']).removeprefix('error: ')}")
        for number in missing:
            _say(env, f"error: rank {number} ended before it could say why (killed, or "
                      "stopped by torchrun once another rank failed)")
    if causes:
        return int(failed[causes[0][1]]["status"])
    return max((int(entry["status"]) for entry in failed.values()), default=3) or 3


def _say(env: Environment, line: str) -> None:
    try:
        print(shown(line), file=env.stderr, flush=True)
    except (OSError, ValueError):
        pass


def without_nproc(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            kept.append(arg)
    return kept
