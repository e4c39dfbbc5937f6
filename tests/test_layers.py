"""The import direction of docs/architecture.md, checked by walking imports with ast.

Each package of ``shipper/`` may import only the packages below it (``MAY_IMPORT``): the
protocol cores (``avroipc``, ``thriftrpc``) and ``errors`` at the bottom, then the transport, the channel and the tail source,
then the sink and the collector, then operations, the agent, and the CLI at the top, imported by
nothing. Sockets belong to the transport (client side), the collector's server and the two
operator endpoints (systemd notify, the metrics HTTP server); the protocol cores are sans-IO.
"""

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "shipper"

# package -> the shipper packages it may import ("shipper" itself is the package face: __version__)
MAY_IMPORT = {
    "errors": set(),
    "avroipc": set(),
    "thriftrpc": set(),
    "transport": {"errors", "avroipc", "thriftrpc"},
    "channel": {"errors"},
    "tail": {"errors", "avroipc", "channel"},
    "sink": {"errors", "avroipc", "transport", "channel"},
    "collector": {"errors", "avroipc", "thriftrpc", "transport"},
    "ops": {"errors", "avroipc", "transport", "channel", "tail", "sink"},
    "agent": {"errors", "avroipc", "transport", "channel", "tail", "sink", "ops", "shipper"},
    "cli": {"errors", "avroipc", "transport", "channel", "tail", "sink", "collector", "ops", "agent", "shipper"},
    "__main__": {"cli"},
    "__init__": set(),
}


def imports_of(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "shipper" and node.level == 0:
            # ``from shipper import thriftrpc`` imports a package; ``from shipper import __version__`` the face
            found.update("shipper" if a.name.startswith("__") else f"shipper.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules():
    for path in PKG.rglob("*.py"):
        yield path.relative_to(PKG).with_suffix("").as_posix().replace("/", "."), path


def package_of(name: str) -> str:
    return name.split(".")[0]


def shipper_packages(imported: set[str]) -> set[str]:
    return {m.split(".")[1] if m != "shipper" else "shipper" for m in imported if m == "shipper" or m.startswith("shipper.")}


def test_shipper_holds_only_the_face_the_entry_point_and_the_errors():
    flat = {p.name for p in PKG.glob("*.py")}
    assert flat == {"__init__.py", "__main__.py", "errors.py"}, flat


def test_every_package_has_a_declared_place_in_the_layers():
    packages = {package_of(name) for name, _ in modules()}
    assert packages <= set(MAY_IMPORT), packages - set(MAY_IMPORT)


def test_lower_layers_never_import_higher_ones():
    for name, path in modules():
        own = package_of(name)
        bad = shipper_packages(imports_of(path)) - MAY_IMPORT[own] - {own}
        assert not bad, f"{name} imports {bad}"


def test_nothing_imports_cli():
    for name, path in modules():
        if package_of(name) not in ("cli", "__main__"):
            assert "cli" not in shipper_packages(imports_of(path)), f"{name} imports shipper.cli"


def test_protocol_cores_are_sans_io():
    for name, path in modules():
        if package_of(name) in ("avroipc", "thriftrpc"):
            bad = imports_of(path) & {"socket", "ssl", "threading", "asyncio", "time", "selectors"}
            assert not bad, f"{name} imports {bad}"


# Sockets belong to the transport (the client side and the layers both roles share), the collector's
# server, and the two operator-facing endpoints: systemd's notify datagram and the metrics HTTP server.
SOCKET_MODULES = {"collector.server", "ops.notify", "ops.metrics"}


def test_only_the_transports_and_operator_endpoints_touch_sockets():
    for name, path in modules():
        if package_of(name) != "transport" and name not in SOCKET_MODULES:
            bad = imports_of(path) & {"socket", "ssl", "http.server", "socketserver"}
            assert not bad, f"{name} imports {bad}"
