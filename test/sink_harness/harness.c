/*
 * test/sink_harness/harness.c
 *	  Standalone driver for the export sinks (src/sink_sqlite.c,
 *	  src/sink_mongo.c), outside the server.
 *
 * Usage:
 *	harness check KIND TARGET OPTIONS	 -> "OK" or "ERR <message>"; exit 0/1
 *	harness redact KIND TARGET			 -> the redacted target
 *	harness sqlite PATH					 -> write scenario on PATH (table
 *											ledger_entries, sink "s1")
 *	harness sqlite-open PATH OPTIONS	 -> open only: "OK" or "ERR <message>"
 *	harness sqlite-locked PATH			 -> write while another connection
 *											holds the write lock: must fail
 *	harness mongo URI DB				 -> write scenario + read back
 *	harness mongo-open URI OPTIONS		 -> open only, timed: "OK" or
 *											"ERR <ms> <message>"
 *	harness mongo-dump URI DB COLL		 -> every document in _id order, one
 *											relaxed extended JSON line each
 *											(used by test/worker_sinks.sh)
 *
 * The scenarios print one "ok - ..." or "not ok - ..." line per assertion
 * (run.sh counts them) and exit 1 if any failed.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mongoc/mongoc.h>
#include <sqlite3.h>

#include "sink.h"

static int	failures = 0;

static void
check(int cond, const char *fmt,...)
{
	va_list		ap;

	printf(cond ? "ok - " : "not ok - ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!cond)
		failures++;
}

static const LedgerSinkOps *
ops_for(const char *kind)
{
	if (strcmp(kind, "sqlite") == 0)
		return &ledger_sqlite_sink_ops;
	if (strcmp(kind, "mongodb") == 0)
		return &ledger_mongo_sink_ops;
	fprintf(stderr, "unknown kind %s\n", kind);
	exit(2);
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/*
 * The test rows.  created_at 1700000000.123456 s = 2023-11-14T22:13:20.123456Z.
 */
#define T0 INT64_C(1700000000123456)

static const LedgerExportRow batch1[] = {
	{1, "orders", 1, "{\"a\": 1, \"b\": [true, null, 2.5], \"s\": \"x\\u00e9\"}", "", "", 1,
	"{}", "[]", "{}", T0, 0, 0},
	{2, "orders", 2, "[1, \"two\", {\"three\": 3}]", "ok1", "d1", 2,
		"{\"k\": \"v\", \"k2\": \"v2\"}", "[\"t1\", \"t2\"]", "{\"note\": \"n\"}",
	T0 + 1000, 1, T0 + 5000999},
	{3, "users", 1, "42", "", "", 1, "{}", "[\"solo\"]", "{}", T0 + 2000, 0, 0},
};

static const LedgerExportRow batch2[] = {
	{5, "orders", 3, "\"just a string\"", "", "d2", 1, "{}", "[]", "{}", T0 + 3000, 0, 0},
	{7, "users", 2, "null", "", "", 1, "{ }", "[]", "{}", T0 + 4000, 0, 0},
	{9, "orders", 4, "{\"big\": 9000000000}", "ok1", "", 3, "{}", "[]", "{}", T0 + 5000, 0, 0},
};

#define N(a) ((int) (sizeof(a) / sizeof((a)[0])))

/* Position, or -1 on error, -2 without a state (so it can go in a message). */
static int64_t
posv(const LedgerSinkOps *ops, void *st, char *err, size_t errlen)
{
	int64_t		pos = -1;

	if (st == NULL)
		return -2;
	if (ops->position(st, &pos, err, errlen) != 0)
		return -1;
	return pos;
}

static int
cmd_check(const char *kind, const char *target, const char *options)
{
	char		err[1024] = "";
	int			rc = ops_for(kind)->check(target, options, err, sizeof(err));

	if (rc == 0)
		printf("OK\n");
	else
		printf("ERR %s\n", err);
	return rc == 0 ? 0 : 1;
}

