"""The state directory protects what it holds: refused when others control it, files private,
no symlink followed (each case on a real directory, with the real Channel.open)."""

from __future__ import annotations

import os
import stat

import pytest

from shipper.channel import DB_NAME, Channel
from shipper.errors import StateError
from shipper.ops.document import ChannelStatus, StatusDocument
from shipper.ops.status import STATUS_NAME, write_status


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_world_writable_state_directory_is_refused_with_what_to_do(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(StateError, match=r"writable by others \(mode 0777\).*chmod o-w"):
        Channel.open(d)
    assert not (d / DB_NAME).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_state_directory_owned_by_someone_else_is_refused(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    os.chown(d, 4242, 4242)
    with pytest.raises(StateError, match="belongs to uid 4242"):
        Channel.open(d)


def test_a_lock_symlink_is_refused_and_its_target_left_alone(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (d / "lock").symlink_to(target)
    with pytest.raises(StateError, match="symbolic link"):
        Channel.open(d)
    assert target.read_text() == "keep me\n"


def test_a_channel_db_symlink_is_refused(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    (d / DB_NAME).symlink_to(tmp_path / "elsewhere.db")
    with pytest.raises(StateError, match="symbolic link"):
        Channel.open(d)
    assert not (tmp_path / "elsewhere.db").exists()


def _status(d) -> StatusDocument:
    return StatusDocument(state="running", written_at=1.0, state_dir=str(d), channel=ChannelStatus())


def test_state_files_are_created_private_under_a_loose_umask_and_narrowed_when_found_wide(tmp_path):
    d = tmp_path / "state"
    old = os.umask(0o000)
    try:
        ch = Channel.open(d)
        ch.put([b"x"])
        ch.close()
    finally:
        os.umask(old)
    assert mode(d) == 0o700
    assert mode(d / DB_NAME) == 0o600
    os.chmod(d / DB_NAME, 0o644)
    write_status(d, _status(d))
    assert mode(d / STATUS_NAME) == 0o600
    os.chmod(d / STATUS_NAME, 0o666)
    Channel.open(d).close()
    assert mode(d / DB_NAME) == 0o600 and mode(d / STATUS_NAME) == 0o600
    for side in (f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        if (d / side).exists():
            assert mode(d / side) & 0o077 == 0


def test_status_is_never_written_through_a_symlink_at_its_temporary_name(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (d / f"{STATUS_NAME}.tmp-{os.getpid()}").symlink_to(victim)
    write_status(d, _status(d))  # status is advice: it gives up, quietly
    assert victim.read_text() == "untouched\n"
