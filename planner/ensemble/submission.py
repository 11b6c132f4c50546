"""submission.csv: the sample submission's columns and rows, labels filled in by test file name.

Test predictions may come in any order; rows are matched by name, never by position: a row's id is a
test file's name or, as Kaggle samples often write it, its name without extension, in whichever column
holds them. The sample is read (and checked against the predicted test files) before any fitting, so a
mismatch fails fast.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path, PurePath

from planner.base.atomic import atomic_write_text
from planner.base.errors import UserError
from planner.base.jsonfile import read_text

SAMPLE = "sample_submission.csv"
DEFAULT_HEADER = ("image_id", "label")


@dataclass(frozen=True)
class Sample:
    """The submission's shape: header, rows as written, which column names the test file and which gets
    the label, and the predicted test file each row names.

    Attributes:
        header: the sample's header.
        rows: its rows, cells as written (short rows padded with empty cells).
        label_column: the column that gets the predicted class.
        id_column: the column that names the test file (its name, or its name without extension).
        files: the predicted test file name of each row, in row order.
    """

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    label_column: int
    id_column: int
    files: tuple[str, ...]


def load_sample(data_dir: Path | None, test_names: tuple[str, ...]) -> Sample:
    """Read ``DATA/sample_submission.csv``; without one, ``image_id,label`` rows in ``test_names`` order.

    The id column is the one whose values name the most distinct predicted test files (the first on a
    tie; a label column of class names that happen to be file stems names few), each by its file name
    (``img_0.png``) or, as many Kaggle samples write it, by its name without extension (``img_0``); the
    ids are kept as written. The ``label`` column (else the first other column) gets the prediction;
    other columns are copied.

    Args:
        data_dir: the data folder, or None when not known.
        test_names: the test file names that have predictions.

    Returns:
        The submission's header, rows, id and label columns, and the test file of each row.

    Raises:
        UserError: the sample is a folder, unreadable, not UTF-8 text, not CSV, has fewer than two
            columns, no row while there are test predictions, no column names the test files, an id
            without extension fits two test files, or it lists files that have no prediction.
    """
    sample = data_dir / SAMPLE if data_dir is not None else None
    if sample is None or not sample.exists():
        return Sample(DEFAULT_HEADER, tuple((name, "") for name in test_names), 1, 0, tuple(test_names))
    text = read_text(sample, "sample submission", "give the competition's sample_submission.csv (UTF-8 CSV with a "
                     "header such as image_id,label)")
    try:
        header, *rows = list(csv.reader(io.StringIO(text, newline=""))) or [[]]
    except csv.Error as error:
        raise UserError(f"sample submission {sample} is not CSV ({error}): give the competition's file") from None
    if len(header) < 2:
        raise UserError(f"{sample} needs a header with an id column and a label column, got {header}: give the "
                        "competition's sample_submission.csv, comma-separated (image_id,label)")
    rows = [row + [""] * (len(header) - len(row)) for row in rows if row]
    if not rows and test_names:
        raise UserError(f"sample submission {sample} lists no test file (only its header), the run predicted "
                        f"{len(test_names)}: give the competition's sample_submission.csv, or remove it to write "
                        "one row per test image")
    if not rows:
        return Sample(tuple(header), (), _label_column(header, 0), 0, ())
    names = _Names(test_names)
    matches = [len({row[column] for row in rows if names.known(row[column])}) for column in range(len(header))]
    id_column = max(range(len(header)), key=lambda column: (matches[column], -column))
    if matches[id_column] == 0:
        first = ", ".join(f"{column}={value}" for column, value in zip(header, rows[0], strict=True))
        example = f"e.g. {test_names[0]}" if test_names else "none: the run predicted no test_images/"
        raise UserError(
            f"no column of {sample} names the test files (its first row: {first}; test files: {example}): give "
            "the sample_submission.csv of these test images, its ids the file names with or without extension"
        )
    ids = [row[id_column] for row in rows]
    missing = [value for value in ids if not names.known(value)]
    if missing:
        raise UserError(
            f"{len(missing)} of the {len(ids)} test file(s) listed in {sample} (column {header[id_column]}) have "
            f"no prediction by name or by name without extension (first: {missing[0]}): put them in "
            "test_images/ and rerun planner run, or give the sample_submission.csv of these test images"
        )
    return Sample(tuple(header), tuple(tuple(row) for row in rows), _label_column(header, id_column), id_column,
                  tuple(names.file(value, sample) for value in ids))


class _Names:
    """The predicted test files by name, and by name without extension (a stem may fit several)."""

    def __init__(self, test_names: tuple[str, ...]) -> None:
        self.names = frozenset(test_names)
        self.stems: dict[str, list[str]] = {}
        for name in sorted(test_names):
            stem = PurePath(name).stem
            if stem != name:
                self.stems.setdefault(stem, []).append(name)

    def known(self, value: str) -> bool:
        """Whether ``value`` names a predicted test file, with or without its extension."""
        return value in self.names or value in self.stems

    def file(self, value: str, sample: Path) -> str:
        """The test file ``value`` names.

        Raises:
            UserError: ``value`` has no extension and two predicted files share it as their stem.
        """
        if value in self.names:
            return value
        files = self.stems[value]
        if len(files) > 1:
            raise UserError(f"id {value} in {sample} fits {len(files)} test files ({', '.join(files)}): name "
                            "the file with its extension in the sample, or rename one of the test files")
        return files[0]


def _label_column(header: list[str], id_column: int) -> int:
    """The ``label`` column, else the first column that is not the id column."""
    if "label" in header and header.index("label") != id_column:
        return header.index("label")
    return next(column for column in range(len(header)) if column != id_column)


def write_submission(path: Path, sample: Sample, test_names: tuple[str, ...], labels: list[str]) -> Path:
    """Write the sample's rows, in its order and as written, with each row's label column set to the
    prediction of the test file the row names.

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
    for row, name in zip(sample.rows, sample.files, strict=True):
        writer.writerow([by_name[name] if i == sample.label_column else cell for i, cell in enumerate(row)])
    return atomic_write_text(path, buffer.getvalue())
