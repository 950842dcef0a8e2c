// Command ferretdb runs FerretDB v1 (github.com/FerretDB/FerretDB, an
// independent MongoDB-wire server) on its embedded SQLite backend (or, with -postgresql-url, on a
// PostgreSQL database), on one
// loopback address, until SIGTERM or SIGINT.  The tests start it through
// test/lib/ferretdb.sh.
//
// It uses FerretDB's embeddable package: FerretDB's own cmd/ferretdb
// refuses to start when built outside FerretDB's repository, because its
// version file is generated there.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "loopback TCP address to listen on")
	dir := flag.String("dir", "", "directory of the SQLite databases (created if missing)")
	pgURL := flag.String("postgresql-url", "", "use the PostgreSQL backend at this URL instead of SQLite")
	flag.Parse()

	host, _, err := net.SplitHostPort(*listen)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(os.Stderr, "ferretdb: -listen %q is not a loopback address\n", *listen)
		os.Exit(2)
	}
	if *dir == "" && *pgURL == "" {
		fmt.Fprintln(os.Stderr, "ferretdb: -dir or -postgresql-url is required")
		os.Exit(2)
	}
	handler := "sqlite"
	if *pgURL != "" {
		handler = "postgresql"
	} else if err := os.MkdirAll(*dir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: *listen},
		Logger:        logger,
		Handler:       handler,
		SQLiteURL:     "file:" + *dir + "/",
		PostgreSQLURL: *pgURL,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Println("ferretdb listening on", *listen)
	if err := f.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
}
