// -raw-insert N: the MongoDB server's own ceiling, for the export bench: N
// documents shaped like a sink's (same fields, same indexes), written with
// ordered InsertMany batches of 5000 straight from this client.

package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongoopts "go.mongodb.org/mongo-driver/v2/mongo/options"
)

func rawInsert(ctx context.Context, coll *mongo.Collection, n int) {
	_ = coll.Drop(ctx)
	models := []mongo.IndexModel{}
	for _, keys := range [][]string{{"stream", "_id"}, {"stream", "order_key", "_id"}, {"stream", "dedup_key"},
		{"stream"}, {"source_id"}, {"stream", "tags", "_id"}} {
		d := bson.D{}
		for _, k := range keys {
			d = append(d, bson.E{Key: k, Value: 1})
		}
		models = append(models, mongo.IndexModel{Keys: d})
	}
	if _, err := coll.Indexes().CreateMany(ctx, models); err != nil {
		fail("create indexes: %v", err)
	}
	t0 := time.Now()
	for base := 0; base < n; base += 5000 {
		docs := make([]any, 0, 5000)
		for i := base; i < base+5000 && i < n; i++ {
			id := int64(i + 1)
			docs = append(docs, bson.D{
				{Key: "_id", Value: oidOf(id)}, {Key: "stream", Value: "bench-" + strconv.Itoa(i%8)},
				{Key: "payload", Value: bson.D{{Key: "order", Value: int32(i)}, {Key: "customer", Value: "customer-1"},
					{Key: "amount", Value: 1.5}, {Key: "note", Value: string(make([]byte, 120))}}},
				{Key: "order_key", Value: "c1"}, {Key: "dedup_key", Value: ""}, {Key: "schema_version", Value: int32(1)},
				{Key: "tags", Value: bson.A{"t1"}}, {Key: "source_id", Value: strconv.FormatInt(id, 10)},
				{Key: "created_at", Value: time.Now()}, {Key: "seq", Value: id},
			})
		}
		if _, err := coll.InsertMany(ctx, docs, mongoopts.InsertMany().SetOrdered(true)); err != nil {
			fail("insert: %v", err)
		}
	}
	s := time.Since(t0).Seconds()
	fmt.Printf("the server alone: %d documents with InsertMany in %.2f s, %.0f documents/s\n", n, s, float64(n)/s)
}
