"""``dsgw workdays`` run as an operator runs it: separate processes on a real data directory,
the notice saved as GB18030 by Notepad on Chinese Windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NOTICES = Path(__file__).parent / "data" / "notices"


def dsgw(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=300,
        check=False,
    )


def test_import_a_notice_with_confirmation(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert dsgw(data_dir, "init").returncode == 0
    notice = tmp_path / "2027年节假日通知.txt"
    notice.write_bytes((NOTICES / "notice-2027-test.txt").read_text("utf-8").encode("gb18030"))

    # Shown, then refused at the prompt: nothing is loaded.
    declined = dsgw(data_dir, "workdays", "import", str(notice), "--by", "张敏", stdin="n\n")
    assert declined.returncode == 1, declined.stderr
    assert "元旦" in declined.stdout and "2027-01-01 – 2027-01-03" in declined.stdout
    assert "2027-02-20" in declined.stdout  # the make-up Saturday
    shown = json.loads(dsgw(data_dir, "workdays", "show", "--json").stdout)
    assert [row["year"] for row in shown] == [2025, 2026, 2027]
    assert shown[-1]["origin"] is None  # 2027: not loaded

    accepted = dsgw(data_dir, "workdays", "import", str(notice), "--by", "张敏", stdin="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert "2027 schedule loaded by 张敏" in accepted.stdout
    shown = json.loads(dsgw(data_dir, "workdays", "show", "--json").stdout)
    (loaded,) = [row for row in shown if row["year"] == 2027]
    assert loaded["origin"] == "store" and loaded["loaded_by"] == "张敏"

    again = dsgw(data_dir, "workdays", "import", str(notice), "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["loaded"] is False


def test_a_bad_notice_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert dsgw(data_dir, "init").returncode == 0
    wrong = tmp_path / "notice.txt"
    text = (NOTICES / "notice-2026.txt").read_text("utf-8")
    wrong.write_text(text.replace("5月9日（周六）", "5月9日（周日）"), "utf-8")
    result = dsgw(data_dir, "workdays", "import", str(wrong), "--yes")
    assert result.returncode == 1
    assert "5月9日 is written as 周日" in result.stderr
    assert "Traceback" not in result.stderr
    # A shipped year with different days is refused too, naming both.
    shipped = tmp_path / "2026.txt"
    shipped.write_text(text.replace("共9天。2月14日（周六）、", "共9天。"), "utf-8")
    refused = dsgw(data_dir, "workdays", "import", str(shipped), "--yes")
    assert refused.returncode == 1 and "conflicting schedules for 2026" in refused.stderr
