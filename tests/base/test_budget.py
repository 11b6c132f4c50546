import pytest

from planner.base.budget import format_bytes, parse_budget
from planner.base.errors import UserError

GIB, MIB = 2**30, 2**20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16G", 16 * GIB),
        ("16GB", 16 * GIB),
        ("16GiB", 16 * GIB),
        ("16gib", 16 * GIB),
        ("16280MiB", 16280 * MIB),
        ("16000M", 16000 * MIB),
        ("1.5T", int(1.5 * 2**40)),
        ("512K", 512 * 1024),
        ("1048576", 1048576),
        (" 24 GiB ", 24 * GIB),
    ],
)
def test_parse_budget_accepts_the_forms_people_write(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["0", "0G", "-16G", "abc", "16X", "", "G", "16 G B", "1e9"])
def test_parse_budget_refuses_zero_negative_and_garbage(text):
    with pytest.raises(UserError) as error:
        parse_budget(text)
    assert "16G" in str(error.value)  # the message shows a correct example


def test_format_bytes_reads_like_nvidia_smi():
    assert format_bytes(16280 * MIB) == "15.90 GiB"
    assert format_bytes(300 * MIB) == "300 MiB"
    assert format_bytes(-54 * MIB) == "-54 MiB"
    assert format_bytes(None) == "-"
