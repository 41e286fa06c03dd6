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
