// Command ledger-check compares an export of the ledger PostgreSQL
// extension (a SQLite file or a MongoDB collection) with ledger.read, row
// for row, reading the export the way the Go library
// github.com/rbaliyan/ledger reads its own stores (store.go).
//
//	ledger-check -sqlite FILE [-table T] [-streams PATTERN]
//	ledger-check -mongo URI -db DB [-collection C] [-streams PATTERN]
//	ledger-check -sqlite FILE -dump   (print what the library reads; no server)
//	ledger-check -sqlite FILE|-mongo ... -lag N   (commit-to-target lag, lag.go)
//	ledger-check -mongo URI -db DB -collection C -raw-insert N   (the server's ceiling)
//
// PostgreSQL is reached through the usual PG* environment variables.  For
// every stream of the pattern it compares: the whole stream (Read with
// After and Limit, page by page), Desc with and without After, WithOrderKey,
// WithTag, WithAllTags, WithMetadataKey and WithAnnotation for values that
// occur in the stream, Count and Stat; and ListStreamIDs page by page.
// Payloads must be equal by value; in MongoDB every number must also have
// the BSON type the sink's rules give it.  Prints one line per mismatch and
// a summary; exits 1 on any mismatch.  Streams must have no upcasters
// (ledger.read would upcast, the export holds payloads as stored).
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongoopts "go.mongodb.org/mongo-driver/v2/mongo/options"
	_ "modernc.org/sqlite"
)

type checker struct {
	pg       *pgx.Conn
	target   store
	mongo    bool
	problems int
	compared int
}

func (c *checker) problem(format string, args ...any) {
	c.problems++
	if c.problems <= 50 {
		fmt.Printf("MISMATCH: "+format+"\n", args...)
	}
}