static int
cmd_redact(const char *kind, const char *target)
{
	char	   *r = ledger_sink_redact_target(kind, target);

	printf("%s\n", r ? r : "(null)");
	free(r);
	return 0;
}

/* Generic scenario shared by both kinds; returns the state. */
static void
write_scenario(const LedgerSinkOps *ops, void *st)
{
	char		err[1024] = "";
	int64_t		pos = -1;
	int			rc;

	rc = ops->position(st, &pos, err, sizeof(err));
	check(rc == 0 && pos == 0, "%s: position of a new target is 0 (rc=%d pos=%" PRId64 " %s)",
		  ops->kind, rc, pos, err);

	rc = ops->write(st, batch1, N(batch1), err, sizeof(err));
	check(rc == 0, "%s: write batch 1 (%s)", ops->kind, err);
	rc = ops->position(st, &pos, err, sizeof(err));
	check(rc == 0 && pos == 3, "%s: position after batch 1 is 3 (got %" PRId64 ")", ops->kind, pos);

	rc = ops->write(st, batch2, N(batch2), err, sizeof(err));
	check(rc == 0, "%s: write batch 2 (%s)", ops->kind, err);
	rc = ops->position(st, &pos, err, sizeof(err));
	check(rc == 0 && pos == 9, "%s: position after batch 2 is 9 (got %" PRId64 ")", ops->kind, pos);

	/* a batch sent again after a crash: no-op, no error */
	rc = ops->write(st, batch1, N(batch1), err, sizeof(err));
	check(rc == 0, "%s: re-sent batch 1 is not an error (%s)", ops->kind, err);
	rc = ops->write(st, batch2, N(batch2), err, sizeof(err));
	check(rc == 0, "%s: re-sent batch 2 is not an error (%s)", ops->kind, err);
	rc = ops->position(st, &pos, err, sizeof(err));
	check(rc == 0 && pos == 9, "%s: position after re-sends is still 9 (got %" PRId64 ")", ops->kind, pos);
}

static int
cmd_sqlite(const char *path)
{
	const LedgerSinkOps *ops = &ledger_sqlite_sink_ops;
	char		err[1024] = "";
	int64_t		pos = -1;
	void	   *st;
	int			i;

	st = ops->open("s1", path, "{}", err, sizeof(err));
	check(st != NULL, "sqlite: open %s (%s)", path, err);
	if (st == NULL)
		return 1;
	write_scenario(ops, st);

	/* many small batches: no leak or statement state trouble */
	for (i = 0; i < 200; i++)
	{
		LedgerExportRow r = batch1[0];

		r.id = 100 + i;
		r.seq = 100 + i;
		if (ops->write(st, &r, 1, err, sizeof(err)) != 0)
			break;
	}
	check(i == 200, "sqlite: 200 single-row batches (%s)", i == 200 ? "" : err);
	ops->close(st);

	/* reopen: position survives, ids 100..299 present */
	st = ops->open("s1", path, "{}", err, sizeof(err));
	check(st != NULL, "sqlite: reopen (%s)", err);
	if (st == NULL)
		return 1;
	pos = posv(ops, st, err, sizeof(err));
	check(pos == 299,
		  "sqlite: position after reopen is 299 (got %" PRId64 ")", pos);
	ops->close(st);

	/* another sink on the same file has its own cursor */
	st = ops->open("s2", path, "{}", err, sizeof(err));
	pos = posv(ops, st, err, sizeof(err));
	check(pos == 0,
		  "sqlite: a second sink on the same file starts at 0 (got %" PRId64 ")", pos);
	if (st)
		ops->close(st);
	return failures ? 1 : 0;
}

static int
cmd_sqlite_open(const char *path, const char *options)
{
	char		err[1024] = "";
	void	   *st = ledger_sqlite_sink_ops.open("s1", path, options, err, sizeof(err));

	if (st == NULL)
	{
		printf("ERR %s\n", err);
		return 1;
	}
	ledger_sqlite_sink_ops.close(st);
	printf("OK\n");
	return 0;
}

