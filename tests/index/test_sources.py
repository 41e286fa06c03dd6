"""Every prompt file format streams its prompts; bad files raise BankError."""

import gzip
import json

import pandas as pd
import pytest

from index.sources import iter_prompts, reader_for
from promptblend.errors import BankError

PROMPTS = ["a cat, 4k", "a dog by greg rutkowski", 'a "quoted", comma prompt']


def _write(tmp_path, fmt):
    p = tmp_path / f"bank{fmt}"
    if fmt in (".txt", ".txt.gz"):
        data = "\n".join(PROMPTS) + "\n"
        p.write_bytes(gzip.compress(data.encode()) if fmt.endswith(".gz") else data.encode())
    elif fmt in (".csv", ".csv.gz"):
        df = pd.DataFrame({"id": range(3), "prompt": PROMPTS})
        df.to_csv(p, index=False, compression="gzip" if fmt.endswith(".gz") else None)
    elif fmt == ".parquet":
        pd.DataFrame({"prompt": PROMPTS, "n": range(3)}).to_parquet(p)
    elif fmt in (".jsonl", ".jsonl.gz"):
        data = "\n".join(json.dumps({"prompt": t, "x": 1}) for t in PROMPTS) + "\n"
        p.write_bytes(gzip.compress(data.encode()) if fmt.endswith(".gz") else data.encode())
    return p


@pytest.mark.parametrize("fmt", [".txt", ".txt.gz", ".csv", ".csv.gz", ".parquet", ".jsonl", ".jsonl.gz"])
def test_every_format_reads_all_prompts(tmp_path, fmt):
    path = _write(tmp_path, fmt)
    assert [t for _, t in iter_prompts([path])] == PROMPTS


def test_sources_are_numbered_in_order(tmp_path):
    a = _write(tmp_path, ".txt")
    b = _write(tmp_path, ".parquet")
    got = list(iter_prompts([a, b]))
    assert [n for n, _ in got] == [0, 0, 0, 1, 1, 1]


def test_jsonl_accepts_bare_strings(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text('"one"\n\n"two"\n')
    assert [t for _, t in iter_prompts([p])] == ["one", "two"]


def test_csv_without_prompt_column(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("id,caption_text\n1,x\n")
    with pytest.raises(BankError, match="no prompt column"):
        list(iter_prompts([p]))


def test_parquet_without_prompt_column(tmp_path):
    p = tmp_path / "b.parquet"
    pd.DataFrame({"other": ["x"]}).to_parquet(p)
    with pytest.raises(BankError, match="no prompt column"):
        list(iter_prompts([p]))


def test_bad_jsonl_line(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text('{"prompt": "ok"}\n{broken\n')
    with pytest.raises(BankError, match="b.jsonl:2"):
        list(iter_prompts([p]))


def test_unsupported_and_missing_files(tmp_path):
    with pytest.raises(BankError, match="unsupported"):
        reader_for(tmp_path / "bank.xlsx")
    with pytest.raises(BankError, match="not found"):
        list(iter_prompts([tmp_path / "nope.txt"]))


def test_undecodable_bytes_read_as_errors_replace_did_and_are_counted(tmp_path):
    from index.sources import DecodeReport

    raw = [b"caf\xe9 cr\xe8me", b"ok line", b"cut \xe2\x82 short", b"\xff\xfe"]
    p = tmp_path / "b.txt.gz"
    p.write_bytes(gzip.compress(b"\n".join(raw) + b"\n"))
    report = DecodeReport()
    assert [t for _, t in iter_prompts([p], report)] == [r.decode("utf-8", "replace") for r in raw]
    assert report.replaced == {0: 3} and report.first_line == {0: 1} and report.total() == 3
    with pytest.raises(BankError, match=r"b\.txt\.gz:1 is not valid UTF-8"):
        list(iter_prompts([p], DecodeReport(strict=True)))


def test_lone_surrogates_from_json_escapes_are_replaced(tmp_path):
    from index.sources import DecodeReport

    p = tmp_path / "b.jsonl"
    p.write_text('"half \\ud83c pair"\n"fine"\n')
    report = DecodeReport()
    assert [t for _, t in iter_prompts([p], report)] == ["half \ufffd pair", "fine"]
    assert report.total() == 1


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "bad crc"])
def test_damaged_gzip_is_a_bank_error_naming_the_file(tmp_path, damage):
    data = gzip.compress(("a red castle\n" * 5000).encode())
    p = tmp_path / "b.txt.gz"
    p.write_bytes({"truncated": data[: len(data) // 2], "not gzip": b"plain text\n",
                   "bad crc": data[:-8] + b"\0" * 8}[damage])
    with pytest.raises(BankError, match=r"cannot read prompt file .*b\.txt\.gz"):
        list(iter_prompts([p]))
