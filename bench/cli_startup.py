"""What a ``dsgw`` command costs from start to exit: read-only verbs against a baseline.

Every command is a process, so its cost is what it imports and opens. This runs each verb
``--runs`` times, in turn with the others (so that a slow minute of a shared machine hurts
every verb alike), against a fresh data directory (``dsgw init``, SQLite store, no chain,
one merchant, the demo catalog not needed), and prints the median wall and CPU time of each.

Two baselines are measured in the same run: ``python -c pass`` (the interpreter alone) and
``python -c "import sqlalchemy.engine, pydantic_settings"`` (the two libraries every
store-reading verb needs, without any gateway code), so that a figure can be read against
what the machine did that minute. Bytecode is written as an installed package has it
(``PYTHONDONTWRITEBYTECODE`` is unset for the children).

    .venv/bin/python bench/cli_startup.py [--runs 7] [--json FILE] [--source DIR]

``--source DIR`` runs the CLI of another checkout (``python -m gateway.cli`` from there),
to compare versions in the same conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DSGW = [sys.executable, "-m", "gateway.cli"]

#: The verbs measured: every read-only listing a user types often, then the baselines.
VERBS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("merchant", "list"),
    ("agreement", "list"),
    ("dataset", "list"),
    ("scenario", "list"),
    ("calls",),
    ("anchors",),
    ("status",),
    ("alerts", "list"),
    ("product", "list"),
    ("measure", "list"),
    ("rating", "list"),
    ("onboarding", "list"),
    ("keys", "list"),
)
BASELINES: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import sqlalchemy.engine, pydantic_settings": [
        sys.executable,
        "-c",
        "import sqlalchemy.engine, pydantic_settings",
    ],
}


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU (user + system of the child) seconds of one run; raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr.decode(errors='replace')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose CLI runs")
    args = parser.parse_args()
    cwd = args.source.resolve()
    data_dir = Path(tempfile.mkdtemp(prefix="dsgw-cli-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"DSGW_DATA_DIR": str(data_dir / "data"), "DSGW_CHAIN": "none"})
    try:
        subprocess.run([*DSGW, "init"], env=env, cwd=cwd, capture_output=True, check=True)
        register = ["merchant", "register", "m1", "--name", "测试商户"]
        subprocess.run(
            [*DSGW, *register, "--credit-code", "91350100M000100Y43"],
            env=env,
            cwd=cwd,
            capture_output=True,
            check=True,
        )
        commands: dict[str, list[str]] = {
            **BASELINES,
            **{"dsgw " + " ".join(verb): [*DSGW, *verb] for verb in VERBS},
        }
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for argv in commands.values():  # a first run writes bytecode and warms the cache
            _timed(argv, env, cwd)
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(_timed(argv, env, cwd))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    results: dict[str, Any] = {}
    print(f"CLI of {cwd}")
    print(f"{'command':<46} {'wall s':>7} {'CPU s':>7}   (medians of {args.runs})")
    for name, runs in samples.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        results[name] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
        print(f"{name:<46} {wall:7.2f} {cpu:7.2f}")
    if args.json is not None:
        report = {"runs": args.runs, "source": str(cwd), "results": results}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
