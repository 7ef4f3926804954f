"""The GPU check's parts that run without a GPU: reading pytest's JUnit report, the table, and
its refusal on a machine without CUDA."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sequential_rationales.validation import InputError
from sequential_rationales_experiments.commands import gpu_check


def test_the_report_of_a_real_pytest_run_is_read(tmp_path):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_ok():\n    pass\n"
        "def test_bad():\n    assert 1 == 2, 'one is not two'\n"
        "@pytest.mark.skip(reason='no device')\ndef test_skipped():\n    pass\n")
    report = tmp_path / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={report}", str(tmp_path / "test_sample.py")],
                   cwd=tmp_path, capture_output=True, timeout=120)
    rows = {row["name"]: row for row in gpu_check.test_rows(report)}
    assert {name: row["outcome"] for name, row in rows.items()} == {
        "test_sample::test_ok": "passed", "test_sample::test_bad": "FAILED",
        "test_sample::test_skipped": "skipped"}
    assert "one is not two" in rows["test_sample::test_bad"]["message"]
    text = gpu_check.table(list(rows.values()), [{
        "config": "gpt2-small-100", "dtype": "bfloat16", "targets": 192, "paper_s": 30.0,
        "ours_s": 10.0, "ratio": 3.0, "identical_of": "190/192"}], "a GPU", 12.0)
    assert "1/3 tests passed" in text and "gpt2-small-100" in text and "3.00" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_check_says_so_in_one_line(tmp_path):
    with pytest.raises(InputError, match="the GPU check needs a CUDA device"):
        gpu_check.main(["--out", str(tmp_path)])
