"""Run real Apache Flume JVMs (agents and ``flume-ng avro-client``) for the interop suite.

Theory of operation
-------------------
* **Resolution.** ``tests/interop/pom.xml`` declares flume-ng-node (the agent, every core source,
  channel and sink, the SDK's RPC clients and AvroCLIClient) plus a log4j2 backend. For each Flume
  version, :func:`resolve` runs ``mvn dependency:build-classpath -Dflume.version=X`` once and keeps the
  classpath in ``tests/interop/target/flume-X.classpath``; the jars themselves are cached by Maven in
  ``~/.m2``. The classpath file is reused while it is newer than the pom and every jar in it exists.
  If Maven cannot resolve (no network, artifact missing) :class:`ResolutionError` carries Maven's own
  output: the suite fails with it, it never skips.
* **Agents.** :class:`Agent` writes a properties file from a flat mapping (``sources.r1.type`` ...)
  and fills in the ``sources`` / ``channels`` / ``sinks`` lists from the keys, so one JVM can host
  several independent pipelines (that is how the suite shares the JVM start cost). It starts
  ``java -cp CP org.apache.flume.node.Application -n NAME -f CONF --no-reload-conf`` with
  ``log4j2.xml`` sending the agent's log to a file of its own; :meth:`Agent.wait_listening` polls the
  AvroSource ports with TCP connects and gives up (with the log) if the JVM exits first.
* **Reports.** Every JVM registers itself in :data:`LIVE` while it runs; ``conftest.py`` attaches the
  tail of each live JVM's log to a failing test's report.
* **Stopping.** Flume's shutdown hook takes ~4 s (AvroSource waits for Netty's quiet period), and the
  file_roll sink flushes after every batch, so agents are SIGKILLed unless a test asks for a graceful
  stop.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
TARGET = HERE / "target"
LOG4J2 = HERE / "log4j2.xml"
JAVA_DIR = HERE / "java"

# 1.11.0 is the current release (Avro 1.11 on Netty 4); 1.9.0 is the last Netty 3 / Avro 1.7.4 line,
# still common in the field.
VERSIONS = ("1.11.0", "1.9.0")

# Small, quick-starting JVMs: C1 only and the serial collector (the machine has 2 cores).
JVM_OPTS = ["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]

LIVE: list["Jvm"] = []
_LIVE_LOCK = threading.Lock()


class ResolutionError(Exception):
    """Maven could not give us a runnable Flume; the message is Maven's own output."""


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ResolutionError(f"`{name}` is not on the PATH: the interop suite needs Java 17 and Maven 3.8")
    return path


def _classpath_file(version: str) -> Path:
    return TARGET / f"flume-{version}.classpath"


def _cached(version: str) -> str | None:
    f = _classpath_file(version)
    if not f.exists() or f.stat().st_mtime < POM.stat().st_mtime:
        return None
    cp = f.read_text().strip()
    if not cp or not all(Path(j).exists() for j in cp.split(os.pathsep)):
        return None
    return cp


def resolve(version: str, extra_args: list[str] | None = None) -> str:
    """The classpath of a runnable Flume ``version`` (resolving it with Maven on first use)."""
    cp = _cached(version)
    if cp:
        return cp
    mvn = require_tool("mvn")
    TARGET.mkdir(exist_ok=True)
    out = _classpath_file(version)
    argv = [
        mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM),
        f"-Dflume.version={version}", *(extra_args or []),
        "dependency:build-classpath", f"-Dmdep.outputFile={out}",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not out.exists():
        said = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # Maven colours even with -B
        raise ResolutionError(
            f"Maven could not resolve Apache Flume {version} (exit {proc.returncode}): {' '.join(argv)}\n{said}"
        )
    cp = out.read_text().strip()
    missing = [j for j in cp.split(os.pathsep) if not Path(j).exists()]
    if missing:
        raise ResolutionError(f"Maven reported jars that are not on disk: {missing}")
    return cp


