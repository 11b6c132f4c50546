"""submission.csv: the sample submission's columns and rows, labels filled in by test file name.

Test predictions may come in any order; rows are matched by name, never by position. The sample is
read (and checked against the predicted test files) before any fitting, so a mismatch fails fast.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from planner.base.atomic import atomic_write_text
from planner.base.errors import UserError
from planner.base.jsonfile import read_text

SAMPLE = "sample_submission.csv"
DEFAULT_HEADER = ("image_id", "label")


@dataclass(frozen=True)
class Sample:
    """The submission's shape: header, rows (first cell = test file name), and which column gets the label."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    label_column: int


def load_sample(data_dir: Path | None, test_names: tuple[str, ...]) -> Sample:
    """Read ``DATA/sample_submission.csv``; without one, ``image_id,label`` rows in ``test_names`` order.

    The first column names the test file; the ``label`` column (else the second) gets the prediction;
    other columns are copied.

    Args:
        data_dir: the data folder, or None when not known.
        test_names: the test file names that have predictions.

    Returns:
        The submission's header, rows and label column.

    Raises:
        UserError: the sample is a folder, unreadable, not UTF-8 text, not CSV, has fewer than two
            columns, or lists files that have no prediction.
    """
    sample = data_dir / SAMPLE if data_dir is not None else None
    if sample is None or not sample.exists():
        return Sample(DEFAULT_HEADER, tuple((name, "") for name in test_names), 1)
    text = read_text(sample, "sample submission", "give the competition's sample_submission.csv (UTF-8 CSV with a "
                     "header such as image_id,label)")
    try:
        header, *rows = list(csv.reader(io.StringIO(text, newline=""))) or [[]]
    except csv.Error as error:
        raise UserError(f"sample submission {sample} is not CSV ({error}): give the competition's file") from None
    if len(header) < 2:
        raise UserError(f"{sample} needs a header with an id column and a label column, got {header}")
    rows = [row + [""] * (len(header) - len(row)) for row in rows if row]
    predicted = set(test_names)
    missing = [row[0] for row in rows if row[0] not in predicted]
    if missing:
        raise UserError(
            f"{len(missing)} test file(s) listed in {sample} have no prediction (first: {missing[0]}); "
            "predict the whole test folder"
        )
    return Sample(
        tuple(header), tuple(tuple(row) for row in rows), header.index("label") if "label" in header else 1
    )


def write_submission(path: Path, sample: Sample, test_names: tuple[str, ...], labels: list[str]) -> Path:
    """Write the sample's rows with each row's label taken from the prediction of the same file name.

    Args:
        path: where to write (atomically).
        sample: from ``load_sample``.
        test_names: test file names, one per prediction.
        labels: the predicted class name per test file.

    Returns:
        The path written.
    """
    by_name = dict(zip(test_names, labels, strict=True))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(sample.header)
    for row in sample.rows:
        writer.writerow([by_name[row[0]] if i == sample.label_column else cell for i, cell in enumerate(row)])
    return atomic_write_text(path, buffer.getvalue())
