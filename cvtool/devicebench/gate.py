"""`--fail-below`: thresholds that turn benchmark-device into a CI gate.

A requirement `[OP:]DEVICE:DTYPE:METRIC=VALUE` (`*` matches anything) holds when the best
value of METRIC among the correct results it matches is at least VALUE. Best, not every:
small shapes never reach a large speedup, and a gate on them would only measure launch
overhead. A requirement that matches no result fails, so a CI job that lost its GPU says so
instead of passing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cvtool.core.status import UsageError
from cvtool.devicebench.cases import DTYPES, OPS
from cvtool.devicebench.devices import DEVICES

if TYPE_CHECKING:
    from cvtool.devicebench.runner import BenchResult

METRICS = ("speedup", "tflops", "pct_of_peak")
FORMAT = "[OP:]DEVICE:DTYPE:METRIC=VALUE, e.g. cuda:float16:speedup=20"


@dataclass(frozen=True)
class Requirement:
    op: str
    device: str
    dtype: str
    metric: str
    minimum: float

    @property
    def text(self) -> str:
        return f"{self.op}:{self.device}:{self.dtype}:{self.metric}>={self.minimum:g}"

    def matches(self, result: BenchResult) -> bool:
        wanted = (self.op, self.device, self.dtype)
        return all(w in ("*", got) for w, got in zip(wanted, (result.op, result.device,
                                                               result.dtype)))


def parse_requirement(spec: str) -> Requirement:
    selector, sep, value = spec.partition("=")
    parts = selector.split(":")
    if not sep or len(parts) not in (3, 4):
        raise UsageError(f"--fail-below {spec!r}: expected {FORMAT}")
    op, device, dtype, metric = parts if len(parts) == 4 else ["*", *parts]
    for name, got, valid in (("op", op, OPS), ("device", device, DEVICES),
                             ("dtype", dtype, DTYPES), ("metric", metric, METRICS)):
        if got not in (*valid, "*") or (name == "metric" and got == "*"):
            raise UsageError(f"--fail-below {spec!r}: unknown {name} {got!r}; valid: "
                             f"{', '.join(valid)}")
    try:
        minimum = float(value)
    except ValueError:
        raise UsageError(f"--fail-below {spec!r}: {value!r} is not a number") from None
    return Requirement(op, device, dtype, metric, minimum)


def evaluate(requirements: list[Requirement], results: list[BenchResult]) -> list[dict[str, Any]]:
    """One verdict per requirement: the best matching value and whether it passed."""
    verdicts = []
    for req in requirements:
        values = [getattr(r, req.metric) for r in results if r.ok and req.matches(r)]
        best = max((v for v in values if v is not None), default=None)
        verdicts.append({"requirement": req.text, "best": best,
                         "passed": best is not None and best >= req.minimum})
    return verdicts
