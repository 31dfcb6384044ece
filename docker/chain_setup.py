"""One-shot set-up of the single-host stand-in for the consortium chain (docker/compose.yaml's
``chain-setup`` service).

In a real consortium every party generates its validator key on its own machine and shares
only the address and enode URL (docs/deployment.md). On one host, this script plays all four
parties, once:

* a node key per validator in its own data directory (``<nodes-root>/<name>/key``, mode 0600,
  owned by the Besu user), generated only if missing and never overwritten;
* the genesis (``<config>/genesis.json``), built by the same code as ``dsgw chain genesis``
  from the validators' addresses, written only if missing; an existing one must name exactly
  these validators and this chain id, or the script stops;
* per validator a static-nodes file listing the other validators' enode URLs, and
  ``validators.json`` (name, address, enode: the public facts the parties would exchange).

Run again, it changes nothing and exits 0, so the service can run on every ``up``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from gateway.chain.qbft import DEFAULT_BLOCK_PERIOD, NodeKey, QbftGenesis
from gateway.errors import DsgwError


class SetupError(Exception):
    """The volumes hold something this script will not touch."""


def _write(path: Path, text: str, mode: int) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temp, mode)
    os.replace(temp, path)


def _node(text: str) -> tuple[str, str]:
    name, sep, host = text.partition("=")
    if not sep or not name.isidentifier() or not host:
        raise argparse.ArgumentTypeError(f"--node {text!r} must be NAME=HOST")
    return name, host


def _owner(text: str) -> tuple[int, int]:
    uid, sep, gid = text.partition(":")
    if not sep or not uid.isdigit() or not gid.isdigit():
        raise argparse.ArgumentTypeError(f"--owner {text!r} must be UID:GID")
    return int(uid), int(gid)


def _key(directory: Path, owner: tuple[int, int] | None) -> tuple[NodeKey, bool]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "key"
    created = False
    if path.exists():
        key = NodeKey.from_besu_file(path.read_text(encoding="ascii"))
    else:
        key = NodeKey.generate()
        _write(path, key.to_besu_file(), 0o600)
        created = True
    if owner is not None:
        os.chown(path, *owner)
        os.chown(directory, *owner)
        directory.chmod(0o750)
    return key, created


def setup(
    *,
    config: Path,
    nodes_root: Path,
    nodes: list[tuple[str, str]],
    chain_id: int,
    block_period: int,
    p2p_port: int,
    owner: tuple[int, int] | None,
) -> dict[str, object]:
    """Make keys, genesis and static-nodes files; return what was made and found."""
    names = [name for name, _ in nodes]
    if len(set(names)) != len(names):
        raise SetupError("each --node name must be given once")
    config.mkdir(parents=True, exist_ok=True)
    keys: dict[str, NodeKey] = {}
    created: list[str] = []
    for name, _ in nodes:
        keys[name], made = _key(nodes_root / name, owner)
        if made:
            created.append(name)

    addresses = [keys[name].address for name, _ in nodes]
    genesis_path = config / "genesis.json"
    if genesis_path.exists():
        existing = QbftGenesis.from_json(genesis_path.read_bytes())
        problem = ""
        if sorted(existing.validators) != sorted(addresses):
            problem = (
                f"names validators {', '.join(existing.validators)}, but the keys are "
                f"{', '.join(sorted(addresses))}"
            )
        elif existing.chain_id != chain_id:
            problem = f"is for chain {existing.chain_id}, not {chain_id}"
        if problem:
            raise SetupError(
                f"{genesis_path} {problem}. A genesis never changes under a running chain: "
                "to start a new chain, remove the chain volumes (docker compose down -v)"
            )
        genesis = existing
        genesis_written = False
    else:
        genesis = QbftGenesis.create(
            validators=addresses, chain_id=chain_id, block_period_seconds=block_period
        )
        _write(genesis_path, genesis.to_json().decode("utf-8"), 0o644)
        genesis_written = True

    enodes = {name: keys[name].enode(host, p2p_port) for name, host in nodes}
    for name, _ in nodes:
        others = [enodes[other] for other, _ in nodes if other != name]
        _write(config / f"static-nodes-{name}.json", json.dumps(others, indent=2) + "\n", 0o644)
    public = [
        {"name": name, "address": keys[name].address, "enode": enodes[name]} for name, _ in nodes
    ]
    _write(config / "validators.json", json.dumps(public, indent=2) + "\n", 0o644)
    return {
        "chain_id": genesis.chain_id,
        "genesis_sha256": genesis.sha256,
        "genesis_written": genesis_written,
        "keys_created": created,
        "validators": public,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, required=True, help="shared, public files")
    parser.add_argument("--nodes-root", type=Path, required=True, help="<root>/<name>/key")
    parser.add_argument("--node", type=_node, action="append", required=True, dest="nodes")
    parser.add_argument("--chain-id", type=int, required=True)
    parser.add_argument("--block-period", type=int, default=DEFAULT_BLOCK_PERIOD)
    parser.add_argument("--p2p-port", type=int, default=30303)
    parser.add_argument("--owner", type=_owner, default=None, help="UID:GID of the node user")
    args = parser.parse_args(argv)
    owner = args.owner if os.geteuid() == 0 else None
    try:
        report = setup(
            config=args.config,
            nodes_root=args.nodes_root,
            nodes=args.nodes,
            chain_id=args.chain_id,
            block_period=args.block_period,
            p2p_port=args.p2p_port,
            owner=owner,
        )
    except (DsgwError, SetupError, OSError) as exc:
        print(f"chain-setup: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
