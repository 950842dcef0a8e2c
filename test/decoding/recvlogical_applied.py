#!/usr/bin/python3
"""test/decoding/recvlogical_applied.py -- what a pg_recvlogical consumer
applied, for test/decoding_consumers.sh.

pg_recvlogical writes every line it receives to its file and confirms it.
test/decoding_consumers.sh restarts it after each kill with --startpos set
to the lsn of the last line in the file.  When that line was not its
transaction's last, its lsn is the start of the commit record, so the
server sends the whole transaction again: the file then holds a cut-off
copy followed by a whole one, and a consumer drops the cut-off copy.  This
script does that, given the file and the line numbers where sessions began
(one per line in SESSIONS), and writes the rest to APPLIED.

Only a strict prefix is dropped.  A transaction sent again whole after its
last line was confirmed (what ledger 0.1's lsn made happen) is left in
twice, for the checks to count.

usage: recvlogical_applied.py RAW SESSIONS APPLIED
"""

import json
import sys


def xid_of(line):
    return json.loads(line).get("xid")


def main():
    raw_path, sessions_path, applied_path = sys.argv[1:4]
    with open(raw_path, encoding="utf-8") as raw:
        lines = [line.rstrip("\n") for line in raw if line.endswith("\n")]
    with open(sessions_path, encoding="utf-8") as sessions:
        starts = sorted({int(s) for s in sessions.read().split()} | {0})

    applied = []
    dropped = 0
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(lines)
        session = lines[start:end]
        if applied and session:
            tail_xid = xid_of(applied[-1])
            tail = 0
            while tail < len(applied) and xid_of(applied[-1 - tail]) == tail_xid:
                tail += 1
            head = 0
            while head < len(session) and xid_of(session[head]) == xid_of(session[0]):
                head += 1
            if (xid_of(session[0]) == tail_xid and tail < head
                    and applied[-tail:] == session[:tail]):
                del applied[-tail:]
                dropped += 1
        applied.extend(session)

    with open(applied_path, "w", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in applied))
    print("%d sessions, %d cut-off transactions dropped" % (len(starts), dropped))


if __name__ == "__main__":
    main()
