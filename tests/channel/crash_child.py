"""Child process for test_crash: a writer thread and two sink threads on one channel, until SIGKILL.

Usage: python -m tests.channel.crash_child STATE_DIR REPORT_DIR SEED

Reports go to append-only side files, one os.write per line, so a SIGKILL can cut a line only
between writes (the parent ignores an unterminated last line). No fsync: the parent reads them
after the child died, from the same page cache; only a power cut would need one.

  committed: "<first id> <last id>" after put() returned True (the batch is durable)
  intent:    "<id> <id> ..."        just before ack() (these MAY be gone after a crash)
  acked:     "<id> <id> ..."        after ack() returned (these MUST be gone)

Event bodies are the decimal id, padded; the tail offset "w" is the last id put, so a restarted
writer continues at offset + 1, like the tail source does.
"""

import os
import random
import sys
import threading

from shipper.channel import Channel


def main() -> None:
    state, reports, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    # Small chunks, so one put spans several and leases of whole chunks vary in size.
    ch = Channel.open(state, min_free_bytes=0, capacity_events=1500, chunk_events=16)
    fds = {name: os.open(os.path.join(reports, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
           for name in ("committed", "intent", "acked")}

    def report(name: str, ids) -> None:
        os.write(fds[name], (" ".join(map(str, ids)) + "\n").encode())

    def writer() -> None:
        r = random.Random(seed * 7 + 1)
        nxt = int(ch.offsets().get("w", b"0")) + 1
        while True:
            n = r.randint(1, 60)
            ids = range(nxt, nxt + n)
            if ch.put([str(i).encode().ljust(48, b".") for i in ids], {"w": str(ids[-1]).encode()}):
                report("committed", (ids[0], ids[-1]))
                nxt += n

    def sink(k: int) -> None:
        r = random.Random(seed * 7 + 2 + k)
        while True:
            lease = ch.take(r.randint(1, 80), 1 << 20)
            if lease is None:
                ch.wait_for_events(0.05)
                continue
            if r.random() < 0.2:
                ch.nack(lease)
                continue
            ids = [int(e.rstrip(b".")) for e in lease.events]
            report("intent", ids)
            ch.ack(lease)
            report("acked", ids)

    for target, args in ((writer, ()), (sink, (0,)), (sink, (1,))):
        threading.Thread(target=target, args=args, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait(rng.uniform(30, 60))  # the parent kills us long before this


if __name__ == "__main__":
    main()
