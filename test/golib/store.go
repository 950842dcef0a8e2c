// Reading an export the way github.com/rbaliyan/ledger's stores read it.
//
// The module proxy refuses that library (HTTP 403, checked 2026-12-02), so
// these readers use the drivers it uses (modernc.org/sqlite,
// go.mongodb.org/mongo-driver/v2) with queries written to its schema and to
// the semantics of its Store interface: Read (After, Limit, Desc,
// WithOrderKey, WithTag, WithAllTags, WithMetadataKey, WithAnnotation),
// Count, Stat and ListStreamIDs.  Entries decode into the same types its
// StoredEntry has, so a row that its decoder would refuse fails here too.

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongoopts "go.mongodb.org/mongo-driver/v2/mongo/options"
)

// kv is one metadata or annotation filter.
type kv struct{ Key, Value string }

// readOpts are the library's ReadOptions.
type readOpts struct {
	After       int64 // 0: no cursor
	Limit       int
	Desc        bool
	OrderKey    string
	Tag         string
	AllTags     []string
	Metadata    []kv
	Annotations []kv
}

// entry is the library's StoredEntry, with the PostgreSQL id it mirrors.
// Payload is the JSON (SQLite) or the BSON (MongoDB) payload, unconverted.
type entry struct {
	ID            int64
	Stream        string
	Seq           int64
	Payload       any
	OrderKey      string
	DedupKey      string
	SchemaVersion int
	Metadata      map[string]string
	Tags          []string
	Annotations   map[string]string
	CreatedAt     time.Time
	UpdatedAt     *time.Time
}

type stat struct {
	Count   int64
	FirstID int64
	LastID  int64
}

type store interface {
	Read(ctx context.Context, stream string, o readOpts) ([]entry, error)
	Count(ctx context.Context, stream string) (int64, error)
	Stat(ctx context.Context, stream string) (stat, error)
	ListStreamIDs(ctx context.Context, after string, limit int) ([]string, error)
}

// --- SQLite -----------------------------------------------------------

type sqliteStore struct {
	db    *sql.DB
	table string
}

const sqliteTimeLayout = "2006-01-02T15:04:05.000"

func (s *sqliteStore) Read(ctx context.Context, stream string, o readOpts) ([]entry, error) {
	where := []string{"stream = ?"}
	args := []any{stream}
	if o.After != 0 {
		if o.Desc {
			where = append(where, "id < ?")
		} else {
			where = append(where, "id > ?")
		}
		args = append(args, o.After)
	}
	if o.OrderKey != "" {
		where = append(where, "order_key = ?")
		args = append(args, o.OrderKey)
	}
	for _, t := range append(nonEmpty(o.Tag), o.AllTags...) {
		where = append(where, "EXISTS (SELECT 1 FROM json_each(tags) WHERE json_each.value = ?)")
		args = append(args, t)
	}
	for _, f := range o.Metadata {
		where = append(where, "EXISTS (SELECT 1 FROM json_each(metadata) WHERE json_each.key = ? AND json_each.value = ?)")
		args = append(args, f.Key, f.Value)
	}
	for _, f := range o.Annotations {
		where = append(where, "EXISTS (SELECT 1 FROM json_each(annotations) WHERE json_each.key = ? AND json_each.value = ?)")
		args = append(args, f.Key, f.Value)
	}
	dir := "ASC"
	if o.Desc {
		dir = "DESC"
	}
	q := fmt.Sprintf(`SELECT id, stream, seq, source_id, payload, order_key, dedup_key, schema_version,
		metadata, tags, annotations, created_at, updated_at FROM %s WHERE %s ORDER BY id %s LIMIT ?`,
		s.table, strings.Join(where, " AND "), dir)
	args = append(args, limitOf(o))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []entry
	for rows.Next() {
		var (
			e                    entry
			seq                  sql.NullInt64
			sourceID             string
			payload              []byte
			meta, tags, ann, upd sql.NullString
			created              string
		)
		if err := rows.Scan(&e.ID, &e.Stream, &seq, &sourceID, &payload, &e.OrderKey, &e.DedupKey,
			&e.SchemaVersion, &meta, &tags, &ann, &created, &upd); err != nil {
			return nil, err
		}
		if sourceID != strconv.FormatInt(e.ID, 10) {
			return nil, fmt.Errorf("row %d has source_id %q", e.ID, sourceID)
		}
		e.Seq = seq.Int64
		e.Payload = json.RawMessage(payload)
		if meta.Valid {
			if err := json.Unmarshal([]byte(meta.String), &e.Metadata); err != nil {
				return nil, fmt.Errorf("row %d: metadata: %w", e.ID, err)
			}
		}
		if err := json.Unmarshal([]byte(tags.String), &e.Tags); err != nil {
			return nil, fmt.Errorf("row %d: tags: %w", e.ID, err)
		}
		if ann.Valid {
			if err := json.Unmarshal([]byte(ann.String), &e.Annotations); err != nil {
				return nil, fmt.Errorf("row %d: annotations: %w", e.ID, err)
			}
		}
		if e.CreatedAt, err = time.Parse(sqliteTimeLayout, created); err != nil {
			return nil, fmt.Errorf("row %d: created_at: %w", e.ID, err)
		}
		if upd.Valid {
			t, err := time.Parse(sqliteTimeLayout, upd.String)
			if err != nil {
				return nil, fmt.Errorf("row %d: updated_at: %w", e.ID, err)
			}
			e.UpdatedAt = &t
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *sqliteStore) Count(ctx context.Context, stream string) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, fmt.Sprintf(`SELECT COUNT(*) FROM %s WHERE stream = ?`, s.table), stream).Scan(&n)
	return n, err
}

