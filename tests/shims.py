"""LD_PRELOAD shims for tests that need the kernel to misbehave: compiled with the machine's C
compiler into a test's temporary directory (a test using one skips where there is no compiler).

``HELD_READ`` holds ONE read of one file, as a hung disk or NFS server would: the first
``pread``/``pread64``/``read`` of ``HELD_READ_PATH`` that finds the file ``HELD_READ_GATE``
renames it to ``HELD_READ_GATE.held`` and blocks until that file is removed; every other read (the
same file's later ones included, so another reader of it is not held) runs at once.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HELD_READ = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static void hold(int fd) {
    const char *want = getenv("HELD_READ_PATH"), *gate = getenv("HELD_READ_GATE");
    char link[64], path[4096], held[4200];
    if (!want || !gate) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return;
    path[n] = 0;
    if (strcmp(path, want) != 0) return;
    snprintf(held, sizeof held, "%s.held", gate);
    if (rename(gate, held) != 0) return;  /* no gate, or another read took it: not held */
    struct timespec tick = {0, 10 * 1000 * 1000};
    while (access(held, F_OK) == 0) nanosleep(&tick, NULL);
}

ssize_t pread64(int fd, void *buf, size_t count, off_t offset) {
    static ssize_t (*real)(int, void *, size_t, off_t);
    if (!real) real = (ssize_t (*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
    hold(fd);
    return real(fd, buf, count, offset);
}

ssize_t pread(int fd, void *buf, size_t count, off_t offset) {
    static ssize_t (*real)(int, void *, size_t, off_t);
    if (!real) real = (ssize_t (*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread");
    hold(fd);
    return real(fd, buf, count, offset);
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
