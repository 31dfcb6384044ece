"""Where the governed gateway's CPU goes, by concern: a sampling profile under load.

Runs ``bench/profile_gateway.py`` (the governed gateway in one process, load from a child),
attaches ``py-spy`` to the server process for ``--sample-seconds`` in the middle of its
measured window (all threads, idle samples left out), and sorts every sampled stack into one
concern: the first frame, from the leaf toward the root, that belongs to a concern's module
decides (so ``json.dumps`` or SQLAlchemy called by the log append counts as the log append).
Stacks with no gateway frame fall to the library nearest the leaf: aiohttp and the event
loop, thread-pool hand-offs, and the store driver's own threads (aiosqlite runs every
statement of the store on its connection's thread, so those samples cannot name the caller:
the monitor's reads and the log's commits both land there).

    .venv/bin/python bench/profile_shares.py                    # 20 s run, 10 s sampled
    .venv/bin/python bench/profile_shares.py --raw FILE         # classify a py-spy raw file
    .venv/bin/python bench/profile_shares.py --json OUT.json    # also write the table

Needs ``py-spy`` (``bench/setup.sh`` installs it into the venv) and permission to trace the
process (root, or ``kernel.yama.ptrace_scope=0``). Shares are of sampled CPU, so they hold
on a busy machine better than absolute times; the run's own requests/s and CPU per call
are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (concern, pattern over a frame "function (path:line)"), tried leaf first, first match wins.
CONCERNS: tuple[tuple[str, str], ...] = (
    ("misuse monitor", r"gateway/monitoring/"),
    ("connector query", r"connectors/|gateway/dataplane/connectors\.py"),
    ("call-log append", r"gateway/ledger/(log|sinks|entries|hashing|canonical|records)\.py"),
    ("checkpoints and tree", r"gateway/ledger/(checkpoints|tree|merkle)\.py"),
    ("delivery marks and tracing", r"gateway/tracing/|gateway/products/delivery"),
    ("tokens and authorization", r"gateway/authorization/|jwt/|argon2"),
    ("policy snapshot", r"gateway/governance/"),
    ("privacy (masking, budgets)", r"gateway/privacy/"),
    ("data plane (other)", r"gateway/dataplane/"),
    ("metrics and access log", r"gateway/api/telemetry|prometheus_client|logging/"),
    ("HTTP pipeline (gateway)", r"gateway/api/"),
    ("other gateway code", r"gateway/|keys/"),
    ("store driver threads", r"aiosqlite/|asyncpg/|psycopg/|sqlite3"),
    ("SQLAlchemy (no gateway frame)", r"sqlalchemy/"),
    ("thread-pool hand-offs", r"concurrent/futures/|threading\.py|asyncio/threads"),
    ("aiohttp and event loop", r"aiohttp/|asyncio/|selectors"),
)
_COMPILED = tuple((name, re.compile(pattern)) for name, pattern in CONCERNS)


#: Concerns from here on are libraries: they count only when no gateway concern matched.
_FIRST_LIBRARY = next(i for i, (name, _) in enumerate(CONCERNS) if name == "store driver threads")


def concern_of(frames: list[str]) -> str:
    """The concern of one stack (root first): the gateway concern of the frame nearest the
    leaf, else the library of the frame nearest the leaf."""
    for concerns in (_COMPILED[:_FIRST_LIBRARY], _COMPILED[_FIRST_LIBRARY:]):
        for frame in reversed(frames):
            for name, pattern in concerns:
                if pattern.search(frame):
                    return name
    return "other"


def classify(raw: Path) -> Counter[str]:
    """Samples per concern in a ``py-spy record -f raw`` file (one folded stack per line)."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[concern_of(stack.split(";"))] += int(n)
    return counts


def print_table(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values()) or 1
    shares = {name: counts[name] / total for name, _ in counts.most_common()}
    print(f"{'share of CPU':>12}  concern  ({total} samples)")
    for name, share in shares.items():
        print(f"{100 * share:>11.1f}%  {name}")
    return shares


def _load_started(pid: int) -> bool:
    """Whether ``bench/load.py`` runs as a child of ``pid``."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        kids = children.read_text().split()
    except OSError:
        return False
    for kid in kids:
        try:
            if b"load.py" in Path(f"/proc/{kid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def profile(args: argparse.Namespace, workdir: Path) -> tuple[Path, str]:
    """Run the governed gateway under load and sample it; the raw file and the run's output."""
    out = workdir / "run.txt"
    raw = workdir / "py-spy.txt"
    command = [
        sys.executable,
        str(ROOT / "bench" / "profile_gateway.py"),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--rows",
        str(args.rows),
        "--concurrency",
        str(args.concurrency),
    ]
    with out.open("wb") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            # Setup (store, catalog, sources) takes a while; the load starts as a child
            # process, and the measured window follows its warm-up: sample its middle.
            deadline = time.monotonic() + 300
            while not _load_started(server.pid):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"profile_gateway.py ended early:\n{out.read_text()}")
                time.sleep(0.2)
            time.sleep(args.warmup + max(0.0, (args.seconds - args.sample_seconds) / 2))
            spy = Path(sys.executable).with_name("py-spy")
            subprocess.run(
                [
                    str(spy),
                    "record",
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(int(args.sample_seconds)),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(raw),
                    "--pid",
                    str(server.pid),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            server.wait(timeout=args.seconds + 120)
        finally:
            if server.poll() is None:
                server.kill()
    return raw, out.read_text(errors="replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, help="classify this py-spy raw file instead")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", type=Path, help="write shares and the run's figures here")
    parser.add_argument("--keep-raw", type=Path, help="copy the py-spy raw file here")
    args = parser.parse_args()
    if args.raw is not None:
        shares = print_table(classify(args.raw))
        run_output = ""
    else:
        with tempfile.TemporaryDirectory(prefix="dsgw-shares-") as tmp:
            raw, run_output = profile(args, Path(tmp))
            if args.keep_raw is not None:
                args.keep_raw.write_bytes(raw.read_bytes())
            figures = [
                line.strip()
                for line in run_output.splitlines()
                if re.match(r"\s*(rps|server_cpu_us_per_call|latency_ms|mean_batch):", line)
            ]
            print("\n".join(figures))
            shares = print_table(classify(raw))
    if args.json is not None:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        args.json.write_text(
            json.dumps(
                {"commit": commit, "shares": shares, "run": run_output[-2000:]},
                indent=2,
                ensure_ascii=False,
            )
        )


if __name__ == "__main__":
    main()
