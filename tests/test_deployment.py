"""The production deployment (docs/deployment.md): docker/compose.yaml and docker/Dockerfile
checked statically against the documented topology and the real settings (the Docker engine
does not run here), the QBFT genesis tool, and the anchor registry owner's verbs against a
real anvil node."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from eth_account import Account
from eth_utils.crypto import keccak
from web3.exceptions import ContractLogicError

from gateway.chain.backends import AnvilBackend
from gateway.chain.contract import AnchorRegistry
from gateway.chain.qbft import (
    MIN_VALIDATORS,
    QBFT_MIX_HASH,
    NodeKey,
    QbftExtraData,
    QbftGenesis,
    parse_address,
    tolerated_faults,
)
from gateway.cli.main import cli
from gateway.errors import ValidationError
from gateway.settings import flat_names
from keys.keystore import KeyPurpose, Keystore
from keys.passphrase import load_passphrase

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
PARTIES = ("bureau", "operator", "exchange", "supervisor")
GATEWAYS = ("gateway-1", "gateway-2")

# Options of `besu` the compose file may use, checked against Besu's CLI reference
# (besu-docs, public-networks/reference/cli/options.md): a typo fails here, not at start-up.
BESU_OPTIONS = {
    "--data-path",
    "--genesis-file",
    "--node-private-key-file",
    "--static-nodes-file",
    "--bootnodes",
    "--discovery-enabled",
    "--nat-method",
    "--p2p-host",
    "--p2p-port",
    "--sync-mode",
    "--min-gas-price",
    "--tx-pool-min-gas-price",
    "--rpc-http-enabled",
    "--rpc-http-host",
    "--rpc-http-port",
    "--rpc-http-api",
    "--host-allowlist",
    "--revert-reason-enabled",
    "--logging",
}

# Besu's documented QBFT extraData example (besu-docs, "Configure QBFT consensus", Extra data):
# these four validators, in this order, encode to exactly these bytes.
BESU_DOC_VALIDATORS = (
    "0x4592c8e45706cc08b8f44b11e43cba0cfc5892cb",
    "0x06e23768a0f59cf365e18c2e0c89e151bcdedc70",
    "0xc5327f96ee02d7bcbc1bf1236b8c15148971e1de",
    "0xab5e7f4061c605820d3744227eed91ff8e2c8908",
)
BESU_DOC_EXTRA_DATA = (
    "0xf87aa00000000000000000000000000000000000000000000000000000000000000000f854944592c8e4"
    "5706cc08b8f44b11e43cba0cfc5892cb9406e23768a0f59cf365e18c2e0c89e151bcdedc7094c5327f96"
    "ee02d7bcbc1bf1236b8c15148971e1de94ab5e7f4061c605820d3744227eed91ff8e2c8908c080c0"
)
# ... and its contract-selection genesis: no validators in the header.
BESU_DOC_EMPTY_EXTRA_DATA = (
    "0xe5a00000000000000000000000000000000000000000000000000000000000000000c0c080c0"
)


# --- the compose file ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def _documented_services() -> dict[str, dict[str, str]]:
    """The services table of docs/deployment.md, by service name."""
    lines = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| service | image |"))
    columns = [c.strip() for c in lines[header].strip("|").split("|")]
    rows: dict[str, dict[str, str]] = {}
    for line in itertools.takewhile(lambda x: x.startswith("|"), lines[header + 2 :]):
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        row = dict(zip(columns, cells, strict=True))
        rows[row["service"]] = row
    return rows


def _networks(service: dict[str, Any]) -> set[str]:
    if service.get("network_mode") == "none":
        return {"none"}
    networks = service.get("networks", [])
    return set(networks) if isinstance(networks, list | dict) else set()


def _long_running(service: dict[str, Any]) -> bool:
    return service.get("restart", "no") != "no"


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment is written as a mapping"
    return {str(k): str(v) for k, v in environment.items()}


def _command(service: dict[str, Any], key: str = "command") -> list[str]:
    value = service.get(key, [])
    assert isinstance(value, list), f"{key} is written as a list"
    return [str(v) for v in value]


def _option(arguments: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in arguments if a.startswith(name + "=")]
    assert len(values) == 1, f"{name} given {len(values)} times in {arguments}"
    return values[0]


def test_services_match_the_documented_topology(services: dict[str, dict[str, Any]]) -> None:
    documented = _documented_services()
    assert set(services) == set(documented)
    for name, row in documented.items():
        service = services[name]
        assert service["image"] == row["image"], name
        assert row["kind"] in ("long-running", "one-shot"), name
        assert _long_running(service) == (row["kind"] == "long-running"), name
        assert _networks(service) == {n.strip() for n in row["networks"].split(",")}, name


def test_the_topology_has_every_tier(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "redis", "init", "lb", "chain-setup"} <= set(services)
    assert set(GATEWAYS) <= set(services)
    assert {n for n in services if n.startswith("gateway-")} == set(GATEWAYS)


def test_every_image_is_pinned_to_an_exact_version(services: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # An exact release: PostgreSQL numbers them MAJOR.MINOR, the others MAJOR.MINOR.PATCH.
    pinned = re.compile(r"[a-z0-9./-]+:\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?(@sha256:[0-9a-f]{64})?")
    for name, service in services.items():
        image = service["image"]
        match = pinned.fullmatch(image)
        assert match, f"{name}: image {image!r} is not pinned to an exact version"
        assert "latest" not in image, name
        if "build" in service:
            # The image built from this repository carries the package's version.
            assert image == f"dsgw:{version}", name
            assert service["build"]["dockerfile"] == "docker/Dockerfile"


def test_long_running_services_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if _long_running(service):
            assert check.get("test") and not check.get("disable"), name
            assert service["restart"] == "unless-stopped", name
        else:
            assert check.get("disable") is True, f"{name}: a one-shot service is never healthy"


def test_gateways_wait_for_their_dependencies(services: dict[str, dict[str, Any]]) -> None:
    for name in GATEWAYS:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["init"]["condition"] == "service_completed_successfully", name
    assert services["init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for party in PARTIES:
        depends = services[f"besu-{party}"]["depends_on"]
        assert depends["chain-setup"]["condition"] == "service_completed_successfully"


def test_gateways_use_postgres_redis_and_the_operators_node(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in GATEWAYS:
        env = _environment(services[name])
        assert env["DSGW_DATABASE_URL"].startswith("postgresql://dsgw:")
        assert env["DSGW_DATABASE_URL"].endswith("@postgres:5432/dsgw")
        assert env["DSGW_REDIS_URL"].endswith("@redis:6379/0")
        assert env["DSGW_CHAIN"] == "rpc"
        assert env["DSGW_CHAIN_RPC_URL"] == "http://besu-operator:8545"
        assert env["DSGW_CHAIN_CONTRACT"].startswith("${DSGW_CHAIN_CONTRACT")
        assert env["DSGW_KEYSTORE_PASSPHRASE_FILE"] == "/run/secrets/keystore_passphrase"
        assert services[name]["secrets"] == ["keystore_passphrase"]
        assert "dsgw-data:/var/lib/dsgw" in services[name]["volumes"]
    # Both nodes run the same thing, with the same settings.
    one, two = (services[n] for n in GATEWAYS)
    assert {k: v for k, v in one.items()} == {k: v for k, v in two.items()}
    # init writes the keystore and the anchoring account the gateways then share.
    init = services["init"]
    assert "dsgw init" in " ".join(_command(init)) and "dsgw chain account" in " ".join(
        _command(init)
    )
    assert _environment(init)["DSGW_DATABASE_URL"] == _environment(one)["DSGW_DATABASE_URL"]
    assert "dsgw-data:/var/lib/dsgw" in init["volumes"]


def test_dsgw_variables_are_real_settings(services: dict[str, dict[str, Any]]) -> None:
    fields = {f"DSGW_{name.upper()}" for name in flat_names()}
    used = {
        key
        for service in services.values()
        for key in _environment(service)
        if key.startswith("DSGW_")
    }
    assert used, "the compose file configures dsgw through DSGW_* variables"
    assert used - fields == set(), "not settings of gateway/settings.py"


def test_no_secret_is_written_in_the_compose_file(services: dict[str, dict[str, Any]]) -> None:
    text = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    assert not re.search(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])", text), (
        "something like a private key"
    )
    secretive = re.compile(r"PASSWORD|PASSPHRASE|SECRET|PRIVATE|TOKEN|AUTH", re.IGNORECASE)
    for name, service in services.items():
        for key, value in _environment(service).items():
            if secretive.search(key):
                assert value.startswith("${") or value.startswith("/run/secrets/"), (
                    f"{name}: {key} must come from .env or a secret file, not the compose file"
                )
            for userinfo in re.findall(r"://[^/@\s]*:([^@/\s]*)@", value):
                assert userinfo.startswith("${"), f"{name}: {key} embeds a literal password"
    compose_secrets = yaml.safe_load(text)["secrets"]
    assert compose_secrets["keystore_passphrase"]["file"] == "./secrets/keystore_passphrase"
    ignored = (DOCKER / ".gitignore").read_text().split()
    assert ".env" in ignored and "secrets/" in ignored
    # The example settings file gives no secret values.
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            if secretive.search(key):
                assert value == "", f".env.example gives {key} a value"


def test_validators_are_exactly_the_four_parties(services: dict[str, dict[str, Any]]) -> None:
    besu = {n for n, s in services.items() if s["image"].startswith("hyperledger/besu:")}
    assert besu == {f"besu-{p}" for p in PARTIES}
    setup = _command(services["chain-setup"])
    nodes = dict(a.removeprefix("--node=").split("=", 1) for a in setup if a.startswith("--node="))
    assert set(nodes) == set(PARTIES)
    assert len(set(nodes.values())) == len(PARTIES)
    setup_volumes = set(services["chain-setup"]["volumes"])
    for party in PARTIES:
        service = services[f"besu-{party}"]
        arguments = _command(service, "entrypoint") + _command(service)
        assert arguments[0] == "besu"
        for argument in arguments[1:]:
            assert argument.split("=", 1)[0] in BESU_OPTIONS, f"unknown Besu option {argument}"
        address = service["networks"]["chain"]["ipv4_address"]
        assert address == nodes[party] == _option(arguments, "--p2p-host")
        assert _option(arguments, "--static-nodes-file") == f"/etc/besu/static-nodes-{party}.json"
        assert _option(arguments, "--node-private-key-file") == "/var/lib/besu/key"
        assert _option(arguments, "--genesis-file") == "/etc/besu/genesis.json"
        assert _option(arguments, "--rpc-http-api") == "ETH,NET,QBFT,WEB3"
        # The free-gas network docs/deployment.md describes.
        assert _option(arguments, "--min-gas-price") == "0"
        # Each validator's key lives in its own volume, written by chain-setup only.
        assert f"besu-{party}-data:/var/lib/besu" in service["volumes"]
        assert f"besu-{party}-data:/chain/nodes/{party}" in setup_volumes
        assert "chain-config:/etc/besu:ro" in service["volumes"]


def test_rpc_stays_internal_except_the_operators(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert compose["networks"]["chain"]["internal"] is True
    assert compose["networks"]["data"]["internal"] is True
    published = {n: s["ports"] for n, s in services.items() if s.get("ports")}
    assert set(published) == {"lb", "besu-operator"}
    assert published["besu-operator"] == ["127.0.0.1:8545:8545"]
    operator = services["besu-operator"]
    allowlist = _option(_command(operator), "--host-allowlist").split(",")
    assert "besu-operator" in allowlist  # the name the gateways use
    for party in set(PARTIES) - {"operator"}:
        assert "besu-operator" not in _option(
            _command(services[f"besu-{party}"]), "--host-allowlist"
        )
    assert services["chain-setup"]["network_mode"] == "none"


def test_the_load_balancer_checks_both_gateway_nodes(services: dict[str, dict[str, Any]]) -> None:
    config = (DOCKER / "lb" / "haproxy.cfg").read_text(encoding="utf-8")
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+):8080\b", config, re.MULTILINE)
    assert {name for name, _ in servers} == set(GATEWAYS)
    assert {host for _, host in servers} == set(GATEWAYS)
    assert re.search(r"^\s*http-check send meth GET uri /readyz\b", config, re.MULTILINE)
    assert re.search(r"^\s*http-check expect status 200$", config, re.MULTILINE)
    assert re.search(r"^\s*default-server check\b", config, re.MULTILINE)
    assert "./lb/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in services["lb"]["volumes"]
    for gateway in GATEWAYS:
        assert "front" in _networks(services[gateway])
    assert _networks(services["lb"]) == {"front"}


# --- the Dockerfile --------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def test_dockerfile_bases_are_pinned_to_exact_versions() -> None:
    froms = [args for instruction, args in _dockerfile() if instruction == "FROM"]
    assert len(froms) >= 2, "multi-stage: build, then a runtime without build tools"
    for base in froms:
        image = base.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image


def test_dockerfile_runs_as_a_fixed_non_root_user_with_a_health_check() -> None:
    instructions = _dockerfile()
    runtime = instructions[max(i for i, (n, _) in enumerate(instructions) if n == "FROM") :]
    names = [n for n, _ in runtime]
    users = [args for n, args in runtime if n == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert re.fullmatch(r"\d+:\d+", users[-1]), "a numeric uid:gid, fixed across hosts"
    assert int(users[-1].split(":")[0]) >= 1000
    last_user = max(i for i, n in enumerate(names) if n == "USER")
    assert last_user < names.index("ENTRYPOINT") and last_user < names.index("CMD")
    args = dict(runtime)
    assert args["ENTRYPOINT"] == '["dsgw"]'
    assert args["CMD"] == '["serve", "--host", "0.0.0.0"]'
    assert args["EXPOSE"] == "8080"
    assert "healthcheck.py" in args["HEALTHCHECK"]
    healthcheck = (DOCKER / "healthcheck.py").read_text()
    assert "/readyz" in healthcheck and "urllib.request" in healthcheck
    # The contract artifact the gateway checks the registry against is in the image.
    copies = [a for n, a in instructions if n == "COPY"]
    assert any("contracts/build/AnchorRegistry.json" in c for c in copies)


def test_dockerignore_lets_in_only_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list: everything out unless let in"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        source
        for instruction, args in _dockerfile()
        if instruction == "COPY" and "--from=" not in args
        for source in args.split()[:-1]
    }
    assert copied <= allowed
    for never in (".venv", "node_modules", "dsgw-data", ".git", ".env", "secrets"):
        assert f"**/{never}" in patterns
        assert not any(never in a.split("/") for a in allowed)


def _serve(status: int) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_the_image_health_check_follows_readyz(status: int, code: int) -> None:
    server, thread = _serve(status)
    try:
        env = {**os.environ, "DSGW_PORT": str(server.server_address[1])}
        result = subprocess.run(
            [sys.executable, str(DOCKER / "healthcheck.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert result.returncode == code, result.stdout
    if code:
        assert "503" in result.stdout
    closed = subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py")],
        env={**os.environ, "DSGW_PORT": str(server.server_address[1])},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert closed.returncode == 1


# --- QBFT extra data and genesis ---------------------------------------------------------


def test_extra_data_matches_besus_documented_encoding() -> None:
    assert QbftExtraData(validators=()).to_hex() == BESU_DOC_EMPTY_EXTRA_DATA
    documented = QbftExtraData(validators=tuple(parse_address(a) for a in BESU_DOC_VALIDATORS))
    assert documented.to_hex() == BESU_DOC_EXTRA_DATA
    decoded = QbftExtraData.from_hex(BESU_DOC_EXTRA_DATA)
    assert [v.lower() for v in decoded.validators] == list(BESU_DOC_VALIDATORS)
    assert decoded.vote is None and decoded.round == 0 and decoded.seals == ()
    assert decoded.vanity == bytes(32)
    assert QbftExtraData.from_hex(BESU_DOC_EMPTY_EXTRA_DATA).validators == ()


def test_extra_data_of_later_blocks_round_trips() -> None:
    keys = [NodeKey.generate() for _ in range(4)]
    validators = tuple(k.address for k in keys)
    for vote in [(keys[0].address, True), (keys[1].address, False), None]:
        extra = QbftExtraData(
            validators=validators, vote=vote, round=300, seals=(b"\x07" * 65, b"\x08" * 65)
        )
        assert QbftExtraData.from_bytes(extra.to_bytes()) == extra


@pytest.mark.parametrize(
    "bad",
    [
        BESU_DOC_EXTRA_DATA + "00",  # trailing bytes
        "0xc0",  # an empty list
        "0xe4a000000000000000000000000000000000000000000000000000000000000000c0c0c0",  # 4 items
        "0xzz",
    ],
)
def test_malformed_extra_data_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="qbft"):
        QbftExtraData.from_hex(bad)


def test_genesis_is_canonical_whatever_the_order_of_validators() -> None:
    addresses = [NodeKey.generate().address for _ in range(4)]
    files = {
        QbftGenesis.create(validators=list(order), chain_id=1337).to_json()
        for order in itertools.permutations(addresses)
    }
    assert len(files) == 1
    # Lower-case and checksummed spellings are the same validators too.
    lower = QbftGenesis.create(validators=[a.lower() for a in addresses], chain_id=1337)
    assert lower.to_json() in files


def test_node_key_derives_the_address_and_enode_as_besu_does() -> None:
    # Hardhat/anvil's first development key and its well-known address.
    key = NodeKey.from_besu_file(
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n"
    )
    assert key.address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert key.to_besu_file() == (
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
    )
    assert re.fullmatch(r"enode://[0-9a-f]{128}@10\.0\.0\.1:30303", key.enode("10.0.0.1"))
    assert keccak(bytes.fromhex(key.node_id))[-20:].hex() == key.address[2:].lower()
    assert "ac0974" not in repr(key)
    for bad in ("", "0x12", "0x" + "00" * 32, "0x" + "ff" * 32, "0x" + "11" * 32 + "\nmore"):
        with pytest.raises(ValidationError):
            NodeKey.from_besu_file(bad)


class _Result:
    """A CLI run, with stderr's words joined by single spaces (rich wraps long lines)."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = " ".join(stderr.split())
        self.output = f"{stdout}\n{stderr}"


