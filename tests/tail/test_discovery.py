"""Discovery's listings and globs against the real file system: reused only while provably unchanged."""

from __future__ import annotations

import errno
import glob
import os
import time

from shipper.tail.discovery import RACY_SECONDS, DirCache, StatRotation
from shipper.tail.globs import expand


def age(path, seconds: float) -> None:
    """Set ``path``'s mtime ``seconds`` into the past (a directory last changed long ago)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_an_unchanged_directory_listing_is_reused_and_a_changed_one_read_again(tmp_path):
    (tmp_path / "a.log").write_text("x\n")
    age(tmp_path, 10)
    cache = DirCache()
    cache.begin()
    first = cache.list(str(tmp_path))
    assert not cache.unchanged(str(tmp_path))  # nothing to compare with yet
    cache.begin()
    assert cache.list(str(tmp_path)) == first and cache.unchanged(str(tmp_path))
    (tmp_path / "b.log").write_text("y\n")  # a new name moves the directory's mtime
    cache.begin()
    names = set(cache.list(str(tmp_path)).names)
    assert names == {"a.log", "b.log"} and not cache.unchanged(str(tmp_path))


def test_a_listing_taken_in_the_same_moment_as_a_change_is_not_trusted(tmp_path):
    (tmp_path / "a.log").write_text("x\n")  # the directory changed just now
    cache = DirCache()
    cache.begin()
    cache.list(str(tmp_path))
    cache.begin()
    cache.list(str(tmp_path))
    # Within RACY_SECONDS of the change, a second change could leave the same mtime: list again.
    assert RACY_SECONDS > 0 and not cache.unchanged(str(tmp_path))


def test_a_rename_inside_an_unchanged_looking_directory_is_seen(tmp_path):
    (tmp_path / "app.log").write_text("x\n")
    age(tmp_path, 10)
    cache = DirCache()
    cache.begin()
    cache.list(str(tmp_path))
    os.rename(tmp_path / "app.log", tmp_path / "app.log.1")
    cache.begin()
    assert set(cache.list(str(tmp_path)).names) == {"app.log.1"}


def test_stat_rotation_visits_every_file_once_per_round():
    rot = StatRotation(every=4)
    seen = []
    for _ in range(4):
        rot.begin()
        seen += [order for order in range(20) if rot.due(order)]
    assert sorted(seen) == list(range(20))


def test_expand_matches_glob_for_ordinary_patterns(tmp_path):
    for p in ["a/b/x.log", "a/x.log", "a/.h/x.log", "a/.y.log", "b/c/d/e.log", "x.log", "a/b/y.txt"]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_text("")
    for pat in ["*.log", "a/*.log", "a/.*.log", "**/*.log", "a/**/*.log", "*/*/*.log", "a/b/?.log",
                "nope/*.log", "a/[bx]*"]:
        full = str(tmp_path / pat)
        assert sorted(expand(full).paths) == sorted(glob.glob(full, recursive=True)), pat


def test_expand_reports_a_listing_it_could_not_make(tmp_path):
    (tmp_path / "logs").mkdir()

    def lister(path):
        raise OSError(errno.EMFILE, "Too many open files", path)

    found = expand(str(tmp_path / "logs" / "*.log"), lister)
    assert found.paths == [] and found.errors and found.errors[0].errno == errno.EMFILE


def test_expand_survives_a_link_loop_and_takes_a_literal_name_literally(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "z.log").write_text("")
    (tmp_path / "a" / "up").symlink_to(tmp_path)
    (tmp_path / "app[1].log").write_text("")
    assert str(tmp_path / "a" / "z.log") in expand(str(tmp_path / "**" / "*.log")).paths
    assert expand(str(tmp_path / "app[1].log")).paths == [str(tmp_path / "app[1].log")]


def test_rescans_that_reuse_listings_keep_every_file_and_see_every_change(tmp_path):
    """Watched, with frequent rescans reusing unchanged listings: growth of closed files, a rename
    rotation and a new file all arrive, once each."""
    import threading

    from .helpers import append, bodies, drain, make_source, open_channel

    d = tmp_path / "logs"
    d.mkdir()
    for i in range(40):
        (d / f"f{i:02d}.log").write_bytes(f"f{i:02d} 0\n".encode())
    age(d, 10)  # an old directory: its listing can be trusted from the second scan on
    ch = open_channel(tmp_path / "state")
    src = make_source(ch, d / "*.log", watch=True, rescan_interval=0.1, close_inactive=0.2,
                      max_open_files=8)
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(stop,))
    t.start()
    got: list[bytes] = []

    def wait_for(n: int) -> list[bytes]:
        deadline = time.monotonic() + 30  # failure guard only
        while len(got) < n and time.monotonic() < deadline:
            ch.wait_for_events(0.2)
            got.extend(bodies(drain(ch)))
        return got

    try:
        assert len(wait_for(40)) == 40
        time.sleep(1.0)  # many rescans, most from reused listings; idle files closed
        assert src._scanner.dirs.unchanged(str(d))
        for i in range(0, 40, 3):
            append(d / f"f{i:02d}.log", f"f{i:02d} 1\n".encode())
        os.rename(d / "f01.log", d / "f01.log.1")
        append(d / "f01.log.1", b"f01 late\n")
        (d / "f01.log").write_bytes(b"f01 new\n")
        (d / "g.log").write_bytes(b"g 0\n")
        want = 40 + len(range(0, 40, 3)) + 3
        wait_for(want)
        time.sleep(1.0)  # and nothing more arrives
        got.extend(bodies(drain(ch)))
        assert len(got) == want and len(set(got)) == want, sorted(got)
        assert {b"f01 late", b"f01 new", b"g 0", b"f03 1"} <= set(got)
    finally:
        stop.set()
        src.wakeup()
        t.join(timeout=30)
        src.close()
        ch.close()


def test_a_glob_over_unchanged_directories_gives_the_same_paths_again_and_sees_a_new_name(tmp_path):
    """The scanner reuses a pattern's expansion (the very same path strings) while every directory
    it listed is unchanged; a new file moves the directory's mtime and is found."""
    from shipper.tail.discovery import Scanner
    from shipper.tail.selection import Selection

    d = tmp_path / "logs"
    d.mkdir()
    for i in range(3):
        (d / f"f{i}.log").write_text("x\n")
    age(d, 10)
    scanner = Scanner([str(d / "*.log")], Selection((), 0.0))
    first = {p: p for p, _, _ in scanner.scan({}, {}, {}, watched=True).cands.values()}
    again = [p for p, _, _ in scanner.scan({}, {}, {}, watched=True).cands.values()]
    assert sorted(again) == sorted(first) and all(p is first[p] for p in again)
    (d / "new.log").write_text("y\n")
    found = scanner.scan({}, {}, {}, watched=True)
    assert str(d / "new.log") in {p for p, _, _ in found.cands.values()}


