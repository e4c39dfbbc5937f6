"""LD_PRELOAD shims for tests that need the kernel to misbehave: compiled with the machine's C
compiler into a test's temporary directory (a test using one skips where there is no compiler).

``HELD`` holds ONE call on one file, as a hung disk or NFS server would: the first ``pread`` of
``HELD_READ_PATH`` (or ``fsync``/``fdatasync`` of ``HELD_SYNC_PATH``) that finds the file
``HELD_READ_GATE`` (``HELD_SYNC_GATE``) renames it to ``GATE.held`` and blocks until that file is
removed; every other call (the same file's later ones included, so another reader of it is not
held) runs at once.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HELD = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Hold this call if fd is the file $<kind>_PATH and the gate file $<kind>_GATE exists: the gate is
   renamed to GATE.held (so only one call is held) and the call waits until GATE.held is removed. */
static void hold(const char *kind, int fd) {
    char key[64], link[64], path[4096], held[4200];
    snprintf(key, sizeof key, "%s_PATH", kind);
    const char *want = getenv(key);
    snprintf(key, sizeof key, "%s_GATE", kind);
    const char *gate = getenv(key);
    if (!want || !gate) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return;
    path[n] = 0;
    if (strcmp(path, want) != 0) return;
    snprintf(held, sizeof held, "%s.held", gate);
    if (rename(gate, held) != 0) return;  /* no gate, or another call took it: not held */
    struct timespec tick = {0, 10 * 1000 * 1000};
    while (access(held, F_OK) == 0) nanosleep(&tick, NULL);
}

typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);
typedef int (*sync_fn)(int);
#define REAL(name, type) static type real; if (!real) real = (type)dlsym(RTLD_NEXT, name)

ssize_t pread64(int fd, void *buf, size_t count, off_t offset) {
    REAL("pread64", pread_fn);
    hold("HELD_READ", fd);
    return real(fd, buf, count, offset);
}

ssize_t pread(int fd, void *buf, size_t count, off_t offset) {
    REAL("pread", pread_fn);
    hold("HELD_READ", fd);
    return real(fd, buf, count, offset);
}

int fsync(int fd) {
    REAL("fsync", sync_fn);
    hold("HELD_SYNC", fd);
    return real(fd);
}

int fdatasync(int fd) {
    REAL("fdatasync", sync_fn);
    hold("HELD_SYNC", fd);
    return real(fd);
}
"""

def compile_shim(directory: Path, name: str, source: str) -> Path:
    """``source`` compiled to ``directory/name.so`` (skips the test without a C compiler)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the LD_PRELOAD shim")
    (directory / f"{name}.c").write_text(source)
    out = directory / f"{name}.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(directory / f"{name}.c"), "-ldl"],
                   check=True, capture_output=True)
    return out
