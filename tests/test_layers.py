"""The import direction of architecture.md, checked by walking imports with ast.

avroipc sits at the bottom and imports nothing from shipper; errors and event import only the
bottom layer; cli is imported by nothing; only transport and collector import socket/ssl.
"""

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "shipper"


def imports_of(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules():
    for path in PKG.rglob("*.py"):
        yield path.relative_to(PKG).with_suffix("").as_posix().replace("/", "."), path


def test_avroipc_imports_nothing_from_shipper():
    for name, path in modules():
        if name.startswith("avroipc"):
            bad = {m for m in imports_of(path) if m.startswith("shipper") and not m.startswith("shipper.avroipc")}
            assert not bad, f"{name} imports {bad}"


def test_thriftrpc_imports_nothing_from_shipper():
    for name, path in modules():
        if name.startswith("thriftrpc"):
            bad = {m for m in imports_of(path) if m.startswith("shipper") and not m.startswith("shipper.thriftrpc")}
            assert not bad, f"{name} imports {bad}"


def test_bottom_layers_import_only_the_protocol_core():
    for name, path in modules():
        if name in ("errors", "event"):
            bad = {m for m in imports_of(path) if m.startswith("shipper") and not m.startswith("shipper.avroipc")}
            assert not bad, f"{name} imports {bad}"


def test_nothing_imports_cli():
    for name, path in modules():
        if not (name == "__main__" or name == "cli" or name.startswith("cli.")):
            bad = {m for m in imports_of(path) if m == "shipper.cli" or m.startswith("shipper.cli.")}
            assert not bad, f"{name} imports {bad}"


def test_protocol_cores_are_sans_io():
    for name, path in modules():
        if name.startswith(("avroipc", "thriftrpc")):
            bad = imports_of(path) & {"socket", "ssl", "threading", "asyncio", "time", "selectors"}
            assert not bad, f"{name} imports {bad}"


# Sockets belong to the transports (transport: the client side; collector: the server side) and to the
# two operator-facing endpoints: systemd's notify datagram and the metrics HTTP server.
SOCKET_MODULES = {"transport.stream", "collector.server", "ops.notify", "ops.metrics"}


def test_only_the_transports_and_operator_endpoints_touch_sockets():
    for name, path in modules():
        if name not in SOCKET_MODULES:
            bad = imports_of(path) & {"socket", "ssl", "http.server", "socketserver"}
            assert not bad, f"{name} imports {bad}"
