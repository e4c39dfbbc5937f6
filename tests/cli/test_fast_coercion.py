"""The command line's fast coercion (shipper.cli.coerce) gives every parameter of every command
what typer's own (pydantic) coercion gives, value for value and error for error, and a start
of ``tail`` no longer imports pydantic."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer.main
from hypothesis import given, settings, strategies as st
from typer import _click as click
from typer._coercion import build_runtime_param

import shipper.cli
from shipper.cli.coerce import fast_coercion


def _params():
    command = fast_coercion(typer.main.get_command(shipper.cli.app))
    found = []

    def walk(cmd, path):
        for p in cmd.params:
            if getattr(p, "type_descriptor", None) is not None:
                found.append((path, cmd, p))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(command, "flume-ship")
    return found


PARAMS = _params()


def outcome(coercer, cmd, param, value):
    ctx = click.Context(cmd)
    try:
        got = coercer.coerce(value, param=param, ctx=ctx)
        return "ok", type(got).__name__, repr(got)  # repr: nan equals nan
    except click.exceptions.ClickException as err:
        return "error", type(err).__name__, err.format_message()


def same_as_typer(cmd, param, value):
    fast = outcome(param._runtime_param, cmd, param, value)
    slow = outcome(build_runtime_param(param.type_descriptor), cmd, param, value)
    assert fast == slow, (param.name, value)


def test_every_parameter_of_every_command_has_the_fast_coercer():
    assert len(PARAMS) > 100
    assert all(type(p._runtime_param).__name__ == "_Coercer" for _, _, p in PARAMS)


SPELLINGS = ["", "0", "1", "-1", "007", "2000", "1.5", "-0.25", "0.1", "1e3", " 5", "5 ", "1_000", "nan",
             "inf", "abc", "99999999999999999999", "86400", "86401", "3600.5", "65", "1025", "true", "-"]


@pytest.mark.parametrize("value", SPELLINGS + [None, 0, 5, 2.5, True, ("a", "b"), ["x"], (), b"raw"])
def test_each_spelling_coerces_as_typer_does(value):
    for _, cmd, param in PARAMS:
        multi = param.multiple or param.nargs == -1
        if multi and isinstance(value, (int, float)) and value is not None:
            continue  # click never hands a multi-value parameter a lone number
        same_as_typer(cmd, param, value)


def test_defaults_coerce_as_typer_does():
    for _, cmd, param in PARAMS:
        default = param.default() if callable(param.default) else param.default
        same_as_typer(cmd, param, default)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PARAMS), st.one_of(
    st.text(alphabet="0123456789-.e _", max_size=8), st.text(max_size=6), st.integers(-10**6, 10**6),
    st.floats(allow_nan=False), st.lists(st.text(max_size=4), max_size=3)))
def test_any_value_coerces_as_typer_does(case, value):
    _, cmd, param = case
    multi = param.multiple or param.nargs == -1
    if multi and not isinstance(value, list):
        value = [value]
    same_as_typer(cmd, param, value)


def test_a_tail_start_does_not_import_pydantic(tmp_path):
    code = ("import sys; sys.argv = ['flume-ship', 'tail', '--once', '--to', 'localhost:1', '--batch-size', '2000', "
            f"'--state-dir', {str(tmp_path / 's')!r}, {str(tmp_path / 'none.log')!r}]\n"
            "from shipper.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print(e.code, sorted(m for m in sys.modules if 'pydantic' in m))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    code_seen, _, modules = r.stdout.strip().partition(" ")
    assert code_seen == "7", r.stdout + r.stderr  # input missing: the run got through parsing
    assert modules == "[]", modules