def test_a_literal_name_below_a_wildcard_is_looked_up_at_every_scan(tmp_path):
    """``logs/*/app.log``: app.log appearing in an existing subdirectory changes only that
    subdirectory, which no listing covers, so this pattern's expansion is never reused."""
    from shipper.tail.discovery import Scanner
    from shipper.tail.selection import Selection

    sub = tmp_path / "logs" / "svc"
    sub.mkdir(parents=True)
    age(sub, 10)
    age(tmp_path / "logs", 10)
    pattern = str(tmp_path / "logs" / "*" / "app.log")
    scanner = Scanner([pattern], Selection((), 0.0))
    assert scanner.scan({}, {}, {}, watched=True).cands == {}
    (sub / "app.log").write_text("z\n")
    age(sub, 10)  # even with the subdirectory's mtime put back
    found = scanner.scan({}, {}, {}, watched=True)
    assert [p for p, _, _ in found.cands.values()] == [str(sub / "app.log")]


def test_a_listing_nobody_read_gives_up_its_names_and_reads_them_again_when_asked(tmp_path):
    (tmp_path / "a.log").write_text("x\n")
    age(tmp_path, 10)
    cache = DirCache()
    cache.begin()
    cache.list(str(tmp_path))
    cache.begin()
    assert cache.fresh(str(tmp_path)) and cache.unchanged(str(tmp_path))
    cache.slim()  # only checked this scan: the names go, the stamp stays
    assert cache._listings[str(tmp_path)][2] is None
    cache.begin()
    assert cache.list(str(tmp_path)).names == ["a.log"] and cache.unchanged(str(tmp_path))
    cache.slim()  # read this scan: kept
    assert cache._listings[str(tmp_path)][2] is not None
    (tmp_path / "b.log").write_text("y\n")
    cache.begin()
    assert not cache.fresh(str(tmp_path))
    assert sorted(cache.list(str(tmp_path)).names) == ["a.log", "b.log"] and not cache.unchanged(str(tmp_path))


def test_a_glob_whose_directory_does_not_exist_yet_finds_files_once_it_does(tmp_path):
    """Nothing was listed (the directory is missing), so there is no expansion to reuse."""
    from shipper.tail.discovery import Scanner
    from shipper.tail.selection import Selection

    scanner = Scanner([str(tmp_path / "logs" / "app" / "*.log")], Selection((), 0.0))
    assert scanner.scan({}, {}, {}, watched=True).cands == {}
    (tmp_path / "logs" / "app").mkdir(parents=True)
    (tmp_path / "logs" / "app" / "a.log").write_text("x\n")
    found = scanner.scan({}, {}, {}, watched=True)
    assert [p for p, _, _ in found.cands.values()] == [str(tmp_path / "logs" / "app" / "a.log")]