func main() {
	sqlitePath := flag.String("sqlite", "", "SQLite export file")
	table := flag.String("table", "ledger_entries", "SQLite table")
	mongoURI := flag.String("mongo", "", "MongoDB URI")
	mongoDB := flag.String("db", "", "MongoDB database")
	collection := flag.String("collection", "ledger_entries", "MongoDB collection")
	pattern := flag.String("streams", "*", "streams pattern of the sink")
	dump := flag.Bool("dump", false, "print every entry the library reads, compare nothing")
	lag := flag.Int("lag", 0, "measure commit-to-target lag over this many appends to stream -lag-stream")
	lagStream := flag.String("lag-stream", "lag", "stream for -lag")
	raw := flag.Int("raw-insert", 0, "write this many sink-shaped documents straight into -collection (MongoDB's own ceiling)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := &checker{}
	switch {
	case *sqlitePath != "":
		db, err := sql.Open("sqlite", "file:"+*sqlitePath+"?mode=ro&_pragma=busy_timeout(5000)")
		if err != nil {
			fail("open %s: %v", *sqlitePath, err)
		}
		defer db.Close()
		c.target = &sqliteStore{db: db, table: *table}
	case *mongoURI != "":
		client, err := mongo.Connect(mongoopts.Client().ApplyURI(*mongoURI).SetTimeout(30 * time.Second))
		if err != nil {
			fail("connect to MongoDB: %v", err)
		}
		defer client.Disconnect(ctx)
		c.target = &mongoStore{coll: client.Database(*mongoDB).Collection(*collection)}
		c.mongo = true
		if *raw > 0 {
			rawInsert(ctx, client.Database(*mongoDB).Collection(*collection), *raw)
			return
		}
	default:
		fail("give -sqlite or -mongo")
	}
	if *dump {
		dumpStore(ctx, c.target)
		return
	}
	pg, err := pgx.Connect(ctx, "")
	if err != nil {
		fail("connect to PostgreSQL: %v", err)
	}
	defer pg.Close(ctx)
	c.pg = pg
	if *lag > 0 {
		measureLag(ctx, pg, c.target, *lagStream, *lag)
		return
	}

	streams, err := c.pgStreams(ctx, *pattern)
	if err != nil {
		fail("list streams: %v", err)
	}
	c.checkListStreamIDs(ctx, *pattern, streams)
	for _, s := range streams {
		if err := c.checkStream(ctx, s); err != nil {
			c.problem("stream %q: %v", s, err)
		}
	}
	fmt.Printf("ledger-check: %d streams, %d entries compared, %d mismatches\n", len(streams), c.compared, c.problems)
	if c.problems > 0 {
		os.Exit(1)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ledger-check: "+format+"\n", args...)
	os.Exit(2)
}

func matches(pattern, stream string) bool {
	if strings.HasSuffix(pattern, "*") {
		return strings.HasPrefix(stream, strings.TrimSuffix(pattern, "*"))
	}
	return pattern == stream
}

// pgStreams: ledger.streams() of the pattern, page by page.
func (c *checker) pgStreams(ctx context.Context, pattern string) ([]string, error) {
	prefix := strings.TrimSuffix(pattern, "*")
	var out []string
	after := ""
	for {
		rows, err := c.pg.Query(ctx, `SELECT s FROM ledger.streams(after => $1, "limit" => 500, prefix => $2) s`,
			after, prefix)
		if err != nil {
			return nil, err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if matches(pattern, n) {
				out = append(out, n)
			}
		}
		if len(names) < 500 {
			return out, nil
		}
		after = names[len(names)-1]
	}
}

// pgRead: ledger.read with the options the library's Read takes.
func (c *checker) pgRead(ctx context.Context, stream string, o readOpts) ([]entry, error) {
	var after any
	if o.After != 0 {
		after = o.After
	}
	var orderKey, tag any
	if o.OrderKey != "" {
		orderKey = o.OrderKey
	}
	if o.Tag != "" {
		tag = o.Tag
	}
	var allTags any
	if len(o.AllTags) > 0 {
		allTags = o.AllTags
	}
	var meta, ann any
	if len(o.Metadata) > 0 {
		meta = kvJSON(o.Metadata)
	}
	if len(o.Annotations) > 0 {
		ann = kvJSON(o.Annotations)
	}
	rows, err := c.pg.Query(ctx, `SELECT id, stream, seq, payload::text, order_key, dedup_key, schema_version,
			metadata::text, tags, annotations::text, created_at, updated_at
		FROM ledger.read($1, after => $2, "limit" => $3, descending => $4, order_key => $5, tag => $6,
			all_tags => $7, metadata => $8::jsonb, annotations => $9::jsonb)`,
		stream, after, limitOf(o), o.Desc, orderKey, tag, allTags, meta, ann)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []entry
	for rows.Next() {
		var e entry
		var payload, meta, ann string
		var created time.Time
		var updated *time.Time
		if err := rows.Scan(&e.ID, &e.Stream, &e.Seq, &payload, &e.OrderKey, &e.DedupKey, &e.SchemaVersion,
			&meta, &e.Tags, &ann, &created, &updated); err != nil {
			return nil, err
		}
		e.Payload = json.RawMessage(payload)
		if err := json.Unmarshal([]byte(meta), &e.Metadata); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(ann), &e.Annotations); err != nil {
			return nil, err
		}
		// the stores keep milliseconds
		e.CreatedAt = created.UTC().Truncate(time.Millisecond)
		if updated != nil {
			t := updated.UTC().Truncate(time.Millisecond)
			e.UpdatedAt = &t
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func kvJSON(filters []kv) string {
	m := map[string]string{}
	for _, f := range filters {
		m[f.Key] = f.Value
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// compare reads the same thing from both sides and compares row by row.
func (c *checker) compare(ctx context.Context, stream, what string, o readOpts) ([]entry, error) {
	want, err := c.pgRead(ctx, stream, o)
	if err != nil {
		return nil, fmt.Errorf("ledger.read (%s): %w", what, err)
	}
	got, err := c.target.Read(ctx, stream, o)
	if err != nil {
		return nil, fmt.Errorf("Read (%s): %w", what, err)
	}
	if len(got) != len(want) {
		c.problem("stream %q, Read %s: %d entries, ledger.read has %d (ids %v vs %v)", stream, what,
			len(got), len(want), ids(got), ids(want))
		return want, nil
	}
	for i := range want {
		if d := c.diff(&got[i], &want[i]); d != "" {
			c.problem("stream %q, Read %s, entry %d: %s", stream, what, want[i].ID, d)
		}
	}
	return want, nil
}

func ids(es []entry) []int64 {
	out := make([]int64, 0, len(es))
	for _, e := range es {
		out = append(out, e.ID)
		if len(out) == 20 {
			break
		}
	}
	return out
}

func (c *checker) diff(got, want *entry) string {
	var d []string
	if got.ID != want.ID {
		d = append(d, fmt.Sprintf("id %d", got.ID))
	}
	if got.Stream != want.Stream {
		d = append(d, fmt.Sprintf("stream %q", got.Stream))
	}
	if got.Seq != want.Seq {
		d = append(d, fmt.Sprintf("seq %d, want %d", got.Seq, want.Seq))
	}
	if got.OrderKey != want.OrderKey || got.DedupKey != want.DedupKey || got.SchemaVersion != want.SchemaVersion {
		d = append(d, fmt.Sprintf("order_key/dedup_key/schema_version %q/%q/%d, want %q/%q/%d",
			got.OrderKey, got.DedupKey, got.SchemaVersion, want.OrderKey, want.DedupKey, want.SchemaVersion))
	}
	if !sameMap(got.Metadata, want.Metadata) {
		d = append(d, fmt.Sprintf("metadata %v, want %v", got.Metadata, want.Metadata))
	}
	if !reflect.DeepEqual(nilIfEmpty(got.Tags), nilIfEmpty(want.Tags)) {
		d = append(d, fmt.Sprintf("tags %v, want %v", got.Tags, want.Tags))
	}
	if !sameMap(got.Annotations, want.Annotations) {
		d = append(d, fmt.Sprintf("annotations %v, want %v", got.Annotations, want.Annotations))
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		d = append(d, fmt.Sprintf("created_at %s, want %s", got.CreatedAt, want.CreatedAt))
	}
	if (got.UpdatedAt == nil) != (want.UpdatedAt == nil) ||
		(got.UpdatedAt != nil && !got.UpdatedAt.Equal(*want.UpdatedAt)) {
		d = append(d, fmt.Sprintf("updated_at %v, want %v", got.UpdatedAt, want.UpdatedAt))
	}
	var perr error
	if c.mongo {
		perr = sameJSONBSON(want.Payload.(json.RawMessage), got.Payload)
	} else {
		perr = sameJSON(want.Payload.(json.RawMessage), got.Payload.(json.RawMessage))
	}
	if perr != nil {
		d = append(d, "payload: "+perr.Error())
	}
	return strings.Join(d, "; ")
}

func sameMap(a, b map[string]string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// checkStream runs every comparison on one stream.
func (c *checker) checkStream(ctx context.Context, stream string) error {
	// the whole stream, page by page, as a library consumer would
	var all []entry
	after := int64(0)
	for {
		page, err := c.compare(ctx, stream, fmt.Sprintf("After(%d) Limit(100)", after), readOpts{After: after, Limit: 100})
		if err != nil {
			return err
		}
		all = append(all, page...)
		if len(page) < 100 {
			break
		}
		after = page[len(page)-1].ID
	}
	c.compared += len(all)
	if _, err := c.compare(ctx, stream, "Desc() Limit(7)", readOpts{Desc: true, Limit: 7}); err != nil {
		return err
	}
	if len(all) > 2 {
		mid := all[len(all)/2].ID
		if _, err := c.compare(ctx, stream, fmt.Sprintf("Desc() After(%d)", mid), readOpts{Desc: true, After: mid, Limit: 5}); err != nil {
			return err
		}
	}

	// filters, for values that occur in the stream
	orderKeys, tags, metas, anns := map[string]bool{}, map[string]bool{}, map[kv]bool{}, map[kv]bool{}
	var twoTags []string
	for _, e := range all {
		if e.OrderKey != "" && len(orderKeys) < 3 {
			orderKeys[e.OrderKey] = true
		}
		for _, t := range e.Tags {
			if len(tags) < 4 {
				tags[t] = true
			}
		}
		if len(e.Tags) >= 2 && twoTags == nil {
			twoTags = e.Tags[:2]
		}
		for k, v := range e.Metadata {
			if len(metas) < 3 {
				metas[kv{k, v}] = true
			}
		}
		for k, v := range e.Annotations {
			if len(anns) < 3 {
				anns[kv{k, v}] = true
			}
		}
	}
	for _, k := range sortedKeys(orderKeys) {
		if _, err := c.compare(ctx, stream, fmt.Sprintf("WithOrderKey(%q)", k), readOpts{OrderKey: k, Limit: 1000}); err != nil {
			return err
		}
	}
	for _, t := range sortedKeys(tags) {
		if _, err := c.compare(ctx, stream, fmt.Sprintf("WithTag(%q)", t), readOpts{Tag: t, Limit: 1000}); err != nil {
			return err
		}
	}
	if twoTags != nil {
		if _, err := c.compare(ctx, stream, fmt.Sprintf("WithAllTags(%q)", twoTags), readOpts{AllTags: twoTags, Limit: 1000}); err != nil {
			return err
		}
	}
	for f := range metas {
		if _, err := c.compare(ctx, stream, fmt.Sprintf("WithMetadataKey(%q, %q)", f.Key, f.Value),
			readOpts{Metadata: []kv{f}, Limit: 1000}); err != nil {
			return err
		}
	}
	for f := range anns {
		if _, err := c.compare(ctx, stream, fmt.Sprintf("WithAnnotation(%q, %q)", f.Key, f.Value),
			readOpts{Annotations: []kv{f}, Limit: 1000}); err != nil {
			return err
		}
	}

	// Count and Stat
	var count, first, last int64
	if err := c.pg.QueryRow(ctx, `SELECT count, COALESCE(first_id, 0), COALESCE(last_id, 0) FROM ledger.stat($1)`,
		stream).Scan(&count, &first, &last); err != nil {
		return err
	}
	n, err := c.target.Count(ctx, stream)
	if err != nil {
		return fmt.Errorf("Count: %w", err)
	}
	if n != count {
		c.problem("stream %q: Count %d, ledger.count %d", stream, n, count)
	}
	st, err := c.target.Stat(ctx, stream)
	if err != nil {
		return fmt.Errorf("Stat: %w", err)
	}
	if st.Count != count || st.FirstID != first || st.LastID != last {
		c.problem("stream %q: Stat %+v, ledger.stat count %d first_id %d last_id %d", stream, st, count, first, last)
	}
	return nil
}

// ListStreamIDs, two at a time, against ledger.streams (the pattern's part).
func (c *checker) checkListStreamIDs(ctx context.Context, pattern string, want []string) {
	var got []string
	after := ""
	for {
		page, err := c.target.ListStreamIDs(ctx, after, 2)
		if err != nil {
			c.problem("ListStreamIDs: %v", err)
			return
		}
		for _, s := range page {
			if matches(pattern, s) {
				got = append(got, s)
			}
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1]
	}
	if !reflect.DeepEqual(nilIfEmpty(got), nilIfEmpty(want)) {
		c.problem("ListStreamIDs %v, ledger.streams %v", got, want)
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// dumpStore prints what a library user reads: every stream, every entry.
func dumpStore(ctx context.Context, st store) {
	after := ""
	for {
		streams, err := st.ListStreamIDs(ctx, after, 100)
		if err != nil {
			fail("ListStreamIDs: %v", err)
		}
		for _, s := range streams {
			var last int64
			for {
				page, err := st.Read(ctx, s, readOpts{After: last, Limit: 100})
				if err != nil {
					fail("Read(%q): %v", s, err)
				}
				for _, e := range page {
					fmt.Printf("%s #%d id=%d payload=%s order_key=%q tags=%v annotations=%v created_at=%s\n",
						e.Stream, e.Seq, e.ID, payloadText(e.Payload), e.OrderKey, e.Tags, e.Annotations,
						e.CreatedAt.Format(time.RFC3339Nano))
					last = e.ID
				}
				if len(page) < 100 {
					break
				}
			}
		}
		if len(streams) < 100 {
			return
		}
		after = streams[len(streams)-1]
	}
}

func payloadText(p any) string {
	switch v := p.(type) {
	case json.RawMessage:
		return string(v)
	default:
		return fmt.Sprint(v)
	}
}
