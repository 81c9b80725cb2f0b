"""Prints a benchmark's Markdown report and, when asked, writes it to a file."""

from typing import List, Optional


def emit(lines: List[str], out: Optional[str]) -> None:
    """Joins ``lines`` into the report, prints it and writes it to ``out`` when given."""
    report = "\n".join(lines) + "\n"
    print(report)
    if out:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(report)
