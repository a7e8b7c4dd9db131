#!/usr/bin/env python3
"""Run one command and report its CPU time, wall time and peak RSS.

    scripts/measure.py [--out FILE] [--err FILE] [--stall SECS] -- COMMAND...

Prints one JSON object on stdout: {"cpu_s", "user_s", "sys_s", "wall_s",
"peak_rss_mb", "exit"} for the command (and any child it waits for), taken
from wait4()'s rusage, so nothing samples and nothing is missed.

--out FILE    the command's stdout goes to FILE (default /dev/null).
--err FILE    the command's stderr goes to FILE (default: inherited).
--stall SECS  a stalled sink: the command's stdout is a pipe nobody reads,
              so its writes block once the pipe buffer is full; after SECS
              the command gets SIGKILL (it cannot finish a graceful stop with
              its output blocked). The figures are those of the whole run.

Used by scripts/bench.sh (Linux: ru_maxrss is in KiB).
"""

import json
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    out = "/dev/null"
    err = None
    stall = None
    while args and args[0] != "--":
        flag = args.pop(0)
        if flag == "--out":
            out = args.pop(0)
        elif flag == "--err":
            err = args.pop(0)
        elif flag == "--stall":
            stall = float(args.pop(0))
        else:
            print(f"measure.py: unknown flag {flag}", file=sys.stderr)
            return 2
    if not args or args[0] != "--" or len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = args[1:]

    errf = open(err, "ab") if err else None
    start = time.monotonic()
    if stall is None:
        with open(out, "wb") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=errf)
    else:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf)

        def kill(_signum, _frame):
            try:
                proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass

        signal.signal(signal.SIGALRM, kill)
        signal.setitimer(signal.ITIMER_REAL, stall)
    while True:
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
    signal.setitimer(signal.ITIMER_REAL, 0)
    wall = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    print(
        json.dumps(
            {
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                "user_s": round(usage.ru_utime, 3),
                "sys_s": round(usage.ru_stime, 3),
                "wall_s": round(wall, 3),
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                "exit": code,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
