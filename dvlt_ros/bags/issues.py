"""Problems found in a bag: fatal ones raise :class:`BagError`, the others are collected as
:class:`BagIssue` records so that processing goes on and the summary lists them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

WARN = "warning"
ERROR = "error"


class BagError(RuntimeError):
    """A bag (or a command line) that cannot be used; the message says what to do, on one
    line (the text of a reader's error it quotes is joined onto it)."""

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


@dataclass(frozen=True)
class BagIssue:
    """One non-fatal problem: ``code`` is stable (``truncated``, ``gap``, ``time_jump``,
    ``missing_camera_info``, ``unknown_type``, ...), ``message`` is for the user."""

    code: str
    level: str
    message: str
    topic: str | None = None
    stamp_ns: int | None = None

    def __str__(self) -> str:
        where = f"[{self.topic}] " if self.topic else ""
        return f"{self.level}: {self.code}: {where}{self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "level": self.level,
            "message": self.message,
            "topic": self.topic,
            "stamp_ns": self.stamp_ns,
        }


class IssueLog:
    """Collects issues; each one is passed to ``report`` as it happens. Repeats of a
    (code, topic) pair beyond ``max_repeats`` are counted but not reported again."""

    def __init__(self, report: Callable[[BagIssue], None] | None = None, max_repeats: int = 3):
        self._report = report
        self.max_repeats = max_repeats
        self.issues: list[BagIssue] = []
        self.counts: Counter[str] = Counter()
        self._per_key: Counter[tuple[str, str | None]] = Counter()

    def add(self, issue: BagIssue) -> None:
        self.counts[issue.code] += 1
        key = (issue.code, issue.topic)
        self._per_key[key] += 1
        if self._per_key[key] > self.max_repeats:
            return
        self.issues.append(issue)
        if self._report is not None:
            self._report(issue)

    def warn(self, code: str, message: str, topic: str | None = None,
             stamp_ns: int | None = None) -> None:
        self.add(BagIssue(code, WARN, message, topic, stamp_ns))

    def error(self, code: str, message: str, topic: str | None = None,
              stamp_ns: int | None = None) -> None:
        self.add(BagIssue(code, ERROR, message, topic, stamp_ns))

    def codes(self) -> set[str]:
        return set(self.counts)
