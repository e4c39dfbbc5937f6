"""Reload: apply a re-read configuration to a running agent, losing and repeating nothing.

On SIGHUP the agent re-reads the configuration (the same file, with the same command-line flags on
top). If it is invalid, each problem is logged and the agent keeps running as before. Otherwise:
sources removed or changed are stopped (each commits what it read, with its offsets; one that
does not stop within ``drain_timeout + 5`` s, stuck in a slow read or commit, is revoked: it
commits nothing more, and its successor reads what it held again); if the
delivery settings changed, the sink workers finish their in-flight batches (up to
``drain_timeout``, then the batch is given back to the channel) and new workers start with the new
collectors; then new and changed sources start and resume from their committed offsets. The
channel stays open throughout. Channel and metrics-endpoint settings need a restart (a warning
says so).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from shipper.agent.routes import reload_routes, router_for
from shipper.agent.runners import Delivery, SourceRunner
from shipper.agent.snapshot import status_line
from shipper.errors import ConfigError
from shipper.ops.progress import counted

log = logging.getLogger("flume-ship.agent")


def reload(agent) -> None:
    """Apply the re-read configuration to the running agent (SIGHUP); see the module docstring."""
    if not agent.can_reload or agent.once:
        log.info("SIGHUP: nothing to reload")
        return
    agent.notifier.reloading()
    try:
        new = agent.reload_config()
    except ConfigError as exc:
        for problem in exc.lines():
            log.error("reload refused: %s", problem)
        log.error("reload refused: still running the previous configuration")
        agent.notifier.ready(status_line(agent))
        return
    old = agent.config
    if new.channel != old.channel:
        log.warning("reload: [channel] settings changed; they take effect at the next restart")
    if new.agent.metrics_listen != old.agent.metrics_listen:
        log.warning("reload: agent.metrics_listen changed; it takes effect at the next restart")
    new = replace(new, channel=old.channel, agent=replace(new.agent, metrics_listen=old.agent.metrics_listen))
    agent.reloads += 1
    drain = new.agent.drain_timeout
    wanted = {s.name: s for s in new.sources}
    # routes, or lanes (sinks) without routes: every source gets new queues to put to
    rerouted = new.groups != old.groups or (not new.groups and new.delivery.sinks != old.delivery.sinks)
    # 1. Stop sources that go away or change: each commits what it read, with its offsets.
    for name, runner in list(agent.sources.items()):
        if wanted.get(name) != runner.config or rerouted:
            agent.notifier.watchdog()  # a long reload must not look like a hang
            runner.stop(drain + 5, replaced=True)
            retire_counts(agent, runner)
            del agent.sources[name]
            log.info("reload: source %s %s", name, "removed" if name not in wanted else "changed"
                     if wanted[name] != runner.config else "restarted for the new routes")
    # 2. Replace the sink workers if the delivery settings changed.
    if rerouted:
        reload_routes(agent, new, drain)
    elif new.delivery != old.delivery and not new.groups:
        old_delivery = agent.delivery
        agent.notifier.watchdog()
        if not old_delivery.stop(drain):
            agent.retired.append(old_delivery)
        agent.telemetry.keep_collectors(new.addresses())
        agent.delivery = Delivery.open(new, agent.channel, agent.telemetry)
        agent.delivery.start()
        agent.progress_base = time.monotonic()  # new collectors get a full stall_timeout
        log.info("reload: collectors now %s (%s)", ",".join(new.delivery.collectors), new.delivery.balance)
    agent.retired = [d for d in agent.retired if d.alive]
    # 3. Start sources that are new or changed; they resume from their committed offsets.
    for name, section in wanted.items():
        if name not in agent.sources:
            runner = SourceRunner(section, agent.channel, agent.descriptors, router_for(new, section))
            runner.start()
            agent.sources[name] = runner
            log.info("reload: source %s tails %s", name, " ".join(section.paths))
    agent.config = new
    collectors = sum(len(g.collectors) for _, g in new.groups) or len(new.delivery.collectors)
    log.info("reloaded configuration: %s, %s", counted(len(new.sources), "source"), counted(collectors, "collector"))
    agent.notifier.ready(status_line(agent))


def retire_counts(agent, runner: SourceRunner) -> None:
    """Keep a stopped runner's counters, so a source's totals survive its restart."""
    acc = agent.retired_counts.setdefault(runner.name, {})
    for k, v in runner.counts().items():
        acc[k] = acc.get(k, 0) + v
