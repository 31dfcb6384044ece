"""Load runs of the query-path benchmark: ``wrk`` with ``bench/post_bodies.lua``, or the
aiohttp closed loop of ``bench/load.py`` as the fallback.

Both give the same result document: 200 answers and errors in the measured window, req/s,
latency p50/p95/p99/max (ms), every 200 answer's record seq (governed side), and the CPU
seconds of the server's process tree, of the load generator and of the whole machine in the
window, read from ``/proc``. With wrk, a warm-up run of ``warmup`` seconds (not measured,
its 200s and seqs still counted for the log check) precedes the measured run; the window is
the measured wrk process's lifetime.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load import machine_busy_seconds, process_cpu_seconds

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "post_bodies.lua"
NOT_SERVER = "anvil"
MISSING_WRK = (
    "wrk is not installed: run `bash bench/setup.sh` (apt-get install -y wrk), "
    "or pass --load-generator aiohttp to use bench/load.py instead"
)


@dataclass(frozen=True, slots=True)
class Load:
    generator: str  # "wrk" or "aiohttp"
    seconds: float
    warmup: float
    concurrency: int
    threads: int = 1


def check_generator(generator: str) -> None:
    if generator == "wrk" and shutil.which("wrk") is None:
        raise SystemExit(MISSING_WRK)


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of a process and its descendants (the workers of ``serve
    --workers``), less the local chain node (``anvil``) the gateway may run as a child."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.split("(", 1)[1] != NOT_SERVER:
            children.setdefault(int(tail.split()[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            total += process_cpu_seconds(pid)
        except (OSError, IndexError):
            continue
        todo += children.get(pid, [])
    return total


def wait_idle(pid: int, timeout: float = 60.0) -> None:
    """Wait until the server has answered what an earlier run left in flight (wrk closes
    its connections at the deadline; the server still answers the requests it has read),
    i.e. until it uses less than a tenth of a core for 0.2 s."""
    deadline = time.monotonic() + timeout
    last = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = tree_cpu_seconds(pid)
        if now - last < 0.02:
            return
        last = now


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wrk(
    base: str, path: str, bodies: Path, seconds: float, load: Load, token: str, seqs: Path | None
) -> dict[str, Any]:
    command = [
        "wrk", f"-t{load.threads}", f"-c{load.concurrency}", f"-d{max(1, round(seconds))}s",
        "--latency", "--timeout", "30s", "-s", str(LUA), base,
        "--", path, str(bodies), token, str(seqs or ""),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)
    result: dict[str, Any] = json.loads(line.removeprefix("WRKJSON "))
    result["text"] = done.stdout.split("WRKJSON", 1)[0].rstrip()
    return result


def run_wrk(
    base: str, path: str, bodies: Path, load: Load, server_pid: int, token: str = ""
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dsgw-wrk-") as tmp:
        warm_seqs = Path(tmp) / "warm.txt" if token else None
        seqs = Path(tmp) / "seqs.txt" if token else None
        warm = (
            _wrk(base, path, bodies, load.warmup, load, token, warm_seqs)
            if load.warmup > 0
            else None
        )
        wait_idle(server_pid)
        client0, machine0 = _children_cpu(), machine_busy_seconds()
        server0 = tree_cpu_seconds(server_pid)
        run = _wrk(base, path, bodies, load.seconds, load, token, seqs)
        server1, machine1, client1 = (
            tree_cpu_seconds(server_pid),
            machine_busy_seconds(),
            _children_cpu(),
        )
        record_seqs = [
            int(x)
            for f in (warm_seqs, seqs)
            if f is not None and f.exists()
            for x in f.read_text().split()
        ]
    seconds = run["duration_us"] / 1e6
    lat = run["latency_us"]
    errors = dict(run["statuses"])
    errors |= {k: v for k, v in run["socket_errors"].items() if v}
    return {
        "generator": "wrk",
        "concurrency": load.concurrency,
        "warmup_s": load.warmup,
        "seconds": seconds,
        "ok": run["ok"],
        "errors": errors,
        "rps": run["ok"] / seconds,
        "latency_ms": {q: lat[q] / 1000 for q in ("p50", "p95", "p99", "max")},
        "total_ok": run["ok"] + (warm["ok"] if warm else 0),
        "server_cpu_s": server1 - server0,
        "client_cpu_s": client1 - client0,
        "machine_busy_cpu_s": machine1 - machine0,
        "record_seqs": record_seqs,
        "missing_record_header": run["missing_record_header"]
        + (warm["missing_record_header"] if warm else 0),
        "wrk_output": run["text"],
    }


def load_json(command: list[str]) -> dict[str, Any]:
    """Run a load generator that prints one JSON document; its stderr is shown."""
    done = subprocess.run(command, capture_output=True, check=False, text=True)
    if done.returncode != 0:
        raise SystemExit(f"load generator failed ({done.returncode}):\n{done.stderr}")
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_aiohttp(
    url: str, bodies: Path, load: Load, server_pid: int, token: str = ""
) -> dict[str, Any]:
    command = [
        sys.executable, str(BENCH / "load.py"),
        "--url", url, "--bodies", str(bodies),
        "--seconds", str(load.seconds), "--warmup", str(load.warmup),
        "--concurrency", str(load.concurrency), "--server-pid", str(server_pid),
    ]  # fmt: skip
    if token:
        command += ["--token", token]
    result = load_json(command)
    result.setdefault("record_seqs", [])
    return result | {"generator": "aiohttp"}


def run_load(
    base: str, path: str, bodies: Path, load: Load, server_pid: int, token: str = ""
) -> dict[str, Any]:
    if load.generator == "wrk":
        return run_wrk(base, path, bodies, load, server_pid, token)
    return run_aiohttp(base + path, bodies, load, server_pid, token)
