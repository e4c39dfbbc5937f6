"""import-flume on the configuration of docs/migration.md and on Flume user-guide examples: the
output passes `validate`, maps what it can, and names every key it could not map."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shipper.agent.config import load
from shipper.agent.flumeconf import parse_properties
from tests.support import cli_argv

EXAMPLES = Path(__file__).parent / "flume_examples"


def imported(tmp_path: Path, name: str, *extra: str) -> Path:
    out = tmp_path / "imported.toml"
    r = subprocess.run(cli_argv("import-flume", str(EXAMPLES / name), "-o", str(out), *extra),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    v = subprocess.run(cli_argv("validate", str(out)), capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr + out.read_text()
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.properties")))
def test_every_key_is_mapped_or_named_with_a_reason(tmp_path, name):
    out = imported(tmp_path, name, "--agent", "a1")
    text = out.read_text()
    unmapped = [line for line in text.splitlines() if line.startswith("# a1.")]
    assert all(" -- " in line for line in unmapped)  # each with its reason
    for key in parse_properties((EXAMPLES / name).read_text()):
        if key.startswith("a1.") and key.rsplit(".", 1)[-1] in ("positionFile", "checkpointDir", "optional"):
            assert any(line.startswith(f"# {key} = ") for line in unmapped), key


def test_the_migration_example_becomes_the_documented_toml(tmp_path):
    cfg = load(str(imported(tmp_path, "migration_worked_example.properties")))
    d = cfg.delivery
    assert d.collectors == ("flume1.example.net:4141", "flume2.example.net:4141")
    assert (d.balance, d.max_penalty, d.batch_size, d.compress) == ("failover", 30.0, 500, "deflate")
    assert [s.name for s in cfg.sources] == ["app", "web"]
    assert dict(cfg.sources[0].headers) == {"service": "app"} and cfg.sources[0].file_header
    assert cfg.channel.min_free == 524288000 and not cfg.groups


def test_selectors_and_sink_groups_become_groups_and_routes(tmp_path):
    cfg = load(str(imported(tmp_path, "userguide_multiplexing.properties")))
    groups = dict(cfg.groups)
    assert groups["c2"].collectors == ("us2.example.net:4141", "us1.example.net:4141")  # priority 10 first
    assert groups["c2"].balance == "failover" and groups["c2"].max_penalty == 10.0
    assert groups["c3"].balance == "random" and groups["c3"].collectors[0].startswith("thrift://")
    assert groups["c4"].reset_connection_interval == 30.0
    (src,) = cfg.sources
    assert dict(src.route)["header"] == "state" and dict(src.route)["default"] == ["c4"]
    assert dict(dict(src.extract))["regex"] == r"^(?P<state>\w+) "
    cfg = load(str(imported(tmp_path, "userguide_replicating.properties", "--agent", "a1")))
    (src,) = cfg.sources
    assert src.groups == ("c1", "c2") and dict(cfg.groups)["c2"].tls
    assert dict(src.headers) == {"datacenter": "NEW_YORK"} and not src.timestamp_header


def test_a_file_with_several_agents_needs_agent(tmp_path):
    r = subprocess.run(cli_argv("import-flume", str(EXAMPLES / "userguide_replicating.properties")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "several agents: a1, a2; name one with --agent" in r.stderr
    r = subprocess.run(cli_argv("import-flume", str(tmp_path / "missing.properties")), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr
