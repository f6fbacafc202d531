#!/usr/bin/python3
"""bench/holders.py: the benchmarks' load, PROCS processes that each hold FDS files open on one filesystem.

    holders.py PROCS FDS DIR PIDFILE

Every holder has its cwd in DIR, opens FDS files there (every third one read-write, the rest read-only) and maps
the first one, then waits for SIGTERM. When all of them hold their files, the pids go to PIDFILE (one a line) and
"READY <count>" to stdout; the caller checks the count. SIGTERM or SIGINT ends every holder, waits for them and
exits; the caller owns DIR. A holder that fails writes nothing, so the count falls short and the caller stops.
"""
import mmap
import os
import signal
import sys


def hold(folder, index, fds, ready_fd):
    """One holder: cwd, FDS open files, one mapping; reports on ready_fd, then sleeps until killed."""
    os.chdir(folder)
    kept = []
    for j in range(fds):
        name = "h%d-%d" % (index % 97, j)
        mode = os.O_RDWR | os.O_CREAT if j % 3 == 0 else os.O_RDONLY | os.O_CREAT
        kept.append(os.open(name, mode, 0o600))
    if kept:
        if os.fstat(kept[0]).st_size < mmap.PAGESIZE:
            os.ftruncate(kept[0], mmap.PAGESIZE)
        kept.append(mmap.mmap(kept[0], mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ))
    os.write(ready_fd, b"+")
    os.close(ready_fd)
    while True:
        signal.pause()


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: holders.py PROCS FDS DIR PIDFILE")
    procs, fds, folder, pidfile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rd, wr = os.pipe()
    pids = []
    for i in range(procs):
        pid = os.fork()
        if pid == 0:
            os.close(rd)
            for s in (signal.SIGTERM, signal.SIGINT):
                signal.signal(s, signal.SIG_DFL)
            try:
                hold(folder, i, fds, wr)
            finally:
                os._exit(1)
        pids.append(pid)
    os.close(wr)
    ready = 0
    while ready < procs:
        got = os.read(rd, 65536)
        if not got:
            break
        ready += len(got)

    def finish(*_):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    with open(pidfile, "w") as out:
        out.write("".join("%d\n" % p for p in pids))
    print("READY %d" % ready, flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
