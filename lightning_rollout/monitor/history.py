"""What the logging steps remember across a run: each method's filmstrip columns, bounded.

A method keeps at most `filmstrip_columns` columns. Once full, the interior column whose removal leaves
the smallest gap goes for each new one, so the kept columns spread over the whole run (first and last
kept) and the checkpointed state stops growing. `FilmstripHistory.columns` is the public, read-only view.
"""

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from torch import Tensor


class Column(NamedTuple):
    """One logged epoch's maps of one method."""

    label: str
    """The column's name, e.g. `"e3 s120"` or `"init"`."""
    maps: Tensor
    """`(P, h, w)` maps on the CPU, one per panel."""
    position: int
    """The column's logging ordinal (0 for the first column ever logged)."""


def thin_columns(positions: Sequence[int], max_columns: int) -> List[int]:
    """Indices of the columns to keep so that at most `max_columns` remain, evenly spread.

    `positions` are the columns' logging ordinals, ascending. While there are too many, the interior column
    whose removal leaves the smallest gap between its neighbours goes (the earliest on ties); the first and
    the last column always stay (with `max_columns=1` only the last).
    """
    kept = list(range(len(positions)))
    if max_columns == 1:
        return kept[-1:]
    while len(kept) > max_columns:
        gaps = [positions[kept[i + 1]] - positions[kept[i - 1]] for i in range(1, len(kept) - 1)]
        del kept[1 + gaps.index(min(gaps))]
    return kept


class FilmstripHistory:
    """Each method's filmstrip columns and the last `(root, step)` logged.

    Args:
        methods: the methods logged.
        filmstrip_columns: the most columns a filmstrip shows and the state keeps.
    """

    def __init__(self, methods: Sequence[str], filmstrip_columns: int) -> None:
        self.filmstrip_columns = filmstrip_columns
        self._columns: Dict[str, List[Column]] = {method: [] for method in methods}
        self.last_logged: Optional[Tuple[str, int]] = None

    def columns(self, method: str) -> Tuple[Column, ...]:
        """The kept columns of `method`, oldest first (a read-only snapshot)."""
        return tuple(self._columns[method])

    def add_column(self, method: str, label: str, maps: Tensor) -> Tuple[Column, ...]:
        """Adds a column of `method`, thins the history, and returns the columns its filmstrip shows."""
        columns = self._columns[method]
        columns.append(Column(label, maps, columns[-1].position + 1 if columns else 0))
        kept = thin_columns([column.position for column in columns], self.filmstrip_columns)
        self._columns[method] = [columns[i] for i in kept]
        return self.columns(method)

    def state_dict(self) -> Dict[str, Any]:
        return {
            "history": {method: [tuple(column) for column in columns] for method, columns in self._columns.items()},
            "last_logged": self.last_logged,
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        history = state_dict.get("history", {})
        # Checkpoints of versions before the thinning hold every column as ``(label, maps)``.
        self._columns = {
            method: [
                Column(entry[0], entry[1], entry[2] if len(entry) > 2 else i)
                for i, entry in enumerate(history.get(method, []))
            ]
            for method in self._columns
        }
        last_logged = state_dict.get("last_logged")
        self.last_logged = None if last_logged is None else (str(last_logged[0]), int(last_logged[1]))
