"""The documentation cannot drift from the code: reference tables, flags, example files."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from shipper.agent.config import REFERENCE_BEGIN, REFERENCE_END, SECTIONS, SourceSection, load, reference_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_configuration_reference_matches_the_typed_config():
    text = (DOCS / "configuration.md").read_text()
    start, end = text.index(REFERENCE_BEGIN), text.index(REFERENCE_END) + len(REFERENCE_END)
    assert text[start:end] + "\n" == reference_markdown(), (
        "docs/configuration.md is out of date: regenerate the block with `python3 -m shipper.agent.config`")


def test_every_flag_named_in_the_config_exists_on_tail():
    import typer.main

    from shipper.cli import app
    from shipper.cli.tail import tail_cmd

    command = typer.main.get_command(app).commands["tail"]
    opts = {o for p in command.params for o in getattr(p, "opts", [])}
    assert tail_cmd  # the command the flags belong to
    for cls in (*SECTIONS.values(), SourceSection):
        for f in dataclasses.fields(cls):
            flag = f.metadata.get("flag")
            if flag and flag.startswith("--"):
                assert flag in opts, f"{cls.__name__}.{f.name} names {flag}, which tail does not have"


def test_the_example_config_is_valid():
    cfg = load(str(DOCS / "examples" / "flume-ship.toml"))
    assert len(cfg.sources) >= 2 and cfg.delivery.collectors


def test_the_systemd_unit_uses_the_notify_protocol_and_the_state_directory():
    unit = (DOCS / "systemd" / "flume-ship.service").read_text()
    for line in ("Type=notify", "StateDirectory=flume-ship", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID",
                 "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert re.search(rf"^{re.escape(line)}", unit, re.M), f"{line} missing from the unit"
    assert "--state-dir ${STATE_DIRECTORY}" in unit


def test_docs_name_only_commands_and_exit_codes_that_exist():
    from shipper import errors

    ops = (DOCS / "operations.md").read_text()
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    for code in re.findall(r"^\| (\d+) \|", ops, re.M):
        assert int(code) in codes, f"operations.md documents exit code {code}, which does not exist"
    assert {0, 2, 3, 4, 5, 6, 7} <= {int(c) for c in re.findall(r"^\| (\d+) \|", ops, re.M)}


def test_every_collect_flag_is_in_the_collect_table_with_its_default():
    import typer.main

    from shipper.cli import app
    from shipper.cli.collect import COLLECT_LIMIT_FLAGS

    text = (DOCS / "configuration.md").read_text()
    table = text[text.index("## `flume-ship collect`"):]
    command = typer.main.get_command(app).commands["collect"]
    for param in command.params:
        longest = max(param.opts, key=len)
        if longest in ("--help", "-h"):
            continue
        assert f"`{longest}" in table, f"collect {longest} is missing from docs/configuration.md"
    for flag, default, _help in COLLECT_LIMIT_FLAGS.values():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{flag}`"))
        assert f"`{default:g}`" in row if isinstance(default, float) else f"`{default}`" in row, row
