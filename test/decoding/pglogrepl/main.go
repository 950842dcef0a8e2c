// test/decoding/pglogrepl/main.go -- a CDC consumer of ledger's output
// plugin built on github.com/jackc/pglogrepl and pgx's pgconn, for
// test/decoding_consumers.sh.
//
// It streams a slot and applies whole transactions: it appends each
// transaction's lines to the -applied file (its durable state), then
// confirms the "lsn" of the transaction's last line in a standby status
// update.  On start it resumes from the lsn of the last line in that file,
// so nothing it applied is sent again even after the server lost its copy
// of the slot's position (a crash rolls it back to the last checkpoint).
//
// -framing on asks for include-transaction and applies at each commit line;
// -framing off applies a transaction when the first line of the next one
// arrives (lines of one transaction share an xid).
//
// Every line received is also appended to -received (the test waits there
// for its sentinel), and a line whose protocol position (XLogData WALStart)
// differs from its "lsn" is reported in -mismatches.  Runs until killed or
// disconnected.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

type line struct {
	Kind string `json:"kind"`
	Xid  uint32 `json:"xid"`
	LSN  string `json:"lsn"`
}

// lastAppliedLSN is the lsn of the last line of the applied file, or 0
// (which asks for the slot's own position).
func lastAppliedLSN(path string) (pglogrepl.LSN, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	defer f.Close()
	var last string
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 64<<20)
	for scanner.Scan() {
		if strings.TrimSpace(scanner.Text()) != "" {
			last = scanner.Text()
		}
	}
	if err := scanner.Err(); err != nil || last == "" {
		return 0, err
	}
	var l line
	if err := json.Unmarshal([]byte(last), &l); err != nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(l.LSN)
}

func openAppend(path string) *os.File {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	return f
}

func main() {
	dsn := flag.String("dsn", "", "libpq connection string")
	slot := flag.String("slot", "", "replication slot")
	framing := flag.String("framing", "", "on or off")
	appliedPath := flag.String("applied", "", "file of applied transactions")
	receivedPath := flag.String("received", "", "file of received lines")
	mismatchPath := flag.String("mismatches", "", "file of position mismatches")
	flag.Parse()
	if *framing != "on" && *framing != "off" {
		log.Fatal("-framing must be on or off")
	}
	framed := *framing == "on"

	start, err := lastAppliedLSN(*appliedPath)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, *dsn+" replication=database")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	var args []string
	if framed {
		args = append(args, `"include-transaction" 'on'`)
	}
	err = pglogrepl.StartReplication(ctx, conn, *slot, start,
		pglogrepl.StartReplicationOptions{PluginArgs: args})
	if err != nil {
		log.Fatal(err)
	}

	applied := openAppend(*appliedPath)
	received := openAppend(*receivedPath)
	mismatches := openAppend(*mismatchPath)
	confirmed := start
	var pending []string
	var pendingXid uint32
	var pendingLSN pglogrepl.LSN

	apply := func() {
		// one write, so that a kill leaves the file with whole transactions
		if _, err := applied.WriteString(strings.Join(pending, "\n") + "\n"); err != nil {
			log.Fatal(err)
		}
		pending = pending[:0]
		confirmed = pendingLSN
	}
	report := func() {
		if confirmed == 0 {
			return
		}
		err := pglogrepl.SendStandbyStatusUpdate(ctx, conn,
			pglogrepl.StandbyStatusUpdate{WALWritePosition: confirmed})
		if err != nil {
			log.Fatal(err)
		}
	}

	nextReport := time.Now().Add(time.Second)
	for {
		if time.Now().After(nextReport) {
			report()
			nextReport = time.Now().Add(time.Second)
		}
		receiveCtx, cancel := context.WithDeadline(ctx, nextReport)
		raw, err := conn.ReceiveMessage(receiveCtx)
		cancel()
		if pgconn.Timeout(err) {
			continue
		} else if err != nil {
			log.Fatal(err)
		}
		switch m := raw.(type) {
		case *pgproto3.ErrorResponse:
			log.Fatalf("server error: %s", m.Message)
		case *pgproto3.NoticeResponse:
			log.Printf("server %s: %s", m.Severity, m.Message)
			continue
		}
		msg, ok := raw.(*pgproto3.CopyData)
		if !ok {
			log.Fatalf("unexpected message %T", raw)
		}

		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			keepalive, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				log.Fatal(err)
			}
			if keepalive.ReplyRequested {
				report()
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				log.Fatal(err)
			}
			text := string(xld.WALData)
			if _, err := received.WriteString(text + "\n"); err != nil {
				log.Fatal(err)
			}
			var l line
			if err := json.Unmarshal(xld.WALData, &l); err != nil {
				log.Fatalf("bad line %q: %v", text, err)
			}
			lineLSN, err := pglogrepl.ParseLSN(l.LSN)
			if err != nil {
				log.Fatal(err)
			}
			if lineLSN != xld.WALStart {
				fmt.Fprintf(mismatches, "%s WALStart=%s\n", text, xld.WALStart)
			}

			if !framed && len(pending) > 0 && l.Xid != pendingXid {
				apply()
				report()
			}
			pending = append(pending, text)
			pendingXid = l.Xid
			pendingLSN = lineLSN
			if framed && l.Kind == "commit" {
				apply()
				report()
			}
		}
	}
}
