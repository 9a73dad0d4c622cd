"""`cvtool export`: the summary on stdout, exit 1 (and no file) where verification failed."""

from __future__ import annotations

from cvtool.core.context import Environment
from cvtool.core.status import ExitStatus
from cvtool.export import ExportOptions, require_runtime


def export(env: Environment, options: ExportOptions) -> int:
    require_runtime(options)  # a missing extra is exit 3 before torch loads
    from cvtool.export.exporter import run_export
    from cvtool.io.writers import strict_json

    summary = run_export(options, env.warn, env.log)
    print(strict_json(summary), file=env.stdout, flush=True)
    checked = summary["verification"]
    if checked.get("skipped") or checked["passed"]:
        return ExitStatus.SUCCESS
    failures = checked["failures"]
    print(f"error: the export differs from eager PyTorch beyond tolerance on "
          f"{len(failures)} check(s) (first: {failures[0]}); nothing was written",
          file=env.stderr, flush=True)
    return ExitStatus.PARTIAL