class Jvm:
    """A Java process whose log4j2 output goes to ``log_path``; registered in :data:`LIVE` while alive."""

    def __init__(self, label: str, classpath: str, main: str, args: list[str], log_path: Path,
                 stdin=subprocess.DEVNULL, extra_jvm: list[str] | None = None):
        self.label = label
        self.log_path = log_path
        self.stdout_path = log_path.with_suffix(".stdout")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            require_tool("java"), *JVM_OPTS, *(extra_jvm or []),
            f"-Dlog4j.configurationFile={LOG4J2}", f"-Dflume.interop.log={log_path}",
            "-cp", classpath, main, *args,
        ]
        self.argv = argv
        self._stdout = open(self.stdout_path, "wb")
        self.popen = subprocess.Popen(argv, stdin=stdin, stdout=self._stdout, stderr=subprocess.STDOUT)
        with _LIVE_LOCK:
            LIVE.append(self)

    def log(self) -> str:
        parts = []
        for p in (self.log_path, self.stdout_path):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "".join(parts)

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, needle: str, timeout: float = 60.0) -> None:
        """Wait until ``needle`` appears in the log; fail with the log if the JVM exits or time runs out."""
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if self.popen.poll() is not None and needle not in self.log():
                raise AssertionError(f"{self.label} exited ({self.popen.returncode}) before logging {needle!r}:\n"
                                     + self.log_tail())
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label} did not log {needle!r} in {timeout:.0f}s:\n" + self.log_tail())
            time.sleep(0.1)

    def wait(self, timeout: float = 120.0) -> int:
        try:
            return self.popen.wait(timeout)
        finally:
            self._forget()

    def stop(self, graceful: bool = False, timeout: float = 30.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._forget()
        return self.popen.returncode

    def _forget(self):
        if self.popen.poll() is not None:
            self._stdout.close()
            with _LIVE_LOCK:
                if self in LIVE:
                    LIVE.remove(self)


def render_conf(name: str, props: dict[str, object]) -> str:
    """Agent properties with the component lists derived from the keys (``sources.r1.x`` -> r1)."""
    comps: dict[str, list[str]] = {"sources": [], "channels": [], "sinks": [], "sinkgroups": []}
    for key in props:
        kind, _, rest = key.partition(".")
        comp = rest.split(".", 1)[0]
        if kind in comps and comp and comp not in comps[kind]:
            comps[kind].append(comp)
    lines = [f"{name}.{kind} = {' '.join(c)}" for kind, c in comps.items() if c]
    lines += [f"{name}.{k} = {v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


class Agent(Jvm):
    """A real Flume agent (``org.apache.flume.node.Application``) running ``props``."""

    def __init__(self, classpath: str, workdir: Path, props: dict[str, object], name: str = "a1",
                 version: str = "?"):
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.version = version
        self.conf_path = workdir / f"{name}.properties"
        self.conf_path.write_text(render_conf(name, props))
        super().__init__(f"flume {version} agent {name}", classpath, "org.apache.flume.node.Application",
                         ["-n", name, "-f", str(self.conf_path), "--no-reload-conf"], workdir / f"{name}.log")

    def wait_listening(self, *ports: int, timeout: float = 60.0) -> None:
        """Block until every AvroSource port accepts TCP connections."""
        deadline = time.monotonic() + timeout
        for port in ports:
            while True:
                if self.popen.poll() is not None:
                    raise AssertionError(f"{self.label} exited ({self.popen.returncode}) before listening on "
                                         f"{port}:\n{self.log_tail()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.label} not listening on {port} after {timeout:.0f}s:\n"
                                         + self.log_tail())
                time.sleep(0.1)
        self.check_configuration()

    def check_configuration(self) -> None:
        """Fail if Flume dropped a component of the config: it logs an ERROR and runs the rest."""
        for line in self.log().splitlines():
            if " ERROR " in line and ("ConfigurationProvider" in line or "FlumeConfiguration" in line):
                raise AssertionError(f"{self.label} rejected part of {self.conf_path}:\n{self.log_tail()}")


class AvroCli(Jvm):
    """``flume-ng avro-client`` (AvroCLIClient): ``-F file`` or lines written to its stdin.

    AvroCLIClient catches its own exceptions, logs them and exits 0, so :meth:`finish` judges success
    from the log, not the exit code.
    """

    def __init__(self, classpath: str, log_path: Path, args: list[str], stdin_pipe: bool = False,
                 version: str = "?"):
        super().__init__(f"flume {version} avro-client", classpath, "org.apache.flume.client.avro.AvroCLIClient",
                         args, log_path, stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL)

    def write_lines(self, lines: list[str]) -> None:
        self.popen.stdin.write("".join(f"{line}\n" for line in lines).encode())
        self.popen.stdin.flush()

    def finish(self, timeout: float = 120.0) -> str:
        if self.popen.stdin:
            self.popen.stdin.close()
        rc = self.wait(timeout)
        log = self.log()
        # WARN lines with stack traces are normal for failover clients; AvroCLIClient reports its own
        # failure at ERROR ("Unable to deliver events to Flume").
        if rc != 0 or " ERROR " in log:
            raise AssertionError(f"{self.label} failed (exit {rc}):\n{self.log_tail(200)}")
        return log


def rpc_props(path: Path, props: dict[str, object]) -> Path:
    """Write an RPC client properties file (AvroCLIClient ``-P``)."""
    path.write_text("".join(f"{k} = {v}\n" for k, v in props.items()))
    return path


class Tls:
    """A self-signed server identity made with the JDK's keytool, in every shape the peers want.

    * ``keystore`` (JKS, for a Flume AvroSource: ``ssl=true keystore=...``),
    * ``truststore`` (JKS holding only the certificate, for Flume's RPC client / AvroSink),
    * ``cert_pem`` (``keytool -exportcert -rfc``: the CA file our client verifies against, and the
      certificate our collector serves), ``key_pem`` (PKCS#8, exported by java/KeyExport.java since
      keytool cannot export private keys).

    The certificate names ``127.0.0.1`` and ``localhost`` so a verifying client accepts it.
    """

    PASSWORD = "interop-secret"
    ALIAS = "flume"

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.keystore = directory / "server.jks"
        self.truststore = directory / "trust.jks"
        self.cert_pem = directory / "server.crt.pem"
        self.key_pem = directory / "server.key.pem"
        keytool = require_tool("keytool")
        pw = self.PASSWORD
        self._run([keytool, "-genkeypair", "-alias", self.ALIAS, "-keyalg", "RSA", "-keysize", "2048",
                   "-validity", "3650", "-dname", "CN=localhost", "-ext", "san=ip:127.0.0.1,dns:localhost",
                   "-keystore", str(self.keystore), "-storetype", "JKS", "-storepass", pw, "-keypass", pw])
        self._run([keytool, "-exportcert", "-rfc", "-alias", self.ALIAS, "-keystore", str(self.keystore),
                   "-storepass", pw, "-file", str(self.cert_pem)])
        self._run([keytool, "-importcert", "-noprompt", "-alias", self.ALIAS, "-file", str(self.cert_pem),
                   "-keystore", str(self.truststore), "-storetype", "JKS", "-storepass", pw])
        self._run([require_tool("java"), str(JAVA_DIR / "KeyExport.java"), str(self.keystore), pw, self.ALIAS,
                   str(self.key_pem)])

    @staticmethod
    def _run(argv: list[str]) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def source_props(self) -> dict[str, object]:
        """AvroSource keys that turn TLS on."""
        return {"ssl": "true", "keystore": self.keystore, "keystore-password": self.PASSWORD,
                "keystore-type": "JKS"}

    def client_props(self) -> dict[str, object]:
        """RPC client / AvroSink keys that turn TLS on and trust exactly our certificate."""
        return {"ssl": "true", "truststore": self.truststore, "truststore-password": self.PASSWORD,
                "truststore-type": "JKS"}


def read_dir(out_dir: Path) -> bytes:
    """Everything a file_roll sink (or ``flume-ship collect``) wrote to ``out_dir``, files in name order."""
    if not out_dir.exists():
        return b""
    return b"".join(p.read_bytes() for p in sorted(out_dir.iterdir()) if p.is_file())


def wait_for_bytes(out_dir: Path, expected_len: int, timeout: float = 60.0, who: Jvm | None = None) -> bytes:
    """Poll ``out_dir`` until at least ``expected_len`` bytes arrived (a failure guard, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        data = read_dir(out_dir)
        if len(data) >= expected_len or time.monotonic() > deadline:
            return data
        if who is not None and who.popen.poll() is not None:
            return data
        time.sleep(0.2)


def avro_to_file_roll(tag: str, port: int, out_dir: Path, source: dict | None = None,
                      channel: dict | None = None, sink: dict | None = None) -> dict[str, object]:
    """One pipeline: AvroSource on 127.0.0.1:``port`` -> memory channel -> file_roll into ``out_dir``.

    ``sink.rollInterval = 0`` keeps one output file; the sink flushes after every batch, so the test
    can read what arrived while the agent runs.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    src, ch, k = f"r_{tag}", f"c_{tag}", f"k_{tag}"
    props: dict[str, object] = {
        f"sources.{src}.type": "avro",
        f"sources.{src}.bind": "127.0.0.1",
        f"sources.{src}.port": port,
        f"sources.{src}.channels": ch,
        f"channels.{ch}.type": "memory",
        f"channels.{ch}.capacity": 100000,
        f"channels.{ch}.transactionCapacity": 1000,
        f"sinks.{k}.type": "file_roll",
        f"sinks.{k}.channel": ch,
        f"sinks.{k}.sink.directory": out_dir,
        f"sinks.{k}.sink.rollInterval": 0,
    }
    props.update({f"sources.{src}.{key}": v for key, v in (source or {}).items()})
    props.update({f"channels.{ch}.{key}": v for key, v in (channel or {}).items()})
    props.update({f"sinks.{k}.{key}": v for key, v in (sink or {}).items()})
    return props