static int
cmd_sqlite_locked(const char *path)
{
	const LedgerSinkOps *ops = &ledger_sqlite_sink_ops;
	char		err[1024] = "";
	sqlite3    *other = NULL;
	void	   *st;
	LedgerExportRow r = batch1[0];
	double		t0;
	int			rc;
	int64_t		pos = -1;

	st = ops->open("s1", path, "{}", err, sizeof(err));
	check(st != NULL, "sqlite: open for lock test (%s)", err);
	if (st == NULL)
		return 1;
	sqlite3_open(path, &other);
	rc = sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	check(rc == SQLITE_OK, "sqlite: another connection takes the write lock");
	r.id = 100000;
	t0 = now_ms();
	rc = ops->write(st, &r, 1, err, sizeof(err));
	check(rc == -1 && strstr(err, "locked") != NULL && strstr(err, path) != NULL,
		  "sqlite: write on a locked database fails with the sqlite message after %.0f ms: %s",
		  now_ms() - t0, err);
	sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(other);

	/* the state stays usable */
	err[0] = '\0';
	rc = ops->write(st, &r, 1, err, sizeof(err));
	check(rc == 0, "sqlite: the same state writes once the lock is gone (%s)", err);
	pos = posv(ops, st, err, sizeof(err));
	check(pos == 100000,
		  "sqlite: position is 100000 (got %" PRId64 ")", pos);
	ops->close(st);
	return failures ? 1 : 0;
}

/* ---------------------------------------------------------------- mongo */

static const char *
str_field(const bson_t *doc, const char *path)
{
	bson_iter_t it;

	if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &it) &&
		BSON_ITER_HOLDS_UTF8(&it))
		return bson_iter_utf8(&it, NULL);
	return NULL;
}

static int
field_type(const bson_t *doc, const char *path)
{
	bson_iter_t it;

	if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &it))
		return (int) bson_iter_type(&it);
	return -1;
}

static int64_t
int_field(const bson_t *doc, const char *path)
{
	bson_iter_t it;

	if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &it))
	{
		if (BSON_ITER_HOLDS_DATE_TIME(&it))
			return bson_iter_date_time(&it);
		return bson_iter_as_int64(&it);
	}
	return INT64_MIN;
}

static char *
json_of(const bson_t *doc, const char *path)
{
	bson_iter_t it;
	const uint8_t *data;
	uint32_t	len;
	bson_t		sub;

	if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it))
		return bson_strdup("(missing)");
	if (BSON_ITER_HOLDS_DOCUMENT(&it))
		bson_iter_document(&it, &len, &data);
	else if (BSON_ITER_HOLDS_ARRAY(&it))
		bson_iter_array(&it, &len, &data);
	else
		return bson_strdup("(scalar)");
	bson_init_static(&sub, data, len);
	return BSON_ITER_HOLDS_ARRAY(&it) ? bson_array_as_json(&sub, NULL)
		: bson_as_relaxed_extended_json(&sub, NULL);
}

static int
json_is(const bson_t *doc, const char *path, const char *want)
{
	char	   *got = json_of(doc, path);
	int			ok = strcmp(got, want) == 0;

	if (!ok)
		printf("# %s: got %s, want %s\n", path, got, want);
	bson_free(got);
	return ok;
}

