"""Quarantine -> silver again (`purchases reprocess`, DESIGN §6): the SQL that picks
quarantined rows and rewrites the quarantine files they came from.

Pure SQL builders, like `silver`: the selected rows go through silver's own row rules and
duplicate check; this module only adds the selection and the quarantine rewrite.

Relations (registered by the step):
  quarantine_rows(q_file, <QUARANTINE_COLUMNS>)  rows of the current quarantine files, q_file
      the file's position in the step's list
  reprocess_input(row_id, q_file, selected, <QUARANTINE_COLUMNS>)  every row of the files that
      hold a selected row (materialised once, so row_id is stable for the whole step)
  classified                                   silver.classified_sql over the selected rows

Quarantine files are immutable: a file whose rows changed is replaced by a new one (its
unselected rows, plus its selected rows that are still rejected, with their new reason) and
listed as superseded in the batch's commit record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from purchases.contract import INPUT_COLUMNS, QUARANTINE_COLUMNS, Reason
from purchases.silver import REJECTED

UNSELECTABLE: frozenset[Reason] = frozenset({Reason.MALFORMED_ROW, Reason.RECORD_TOO_LARGE})
"""Reasons whose rows hold no parsed fields (only a raw line): nothing to re-validate."""

SELECTABLE: tuple[Reason, ...] = tuple(r for r in Reason if r not in UNSELECTABLE)


def quarantine_rows_sql(views: Sequence[str]) -> str:
    """Every row of the given quarantine views, tagged with the view's position (q_file)."""
    cols = ", ".join(QUARANTINE_COLUMNS)
    return "\nUNION ALL\n".join(
        # Bandit B608: internal names only
        f"SELECT {i} AS q_file, {cols} FROM {v}" for i, v in enumerate(views)  # nosec B608
    )


def selected_sql(reasons: str, day: date | None) -> str:
    """Predicate of a selected row: its reason is in the table `reasons` (and it landed on
    `day`). Rows without parsed fields are never selected, whatever `reasons` holds."""
    never = ", ".join(f"'{r}'" for r in sorted(UNSELECTABLE))
    # Bandit B608: view name internal, reason codes constants
    cond = f"(reason IN (SELECT reason FROM {reasons}) AND reason NOT IN ({never})"  # nosec B608
    if day is not None:
        cond += f" AND ingestion_date = DATE '{day.isoformat()}'"  # a date: no quoting needed
    return cond + ")"


def reprocess_input_sql(quarantine_rows: str, selected: str) -> str:
    """Every row of the quarantine files holding a selected row, numbered, with `selected`."""
    # Bandit B608: internal names only
    return f"""
SELECT ROW_NUMBER() OVER (ORDER BY q_file, source_file) AS row_id, q.*,
  {selected} AS selected
FROM {quarantine_rows} q
WHERE q_file IN (SELECT q_file FROM {quarantine_rows} WHERE {selected})"""  # nosec B608


def requeued_sql(reprocess_input: str) -> str:
    """The selected rows in the shape of silver's raw_rows (original file and date kept)."""
    return f"""
SELECT row_id, source_file, ingestion_date, {", ".join(INPUT_COLUMNS)}
FROM {reprocess_input} WHERE selected"""  # nosec B608  # internal names only


def changed_files_sql(classified: str, reprocess_input: str) -> str:
    """Files (q_file) with a selected row that leaves quarantine or gets another reason."""
    return f"""
SELECT DISTINCT i.q_file
FROM {reprocess_input} i JOIN {classified} c ON c.row_id = i.row_id
WHERE c.outcome <> '{REJECTED}' OR c.reason <> i.reason"""  # nosec B608  # internal names only


def requarantine_sql(classified: str, reprocess_input: str) -> str:
    """The replacement of every changed file: its unselected rows as they were, plus its
    selected rows still rejected, with their new reason (line, raw line, file, date kept)."""
    cols = ", ".join(QUARANTINE_COLUMNS)
    kept = ", ".join(f"i.{c}" if c != "reason" else "c.reason" for c in QUARANTINE_COLUMNS)
    changed = changed_files_sql(classified, reprocess_input)
    return f"""
SELECT {cols} FROM (
  SELECT {cols} FROM {reprocess_input}
  WHERE NOT selected AND q_file IN ({changed})
  UNION ALL
  SELECT {kept}
  FROM {reprocess_input} i JOIN {classified} c ON c.row_id = i.row_id
  WHERE c.outcome = '{REJECTED}' AND i.q_file IN ({changed})
) q"""  # nosec B608  # internal names only


def selected_counts_sql(reprocess_input: str) -> str:
    """(source_file, ingestion_date, rows) of the selected rows."""
    # Bandit B608: internal names only
    return f"""
SELECT source_file, ingestion_date, COUNT(*) AS n
FROM {reprocess_input} WHERE selected GROUP BY source_file, ingestion_date"""  # nosec B608