def _genesis_cli(*args: str) -> _Result:
    result = CliRunner().invoke(cli, ["chain", "genesis", *args], catch_exceptions=False)
    return _Result(result.exit_code, result.stdout, result.stderr)


def test_dsgw_chain_genesis_writes_a_qbft_genesis(tmp_path: Path) -> None:
    keys = [NodeKey.generate() for _ in range(4)]
    out = tmp_path / "genesis.json"
    arguments = [a for k in keys for a in ("--validator", k.address)]
    result = _genesis_cli(*arguments, "--chain-id", "1337", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    document = json.loads(out.read_text())
    assert document["config"]["chainId"] == 1337
    assert document["config"]["qbft"] == {
        "blockperiodseconds": 2,
        "epochlength": 30000,
        "requesttimeoutseconds": 4,
    }
    assert document["config"]["londonBlock"] == 0 and document["config"]["zeroBaseFee"] is True
    assert document["mixHash"] == QBFT_MIX_HASH and document["difficulty"] == "0x1"
    decoded = QbftExtraData.from_hex(document["extraData"])
    assert set(decoded.validators) == {k.address for k in keys}
    assert list(decoded.validators) == sorted(decoded.validators, key=lambda a: a.lower())
    assert decoded.vote is None and decoded.round == 0 and decoded.seals == ()
    assert summary["tolerated_faults"] == 1 == tolerated_faults(4)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert summary["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    read = QbftGenesis.from_json(out.read_bytes())
    assert read.validators == decoded.validators and read.chain_id == 1337

    # Another machine, the same inputs in another order: the same bytes.
    again = tmp_path / "again.json"
    reordered = [a for k in reversed(keys) for a in ("--validator", k.address.lower())]
    assert _genesis_cli(*reordered, "--chain-id", "1337", "--out", str(again)).exit_code == 0
    assert again.read_bytes() == out.read_bytes()

    # An existing genesis is not overwritten by accident.
    refused = _genesis_cli(*arguments, "--chain-id", "7", "--out", str(out))
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert json.loads(out.read_text())["config"]["chainId"] == 1337
    custom = _genesis_cli(
        *arguments,
        "--chain-id",
        "7",
        "--block-period",
        "5",
        "--priced-gas",
        "--alloc",
        f"{keys[0].address}=1000",
        "--out",
        str(out),
        "--force",
    )
    assert custom.exit_code == 0, custom.output
    document = json.loads(out.read_text())
    assert document["config"]["qbft"]["requesttimeoutseconds"] == 10
    assert "zeroBaseFee" not in document["config"]
    assert document["alloc"] == {keys[0].address.lower(): {"balance": hex(1000)}}


def test_dsgw_chain_genesis_refuses_what_is_not_a_bft_validator_set(tmp_path: Path) -> None:
    keys = [NodeKey.generate().address for _ in range(4)]
    out = tmp_path / "genesis.json"

    def genesis(*validators: str) -> _Result:
        arguments = [a for v in validators for a in ("--validator", v)]
        return _genesis_cli(*arguments, "--chain-id", "1337", "--out", str(out))

    few = genesis(*keys[:3])
    assert few.exit_code == 2 and f"at least {MIN_VALIDATORS}" in few.stderr
    assert "3f + 1" in few.stderr
    twice = genesis(*keys[:3], keys[0].lower())
    assert twice.exit_code == 2 and "twice" in twice.stderr
    for malformed in ("0x1234", "4592c8e45706cc08b8f44b11e43cba0cfc5892cb", "0x" + "g" * 40):
        result = genesis(*keys[:3], malformed)
        assert result.exit_code == 2 and "not an address" in result.stderr, malformed
    # One letter's case flipped in a checksummed address: a typo EIP-55 catches.
    checksummed = parse_address(BESU_DOC_VALIDATORS[0])
    assert checksummed == "0x4592C8e45706CC08b8F44b11E43CbA0CFC5892Cb"
    typo = "0x4592c8e45706CC08b8F44b11E43CbA0CFC5892Cb"
    result = genesis(*keys[:3], typo)
    assert result.exit_code == 2 and "checksum" in result.stderr
    zero = genesis(*keys[:3], "0x" + "0" * 40)
    assert zero.exit_code == 2 and "zero address" in zero.stderr
    assert not out.exists()


def test_genesis_reader_refuses_other_consensus(tmp_path: Path) -> None:
    genesis = QbftGenesis.create(
        validators=[NodeKey.generate().address for _ in range(4)], chain_id=5
    ).to_dict()
    clique = {**genesis, "config": {"chainId": 5, "clique": {"blockperiodseconds": 2}}}
    with pytest.raises(ValidationError, match=r"config\.qbft"):
        QbftGenesis.from_dict(clique)
    with pytest.raises(ValidationError, match="mixHash"):
        QbftGenesis.from_dict({**genesis, "mixHash": "0x" + "00" * 32})
    with pytest.raises(ValidationError, match="JSON"):
        QbftGenesis.from_json(b"{")


# --- chain-setup: the single-host stand-in for the four parties ------------------------------


def _chain_setup(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(DOCKER / "chain_setup.py"),
            f"--config={tmp_path / 'config'}",
            f"--nodes-root={tmp_path / 'nodes'}",
            *[f"--node={p}=172.29.53.{11 + i}" for i, p in enumerate(PARTIES)],
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_chain_setup_makes_keys_genesis_and_static_nodes_once(tmp_path: Path) -> None:
    first = _chain_setup(tmp_path, "--chain-id=1337")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["keys_created"] == list(PARTIES) and report["genesis_written"]
    keys = {
        p: NodeKey.from_besu_file((tmp_path / "nodes" / p / "key").read_text()) for p in PARTIES
    }
    for party in PARTIES:
        assert stat.S_IMODE((tmp_path / "nodes" / party / "key").stat().st_mode) == 0o600
        peers = json.loads((tmp_path / "config" / f"static-nodes-{party}.json").read_text())
        assert keys[party].enode("x").split("@")[0] not in {p.split("@")[0] for p in peers}
        assert len(peers) == len(PARTIES) - 1
    genesis = QbftGenesis.from_json((tmp_path / "config" / "genesis.json").read_bytes())
    assert set(genesis.validators) == {k.address for k in keys.values()}
    assert genesis.sha256 == report["genesis_sha256"]

    again = _chain_setup(tmp_path, "--chain-id=1337")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["keys_created"] == []
    assert not json.loads(again.stdout)["genesis_written"]
    assert {
        p: NodeKey.from_besu_file((tmp_path / "nodes" / p / "key").read_text()) for p in PARTIES
    } == keys

    other = _chain_setup(tmp_path, "--chain-id=1338")
    assert other.returncode == 1 and "is for chain 1337" in other.stderr


# --- the registry owner's verbs on a real node ----------------------------------------------


def _dsgw(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    prefix = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *prefix, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


async def _dsgw_async(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_dsgw, *args, data_dir=data_dir)


def _key_file(path: Path, private_key: bytes, mode: int = 0o600) -> Path:
    path.write_text("0x" + private_key.hex() + "\n")
    path.chmod(mode)
    return path


@pytest.fixture
async def anvil_node(tmp_path: Path) -> AsyncIterator[AnvilBackend]:
    backend = AnvilBackend(tmp_path / "anvil")
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def _funded_key(backend: AnvilBackend, tmp_path: Path, name: str) -> tuple[Path, str]:
    account = Account.create()
    dev = await backend.dev_account()
    assert dev is not None
    await backend.send_unlocked(
        {"from": dev, "to": account.address, "value": 10**18}, f"fund the {name}"
    )
    return _key_file(tmp_path / f"{name}.key", bytes(account.key)), str(account.address)


@pytest.mark.slow
async def test_owner_deploys_and_authorizes_the_gateways_account(
    anvil_node: AnvilBackend, tmp_path: Path
) -> None:
    url = anvil_node.url
    assert url is not None
    owner_file, owner = await _funded_key(anvil_node, tmp_path, "owner")

    # A key file others can read is refused before anything is sent.
    loose = _key_file(tmp_path / "loose.key", bytes.fromhex(owner_file.read_text()[2:66]), 0o644)
    refused = await _dsgw_async("chain", "deploy", "--rpc-url", url, "--owner-key-file", str(loose))
    assert refused.returncode == 4, refused.stderr
    assert "0644" in refused.stderr and "chmod 600" in refused.stderr
    assert await anvil_node.w3.eth.get_transaction_count(owner) == 0

    deployed = await _dsgw_async(
        "chain", "deploy", "--rpc-url", url, "--owner-key-file", str(owner_file), "--json"
    )
    assert deployed.returncode == 0, deployed.stderr
    report = json.loads(deployed.stdout)
    registry = AnchorRegistry(anvil_node, report["contract"])
    assert await registry.deployed() and await registry.owner() == owner == report["owner"]

    # The gateway's anchoring account, from its keystore.
    data_dir = tmp_path / "gateway"
    assert (await _dsgw_async("init", data_dir=data_dir)).returncode == 0
    printed = await _dsgw_async("chain", "account", data_dir=data_dir)
    assert printed.returncode == 0, printed.stderr
    account = printed.stdout.strip()
    assert re.fullmatch(r"0x[0-9a-fA-F]{40}", account)
    assert (await _dsgw_async("chain", "account", data_dir=data_dir)).stdout.strip() == account
    assert not await registry.authorized(account)

    authorize = [
        "chain", "authorize", "--rpc-url", url, "--contract", registry.address,
        "--owner-key-file", str(owner_file), "--account", account,
    ]  # fmt: skip
    done = await _dsgw_async(*authorize)
    assert done.returncode == 0, done.stderr
    assert await registry.authorized(account)
    assert "no change" in (await _dsgw_async(*authorize)).stdout

    # The account anchors: a transaction signed with the key in the gateway's keystore.
    store = Keystore.open(
        data_dir / "keystore.json", load_passphrase(env_value=None, file=data_dir / "keystore.pass")
    )
    anchoring_key = store.chain_account_private_key(store.active(KeyPurpose.CHAIN_ACCOUNT).kid)
    signer = Account.from_key(anchoring_key)
    assert signer.address == account
    await anvil_node.send_unlocked(
        {"from": await anvil_node.dev_account(), "to": account, "value": 10**17}, "fund"
    )
    root = keccak(b"a root")
    w3 = anvil_node.w3
    anchor_tx = {
        "chainId": await w3.eth.chain_id,
        "nonce": 0,
        "to": registry.address,
        "data": registry.anchor_calldata("calls", 1, root, []),
        "gas": 200_000,
        "maxFeePerGas": 2 * (await w3.eth.get_block("latest"))["baseFeePerGas"] + 10**9,
        "maxPriorityFeePerGas": 10**9,
        "type": 2,
        "value": 0,
    }
    tx_hash = await w3.eth.send_raw_transaction(signer.sign_transaction(anchor_tx).raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    assert receipt["status"] == 1
    head = await registry.latest("calls")
    assert head.size == 1 and head.root == root
    assert [e.by for e in registry.events_in_receipt(receipt)] == [account]

    # Only the owner may authorize.
    stranger_file, _ = await _funded_key(anvil_node, tmp_path, "stranger")
    by_stranger = await _dsgw_async(
        "chain", "authorize", "--rpc-url", url, "--contract", registry.address,
        "--owner-key-file", str(stranger_file), "--account", Account.create().address,
    )  # fmt: skip
    assert by_stranger.returncode == 4 and "only the owner" in by_stranger.stderr

    # Revoked, the account can no longer anchor.
    revoked = await _dsgw_async(*authorize, "--revoke")
    assert revoked.returncode == 0, revoked.stderr
    assert not await registry.authorized(account)
    with pytest.raises(ContractLogicError):
        await w3.eth.estimate_gas(
            {
                "from": account,
                "to": registry.address,
                "data": registry.anchor_calldata("calls", 2, keccak(b"next"), [root]),
            }
        )

    # Ownership moves in two steps; the wrong key cannot accept.
    new_owner_file, new_owner = await _funded_key(anvil_node, tmp_path, "cold-owner")
    common = ["--rpc-url", url, "--contract", registry.address]
    wrong = await _dsgw_async(
        "chain", "accept-ownership", *common, "--owner-key-file", str(stranger_file)
    )
    assert wrong.returncode == 4 and "nobody" in wrong.stderr
    offered = await _dsgw_async(
        "chain", "transfer-ownership", *common, "--owner-key-file", str(owner_file),
        "--new-owner", new_owner,
    )  # fmt: skip
    assert offered.returncode == 0, offered.stderr
    assert await registry.owner() == owner
    accepted = await _dsgw_async(
        "chain", "accept-ownership", *common, "--owner-key-file", str(new_owner_file)
    )
    assert accepted.returncode == 0, accepted.stderr
    assert await registry.owner() == new_owner


async def test_account_rotation_keeps_the_old_account(tmp_path: Path) -> None:
    data_dir = tmp_path / "gateway"
    assert (await _dsgw_async("init", data_dir=data_dir)).returncode == 0
    first = json.loads((await _dsgw_async("chain", "account", "--json", data_dir=data_dir)).stdout)
    assert first["created"] is True and first["retired"] == []
    rotated = await _dsgw_async("chain", "account", "--rotate", "--json", data_dir=data_dir)
    second = json.loads(rotated.stdout)
    assert second["previous"] == first["address"] != second["address"]
    assert second["retired"] == [first["address"]]
    current = await _dsgw_async("chain", "account", data_dir=data_dir)
    assert current.stdout.strip() == second["address"]
    missing = await _dsgw_async("chain", "account", data_dir=tmp_path / "nowhere")
    assert missing.returncode != 0 and "dsgw init" in missing.stderr