static int
cmd_mongo(const char *uri_text, const char *db)
{
	const LedgerSinkOps *ops = &ledger_mongo_sink_ops;
	char		err[1024] = "";
	char		options[256];
	void	   *st;
	mongoc_client_t *client;
	mongoc_collection_t *coll;
	mongoc_cursor_t *cursor;
	const bson_t *doc;
	bson_t		filter = BSON_INITIALIZER;
	bson_t	   *opts;
	bson_error_t error;
	const bson_t *docs[16];
	int			ndocs = 0;
	int			i;
	int64_t		pos = -1;

	snprintf(options, sizeof(options), "{\"database\": \"%s\"}", db);
	st = ops->open("m1", uri_text, options, err, sizeof(err));
	check(st != NULL, "mongodb: open (%s)", err);
	if (st == NULL)
		return 1;
	write_scenario(ops, st);
	ops->close(st);

	/* reopen (indexes already there) keeps the position */
	st = ops->open("m1", uri_text, options, err, sizeof(err));
	pos = posv(ops, st, err, sizeof(err));
	check(pos == 9,
		  "mongodb: reopen, position 9 (got %" PRId64 " %s)", pos, err);

	/* a foreign, driver-generated ObjectId does not move the position */
	client = mongoc_client_new(uri_text);
	coll = mongoc_client_get_collection(client, db, "ledger_entries");
	{
		bson_t	   *foreign = BCON_NEW("stream", "go", "source_id", "go-1");

		check(mongoc_collection_insert_one(coll, foreign, NULL, NULL, &error),
			  "mongodb: insert a document with a generated _id (%s)", error.message);
		bson_destroy(foreign);
	}
	if (st)
	{
		pos = posv(ops, st, err, sizeof(err));
		check(pos == 9,
			  "mongodb: position ignores generated ObjectIds (got %" PRId64 ")", pos);
		ops->close(st);
	}

	/* read back our documents in _id order */
	opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
	{
		bson_oid_t	bound;
		bson_t		lt;

		bson_oid_init_from_string(&bound, "000000010000000000000000");
		bson_append_document_begin(&filter, "_id", -1, &lt);
		bson_append_oid(&lt, "$lt", -1, &bound);
		bson_append_document_end(&filter, &lt);
	}
	cursor = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
	while (mongoc_cursor_next(cursor, &doc) && ndocs < 16)
	{
		char	   *j = bson_as_relaxed_extended_json(doc, NULL);

		printf("# %s\n", j);
		bson_free(j);
		docs[ndocs++] = bson_copy(doc);
	}
	check(!mongoc_cursor_error(cursor, &error), "mongodb: find (%s)", error.message);
	mongoc_cursor_destroy(cursor);
	bson_destroy(opts);
	bson_destroy(&filter);

	check(ndocs == 6, "mongodb: 6 documents after re-sent batches (got %d)", ndocs);
	if (ndocs == 6)
	{
		static const int64_t ids[] = {1, 2, 3, 5, 7, 9};
		bson_iter_t it;

		for (i = 0; i < 6; i++)
		{
			char		hex[25];
			char		want[25];
			char		idtxt[24];

			snprintf(want, sizeof(want), "00000000%016" PRIx64, (uint64_t) ids[i]);
			snprintf(idtxt, sizeof(idtxt), "%" PRId64, ids[i]);
			hex[0] = '\0';
			if (bson_iter_init_find(&it, docs[i], "_id") && BSON_ITER_HOLDS_OID(&it))
				bson_oid_to_string(bson_iter_oid(&it), hex);
			check(strcmp(hex, want) == 0, "mongodb: doc %d _id is ObjectId(%s) (got %s)", i, want, hex);
			check(str_field(docs[i], "source_id") && strcmp(str_field(docs[i], "source_id"), idtxt) == 0,
				  "mongodb: doc %d source_id \"%s\"", i, idtxt);
			check(field_type(docs[i], "schema_version") == BSON_TYPE_INT32,
				  "mongodb: doc %d schema_version is int32", i);
			check(field_type(docs[i], "seq") == BSON_TYPE_INT64,
				  "mongodb: doc %d seq is int64", i);
			check(field_type(docs[i], "created_at") == BSON_TYPE_DATE_TIME,
				  "mongodb: doc %d created_at is a date", i);
			check(field_type(docs[i], "order_key") == BSON_TYPE_UTF8 &&
				  field_type(docs[i], "dedup_key") == BSON_TYPE_UTF8 &&
				  field_type(docs[i], "stream") == BSON_TYPE_UTF8,
				  "mongodb: doc %d stream/order_key/dedup_key are strings", i);
			check(field_type(docs[i], "tags") == BSON_TYPE_ARRAY,
				  "mongodb: doc %d tags is an array", i);
		}
		/* field order of the Go struct */
		{
			static const char *const order[] = {"_id", "stream", "payload", "order_key",
				"dedup_key", "schema_version", "metadata", "tags", "annotations",
			"source_id", "created_at", "updated_at", "seq", NULL};
			int			k = 0;

			bson_iter_init(&it, docs[1]);
			while (bson_iter_next(&it) && order[k] != NULL)
			{
				if (strcmp(bson_iter_key(&it), order[k]) != 0)
					break;
				k++;
			}
			check(order[k] == NULL, "mongodb: field order follows the Go struct (stopped at %s)",
				  order[k] ? order[k] : "end");
		}
		check(int_field(docs[0], "created_at") == 1700000000123, "mongodb: created_at in ms");
		check(field_type(docs[0], "updated_at") == -1, "mongodb: updated_at left out when unset");
		check(int_field(docs[1], "updated_at") == 1700000005124, "mongodb: updated_at set (ms, truncated)");
		check(field_type(docs[0], "metadata") == -1 && field_type(docs[0], "annotations") == -1,
			  "mongodb: empty metadata/annotations left out");
		check(field_type(docs[4], "metadata") == -1, "mongodb: metadata \"{ }\" left out");
		check(json_is(docs[1], "metadata", "{ \"k\" : \"v\", \"k2\" : \"v2\" }"),
			  "mongodb: metadata document");
		check(json_is(docs[1], "annotations", "{ \"note\" : \"n\" }"), "mongodb: annotations document");
		check(json_is(docs[1], "tags", "[ \"t1\", \"t2\" ]"), "mongodb: tags array");
		check(json_is(docs[0], "tags", "[ ]"), "mongodb: empty tags array present");
		check(field_type(docs[0], "payload") == BSON_TYPE_DOCUMENT &&
			  json_is(docs[0], "payload", "{ \"a\" : 1, \"b\" : [ true, null, 2.5 ], \"s\" : \"x\xc3\xa9\" }"),
			  "mongodb: object payload is a document");
		check(field_type(docs[1], "payload") == BSON_TYPE_ARRAY &&
			  json_is(docs[1], "payload", "[ 1, \"two\", { \"three\" : 3 } ]"),
			  "mongodb: array payload is an array");
		check(json_is(docs[2], "payload", "{ \"value\" : 42 }") &&
			  field_type(docs[2], "payload_scalar") == BSON_TYPE_BOOL,
			  "mongodb: number payload is {value: 42} with payload_scalar");
		check(json_is(docs[3], "payload", "{ \"value\" : \"just a string\" }") &&
			  field_type(docs[3], "payload_scalar") == BSON_TYPE_BOOL,
			  "mongodb: string payload is {value: \"...\"} with payload_scalar");
		check(json_is(docs[4], "payload", "{ \"value\" : null }"), "mongodb: null payload");
		check(field_type(docs[5], "payload.big") == BSON_TYPE_INT64 &&
			  field_type(docs[0], "payload_scalar") == -1,
			  "mongodb: large integer stays int64; no marker on object payloads");
		check(str_field(docs[1], "dedup_key") && strcmp(str_field(docs[1], "dedup_key"), "d1") == 0 &&
			  str_field(docs[1], "order_key") && strcmp(str_field(docs[1], "order_key"), "ok1") == 0,
			  "mongodb: order_key/dedup_key values");
		for (i = 0; i < ndocs; i++)
			bson_destroy((bson_t *) docs[i]);
	}

	/* indexes */
	{
		bson_iter_t it;
		int			found = 0;

		cursor = mongoc_collection_find_indexes_with_opts(coll, NULL);
		while (mongoc_cursor_next(cursor, &doc))
		{
			const char *name = str_field(doc, "name");
			char	   *key = json_of(doc, "key");
			char	   *j = bson_as_relaxed_extended_json(doc, NULL);
			bool		unique = bson_iter_init_find(&it, doc, "unique") && bson_iter_as_bool(&it);
			bool		sparse = bson_iter_init_find(&it, doc, "sparse") && bson_iter_as_bool(&it);
			char	   *pfe = json_of(doc, "partialFilterExpression");

			printf("# index %s\n", j);
			if (name == NULL)
				name = "";
			if (strcmp(name, "stream_1__id_1") == 0)
				found += strcmp(key, "{ \"stream\" : 1, \"_id\" : 1 }") == 0 && !unique;
			else if (strcmp(name, "stream_1_order_key_1__id_1") == 0)
				found += strcmp(key, "{ \"stream\" : 1, \"order_key\" : 1, \"_id\" : 1 }") == 0 && !unique;
			else if (strcmp(name, "stream_1_dedup_key_1") == 0)
				found += strcmp(key, "{ \"stream\" : 1, \"dedup_key\" : 1 }") == 0 && unique && !sparse &&
					strcmp(pfe, "{ \"dedup_key\" : { \"$gt\" : \"\" } }") == 0;
			else if (strcmp(name, "stream_1") == 0)
				found += strcmp(key, "{ \"stream\" : 1 }") == 0 && !unique;
			else if (strcmp(name, "source_id_1") == 0)
				found += strcmp(key, "{ \"source_id\" : 1 }") == 0 && unique && sparse;
			else if (strcmp(name, "stream_1_tags_1__id_1") == 0)
				found += strcmp(key, "{ \"stream\" : 1, \"tags\" : 1, \"_id\" : 1 }") == 0 && !unique;
			bson_free(key);
			bson_free(pfe);
			bson_free(j);
		}
		check(!mongoc_cursor_error(cursor, &error), "mongodb: listIndexes (%s)", error.message);
		mongoc_cursor_destroy(cursor);
		check(found == 6, "mongodb: the 6 indexes with the Go driver's names, unique/partial/sparse as expected (%d matched)", found);
	}

	/* the unique dedup index is enforced: another id, same stream+dedup_key */
	{
		LedgerExportRow r = batch1[1];
		int64_t		n_before = 0;
		int64_t		n_after = 0;
		bson_t		q = BSON_INITIALIZER;

		r.id = 11;
		BSON_APPEND_UTF8(&q, "dedup_key", "d1");
		cursor = mongoc_collection_find_with_opts(coll, &q, NULL, NULL);
		while (mongoc_cursor_next(cursor, &doc))
			n_before++;
		mongoc_cursor_destroy(cursor);
		st = ops->open("m1", uri_text, options, err, sizeof(err));
		check(st != NULL && ops->write(st, &r, 1, err, sizeof(err)) == 0,
			  "mongodb: a dedup_key collision is skipped like the Go library does (%s)", err);
		if (st)
			ops->close(st);
		cursor = mongoc_collection_find_with_opts(coll, &q, NULL, NULL);
		while (mongoc_cursor_next(cursor, &doc))
			n_after++;
		mongoc_cursor_destroy(cursor);
		bson_destroy(&q);
		check(n_before == 1 && n_after == 1, "mongodb: still one document with dedup_key d1");
	}

	/* a bad payload is an error naming the entry, nothing written */
	{
		LedgerExportRow r = batch1[0];

		r.id = 12;
		r.payload_json = "{\"n\": 123456789012345678901234567890}";
		st = ops->open("m1", uri_text, options, err, sizeof(err));
		check(st != NULL && ops->write(st, &r, 1, err, sizeof(err)) == -1 &&
			  strstr(err, "entry 12") != NULL,
			  "mongodb: out-of-range number fails naming the entry: %s", err);
		if (st)
		{
			pos = posv(ops, st, err, sizeof(err));
			check(pos == 9,
				  "mongodb: position unchanged after a failed write (got %" PRId64 ")", pos);
			ops->close(st);
		}
	}

	/* keys that are legal JSON but not classic BSON field names */
	{
		LedgerExportRow r = batch1[0];
		bson_t		q = BSON_INITIALIZER;
		int			found = 0;

		r.id = 13;
		r.payload_json = "{\"a.b\": 1, \"\": 2, \"$x\": {\"$y\": \"z\"}}";
		r.metadata_json = "{\"m.k\": \"v\"}";
		err[0] = '\0';
		st = ops->open("m1", uri_text, options, err, sizeof(err));
		check(st != NULL && ops->write(st, &r, 1, err, sizeof(err)) == 0,
			  "mongodb: payload keys with dots, $ and empty names are written (%s)", err);
		pos = posv(ops, st, err, sizeof(err));
		check(pos == 13, "mongodb: position 13 (got %" PRId64 ")", pos);
		if (st)
			ops->close(st);
		BSON_APPEND_UTF8(&q, "source_id", "13");
		cursor = mongoc_collection_find_with_opts(coll, &q, NULL, NULL);
		while (mongoc_cursor_next(cursor, &doc))
			found += json_is(doc, "payload", "{ \"a.b\" : 1, \"\" : 2, \"$x\" : { \"$y\" : \"z\" } }");
		mongoc_cursor_destroy(cursor);
		bson_destroy(&q);
		check(found == 1, "mongodb: ... and read back unchanged");
	}

	mongoc_collection_destroy(coll);
	mongoc_client_destroy(client);
	return failures ? 1 : 0;
}

