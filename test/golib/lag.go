// -lag N: commit-to-target lag as a client sees it.  One PostgreSQL
// connection appends an entry (autocommit) and then polls the export
// through the library's Read until the entry is there; then it changes the
// entry's tags and polls until the export shows them.  Reports the median
// and p99 of both, in milliseconds.

package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
)

func measureLag(ctx context.Context, pg *pgx.Conn, st store, stream string, n int) {
	var appendLag, tagLag []float64
	for i := 0; i < n; i++ {
		var id int64
		if err := pg.QueryRow(ctx, `SELECT ledger.append($1, jsonb_build_object('i', $2::int))`, stream, i).Scan(&id); err != nil {
			fail("append: %v", err)
		}
		t0 := time.Now()
		waitFor(ctx, st, stream, id, func(e entry) bool { return true })
		appendLag = append(appendLag, ms(time.Since(t0)))

		tag := fmt.Sprintf("seen-%d", i)
		if _, err := pg.Exec(ctx, `SELECT ledger.set_tags($1, $2, ARRAY[$3])`, stream, id, tag); err != nil {
			fail("set_tags: %v", err)
		}
		t0 = time.Now()
		waitFor(ctx, st, stream, id, func(e entry) bool { return len(e.Tags) == 1 && e.Tags[0] == tag })
		tagLag = append(tagLag, ms(time.Since(t0)))
		time.Sleep(20 * time.Millisecond) // idle between commits
	}
	report := func(name string, v []float64) {
		sort.Float64s(v)
		fmt.Printf("%s over %d commits: median %.1f ms, p99 %.1f ms, max %.1f ms\n", name, len(v),
			v[len(v)/2], v[(len(v)*99+99)/100-1], v[len(v)-1])
	}
	report("append commit-to-target lag", appendLag)
	report("set_tags commit-to-target lag", tagLag)
}

func waitFor(ctx context.Context, st store, stream string, id int64, ok func(entry) bool) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		es, err := st.Read(ctx, stream, readOpts{After: id - 1, Limit: 1})
		if err == nil && len(es) == 1 && es[0].ID == id && ok(es[0]) {
			return
		}
		time.Sleep(500 * time.Microsecond)
	}
	fail("entry %d did not reach the target within 30 s", id)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
