#!/usr/bin/python3
"""test/decoding/psycopg2_consumer.py -- a CDC consumer of ledger's output
plugin written the way psycopg2's documentation shows, for
test/decoding_consumers.sh.

It streams a slot with psycopg2.extras.LogicalReplicationConnection and
applies whole transactions: it appends each transaction's lines to the
APPLIED file (its durable state), then confirms with
send_feedback(flush_lsn=msg.data_start) of the transaction's last line.
On start it resumes from the lsn of the last line in APPLIED, so whatever
happened to the server's copy of the slot (a crash rolls it back to the
last checkpoint) nothing it applied is sent again.

--framing on asks for include-transaction and applies at each commit line;
--framing off applies a transaction when the first line of the next one
arrives (lines of one transaction share an xid), which is when its last
line is known.

Every line received is also appended to RECEIVED (the test waits there for
its sentinel), and a line whose protocol position (data_start) differs from
its "lsn" is reported in MISMATCHES.  Runs until killed or disconnected.
Needs Debian's python3-psycopg2 (run with /usr/bin/python3).
"""

import argparse
import json

import psycopg2
import psycopg2.extras


def lsn_to_int(text):
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def last_applied_lsn(path):
    """The lsn of the last line of the applied file, or 0 (the slot's own)."""
    last = None
    try:
        with open(path, encoding="utf-8") as applied:
            for line in applied:
                if line.strip():
                    last = line
    except FileNotFoundError:
        return 0
    return lsn_to_int(json.loads(last)["lsn"]) if last else 0


class Consumer:
    def __init__(self, cursor, framing, applied, received, mismatches):
        self.cursor = cursor
        self.framing = framing
        self.applied = applied
        self.received = received
        self.mismatches = mismatches
        self.pending = []           # lines of the transaction being received
        self.pending_xid = None
        self.pending_position = 0   # data_start of its last line

    def apply(self):
        # one write, so that a kill leaves the file with whole transactions
        self.applied.write("".join(line + "\n" for line in self.pending))
        self.applied.flush()
        self.cursor.send_feedback(flush_lsn=self.pending_position)
        self.pending = []

    def __call__(self, msg):
        line = msg.payload
        change = json.loads(line)
        self.received.write(line + "\n")
        self.received.flush()
        if lsn_to_int(change["lsn"]) != msg.data_start:
            self.mismatches.write("%s data_start=%X\n" % (line, msg.data_start))
            self.mismatches.flush()

        if not self.framing and self.pending and change["xid"] != self.pending_xid:
            self.apply()
        self.pending.append(line)
        self.pending_xid = change["xid"]
        self.pending_position = msg.data_start
        if self.framing and change["kind"] == "commit":
            self.apply()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--slot", required=True)
    parser.add_argument("--framing", choices=["on", "off"], required=True)
    parser.add_argument("--applied", required=True)
    parser.add_argument("--received", required=True)
    parser.add_argument("--mismatches", required=True)
    args = parser.parse_args()

    start = last_applied_lsn(args.applied)
    conn = psycopg2.connect(
        args.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cursor = conn.cursor()
    options = {"include-transaction": "on"} if args.framing == "on" else {}
    cursor.start_replication(slot_name=args.slot, decode=True,
                             start_lsn=start, options=options)
    with open(args.applied, "a", encoding="utf-8") as applied, \
            open(args.received, "a", encoding="utf-8") as received, \
            open(args.mismatches, "a", encoding="utf-8") as mismatches:
        consumer = Consumer(cursor, args.framing == "on", applied, received,
                            mismatches)
        cursor.consume_stream(consumer, keepalive_interval=1)


if __name__ == "__main__":
    main()