static int
cmd_mongo_open(const char *uri_text, const char *options)
{
	char		err[1024] = "";
	double		t0 = now_ms();
	void	   *st = ledger_mongo_sink_ops.open("m1", uri_text, options, err, sizeof(err));

	if (st == NULL)
	{
		printf("ERR %.0f %s\n", now_ms() - t0, err);
		return 1;
	}
	ledger_mongo_sink_ops.close(st);
	printf("OK\n");
	return 0;
}

static int
cmd_mongo_dump(const char *uri_text, const char *db, const char *coll)
{
	mongoc_client_t *client = mongoc_client_new(uri_text);
	mongoc_collection_t *collection;
	mongoc_cursor_t *cursor;
	bson_t	   *filter = bson_new();
	bson_t	   *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
	const bson_t *doc;
	bson_error_t error;
	int			rc = 0;

	if (client == NULL)
	{
		fprintf(stderr, "bad URI\n");
		return 1;
	}
	collection = mongoc_client_get_collection(client, db, coll);
	cursor = mongoc_collection_find_with_opts(collection, filter, opts, NULL);
	while (mongoc_cursor_next(cursor, &doc))
	{
		char	   *json = bson_as_relaxed_extended_json(doc, NULL);

		printf("%s\n", json);
		bson_free(json);
	}
	if (mongoc_cursor_error(cursor, &error))
	{
		fprintf(stderr, "find failed: %s\n", error.message);
		rc = 1;
	}
	mongoc_cursor_destroy(cursor);
	mongoc_collection_destroy(collection);
	mongoc_client_destroy(client);
	bson_destroy(filter);
	bson_destroy(opts);
	return rc;
}