func (s *sqliteStore) Stat(ctx context.Context, stream string) (stat, error) {
	var st stat
	var lo, hi sql.NullInt64
	err := s.db.QueryRowContext(ctx, fmt.Sprintf(`SELECT COUNT(*), MIN(id), MAX(id) FROM %s WHERE stream = ?`, s.table),
		stream).Scan(&st.Count, &lo, &hi)
	st.FirstID, st.LastID = lo.Int64, hi.Int64
	return st, err
}

func (s *sqliteStore) ListStreamIDs(ctx context.Context, after string, limit int) ([]string, error) {
	rows, err := s.db.QueryContext(ctx,
		fmt.Sprintf(`SELECT DISTINCT stream FROM %s WHERE stream > ? ORDER BY stream ASC LIMIT ?`, s.table), after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, rows.Err()
}

// --- MongoDB ----------------------------------------------------------

type mongoStore struct {
	coll *mongo.Collection
}

// mongoEntry has the bson tags of the library's document type.
type mongoEntry struct {
	ID            bson.ObjectID     `bson:"_id,omitempty"`
	Stream        string            `bson:"stream"`
	Payload       bson.Raw          `bson:"payload"`
	OrderKey      string            `bson:"order_key"`
	DedupKey      string            `bson:"dedup_key"`
	SchemaVersion int               `bson:"schema_version"`
	Metadata      map[string]string `bson:"metadata,omitempty"`
	Tags          []string          `bson:"tags"`
	Annotations   map[string]string `bson:"annotations,omitempty"`
	SourceID      string            `bson:"source_id,omitempty"`
	CreatedAt     time.Time         `bson:"created_at"`
	UpdatedAt     *time.Time        `bson:"updated_at,omitempty"`
}

// oidOf is the sink's _id for a PostgreSQL id: 4 zero bytes, then the id
// as a big-endian int64.
func oidOf(id int64) bson.ObjectID {
	var o bson.ObjectID
	for i := 0; i < 8; i++ {
		o[11-i] = byte(uint64(id) >> (8 * i))
	}
	return o
}

func idOf(o bson.ObjectID) (int64, error) {
	if o[0] != 0 || o[1] != 0 || o[2] != 0 || o[3] != 0 {
		return 0, fmt.Errorf("_id %s was not made by a ledger sink", o.Hex())
	}
	var v uint64
	for i := 4; i < 12; i++ {
		v = v<<8 | uint64(o[i])
	}
	return int64(v), nil
}

func (m *mongoStore) Read(ctx context.Context, stream string, o readOpts) ([]entry, error) {
	filter := bson.D{{Key: "stream", Value: stream}}
	if o.After != 0 {
		op := "$gt"
		if o.Desc {
			op = "$lt"
		}
		filter = append(filter, bson.E{Key: "_id", Value: bson.D{{Key: op, Value: oidOf(o.After)}}})
	}
	if o.OrderKey != "" {
		filter = append(filter, bson.E{Key: "order_key", Value: o.OrderKey})
	}
	if o.Tag != "" {
		filter = append(filter, bson.E{Key: "tags", Value: o.Tag})
	}
	if len(o.AllTags) > 0 {
		filter = append(filter, bson.E{Key: "tags", Value: bson.D{{Key: "$all", Value: o.AllTags}}})
	}
	for _, f := range o.Metadata {
		filter = append(filter, bson.E{Key: "metadata." + f.Key, Value: f.Value})
	}
	for _, f := range o.Annotations {
		filter = append(filter, bson.E{Key: "annotations." + f.Key, Value: f.Value})
	}
	dir := 1
	if o.Desc {
		dir = -1
	}
	cur, err := m.coll.Find(ctx, filter,
		mongoopts.Find().SetSort(bson.D{{Key: "_id", Value: dir}}).SetLimit(int64(limitOf(o))))
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	var out []entry
	for cur.Next(ctx) {
		var d mongoEntry
		if err := cur.Decode(&d); err != nil {
			return nil, fmt.Errorf("the library's decoder refuses a document: %w", err)
		}
		id, err := idOf(d.ID)
		if err != nil {
			return nil, err
		}
		if d.SourceID != strconv.FormatInt(id, 10) {
			return nil, fmt.Errorf("document %d has source_id %q", id, d.SourceID)
		}
		raw := cur.Current
		seq, _ := raw.Lookup("seq").Int64OK()
		payload := raw.Lookup("payload")
		if scalar, ok := raw.Lookup("payload_scalar").BooleanOK(); ok && scalar {
			inner, ok := payload.DocumentOK()
			if !ok {
				return nil, fmt.Errorf("document %d: payload_scalar without a payload document", id)
			}
			payload = inner.Lookup("value")
		}
		out = append(out, entry{
			ID: id, Stream: d.Stream, Seq: seq, Payload: payload, OrderKey: d.OrderKey,
			DedupKey: d.DedupKey, SchemaVersion: d.SchemaVersion, Metadata: d.Metadata, Tags: d.Tags,
			Annotations: d.Annotations, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
		})
	}
	return out, cur.Err()
}

func (m *mongoStore) Count(ctx context.Context, stream string) (int64, error) {
	return m.coll.CountDocuments(ctx, bson.D{{Key: "stream", Value: stream}})
}

// Stat is the library's $group pipeline.  FerretDB 1.x has no $min/$max
// accumulators (the library's own Stat fails there the same way), so on
// "not implemented" the same figures come from Count and two sorted finds.
func (m *mongoStore) Stat(ctx context.Context, stream string) (stat, error) {
	st, err := m.statGroup(ctx, stream)
	if err == nil || !strings.Contains(err.Error(), "not implemented") {
		return st, err
	}
	st.Count, err = m.Count(ctx, stream)
	if err != nil || st.Count == 0 {
		return stat{Count: st.Count}, err
	}
	for _, dir := range []int{1, -1} {
		var d struct {
			ID bson.ObjectID `bson:"_id"`
		}
		err := m.coll.FindOne(ctx, bson.D{{Key: "stream", Value: stream}},
			mongoopts.FindOne().SetSort(bson.D{{Key: "_id", Value: dir}})).Decode(&d)
		if err != nil {
			return stat{}, err
		}
		id, err := idOf(d.ID)
		if err != nil {
			return stat{}, err
		}
		if dir == 1 {
			st.FirstID = id
		} else {
			st.LastID = id
		}
	}
	return st, nil
}

func (m *mongoStore) statGroup(ctx context.Context, stream string) (stat, error) {
	cur, err := m.coll.Aggregate(ctx, mongo.Pipeline{
		{{Key: "$match", Value: bson.D{{Key: "stream", Value: stream}}}},
		{{Key: "$group", Value: bson.D{
			{Key: "_id", Value: nil},
			{Key: "count", Value: bson.D{{Key: "$sum", Value: 1}}},
			{Key: "min", Value: bson.D{{Key: "$min", Value: "$_id"}}},
			{Key: "max", Value: bson.D{{Key: "$max", Value: "$_id"}}},
		}}},
	})
	if err != nil {
		return stat{}, err
	}
	defer cur.Close(ctx)
	if !cur.Next(ctx) {
		return stat{}, cur.Err()
	}
	var res struct {
		Count int64         `bson:"count"`
		Min   bson.ObjectID `bson:"min"`
		Max   bson.ObjectID `bson:"max"`
	}
	if err := cur.Decode(&res); err != nil {
		return stat{}, err
	}
	lo, err1 := idOf(res.Min)
	hi, err2 := idOf(res.Max)
	return stat{Count: res.Count, FirstID: lo, LastID: hi}, errors.Join(err1, err2)
}

func (m *mongoStore) ListStreamIDs(ctx context.Context, after string, limit int) ([]string, error) {
	cur, err := m.coll.Aggregate(ctx, mongo.Pipeline{
		{{Key: "$match", Value: bson.D{{Key: "stream", Value: bson.D{{Key: "$gt", Value: after}}}}}},
		{{Key: "$group", Value: bson.D{{Key: "_id", Value: "$stream"}}}},
		{{Key: "$sort", Value: bson.D{{Key: "_id", Value: 1}}}},
		{{Key: "$limit", Value: int64(limit)}},
	})
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	var out []string
	for cur.Next(ctx) {
		var row struct {
			ID string `bson:"_id"`
		}
		if err := cur.Decode(&row); err != nil {
			return nil, err
		}
		out = append(out, row.ID)
	}
	return out, cur.Err()
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func limitOf(o readOpts) int {
	if o.Limit > 0 {
		return o.Limit
	}
	return 100
}