int
main(int argc, char **argv)
{
	int			rc;

	mongoc_init();
	if (argc == 5 && strcmp(argv[1], "check") == 0)
		rc = cmd_check(argv[2], argv[3], argv[4]);
	else if (argc == 4 && strcmp(argv[1], "redact") == 0)
		rc = cmd_redact(argv[2], argv[3]);
	else if (argc == 3 && strcmp(argv[1], "sqlite") == 0)
		rc = cmd_sqlite(argv[2]);
	else if (argc == 4 && strcmp(argv[1], "sqlite-open") == 0)
		rc = cmd_sqlite_open(argv[2], argv[3]);
	else if (argc == 3 && strcmp(argv[1], "sqlite-locked") == 0)
		rc = cmd_sqlite_locked(argv[2]);
	else if (argc == 4 && strcmp(argv[1], "mongo") == 0)
		rc = cmd_mongo(argv[2], argv[3]);
	else if (argc == 5 && strcmp(argv[1], "mongo-dump") == 0)
		rc = cmd_mongo_dump(argv[2], argv[3], argv[4]);
	else if (argc == 4 && strcmp(argv[1], "mongo-open") == 0)
		rc = cmd_mongo_open(argv[2], argv[3]);
	else
	{
		fprintf(stderr, "usage: see the comment at the top of harness.c\n");
		rc = 2;
	}
	mongoc_cleanup();
	return rc;
}
