/*
 * test/sink_harness/harness.c
 *	  Standalone driver for the export sinks (src/sink_*.c), outside the
 *	  server, against real SQLite files and a real MongoDB-wire server.
 *
 * Usage:
 *	harness bson JSON					-> canonical Extended JSON of {"v": JSON}
 *										   as libbson reads our BSON back, or
 *										   "ERR <message>"
 *	harness redact KIND TARGET			-> the redacted target
 *	harness scrub KIND TARGET MESSAGE	-> the message, scrubbed
 *	harness hosts TARGET				-> "srv=0|1 host:port[unix] ..."
 *	harness check KIND TARGET OPTIONS	-> "OK" or "ERR <message>"
 *	harness sqlite PATH					-> mirror scenario on PATH
 *	harness mongo URI DB				-> mirror scenario on URI/DB
 *	harness mongo-open URI OPTIONS		-> open + read the cursor, timed:
 *										   "OK <ms>" or "ERR <ms> <message>"
 *	harness mongo-insert URI DB COLL JSON -> insert one document given as
 *										   canonical Extended JSON (for tests
 *										   that write into a target behind a
 *										   sink's back); "OK" or "ERR ..."
 *	harness oid ID						-> the _id a sink gives entry ID
 *
 * Scenarios print one "ok - ..." or "not ok - ..." line per assertion
 * (run.sh counts them) and exit 1 if any failed.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* created_at 1700000000.123456 s = 2023-11-14T22:13:20.123Z */
#define T0 INT64_C(1700000000123456)

static LedgerExportRow
entry(int64_t id, const char *stream, int64_t seq, const char *payload,
	  const char *dedup, const char *tags)
{
	LedgerExportRow r;

	memset(&r, 0, sizeof(r));
	r.op = LEDGER_EXPORT_INSERT;
	r.position = id;
	r.id = id;
	r.stream = stream;
	r.seq = seq;
	r.payload_json = payload;
	r.order_key = "";
	r.dedup_key = dedup;
	r.schema_version = 1;
	r.metadata_json = "{\"m\": \"1\"}";
	r.tags_json = tags;
	r.annotations_json = "{}";
	r.created_at_us = T0 + id * 1000;
	return r;
}

static LedgerExportRow
update(int64_t position, int64_t id, const char *stream, const char *tags, const char *annotations)
{
	LedgerExportRow r;

	memset(&r, 0, sizeof(r));
	r.op = LEDGER_EXPORT_UPDATE;
	r.position = position;
	r.id = id;
	r.stream = stream;
	r.tags_json = tags;
	r.annotations_json = annotations;
	r.has_updated_at = 1;
	r.updated_at_us = T0 + position * 1000;
	return r;
}

static LedgerExportRow
trim(int64_t position, int64_t upto, const char *stream)
{
	LedgerExportRow r;

	memset(&r, 0, sizeof(r));
	r.op = LEDGER_EXPORT_TRIM;
	r.position = position;
	r.id = upto;
	r.stream = stream;
	return r;
}

static const char *
kind_name(LedgerSinkErrorKind k)
{
	return k == LEDGER_SINK_DIVERGED ? "diverged" : k == LEDGER_SINK_MISSING ? "missing" : "transient";
}

/* apply and report: 0 ok, else the failure kind's name in *what */
static int
apply(const LedgerSinkOps *ops, void *st, const LedgerExportRow *rows, int n,
	  LedgerSinkFailure *f, char *err, size_t errlen)
{
	err[0] = '\0';
	f->kind = LEDGER_SINK_TRANSIENT;
	f->index = -1;
	return ops->apply(st, rows, n, f, err, errlen);
}

static int64_t
cursor_of(const LedgerSinkOps *ops, void *st)
{
	int64_t		c = -1;
	int			present = 0;
	char		err[512];

	if (ops->cursor(st, &c, &present, err, sizeof(err)) != 0)
		return -2;
	return present ? c : -1;
}

static int
cmd_bson(const char *json)
{
	bson_t		doc = BSON_INITIALIZER;
	char		err[512] = "";
	char	   *out;

	if (ledger_bson_append_json(&doc, "v", json, err, sizeof(err)) != 0)
	{
		printf("ERR %s\n", err);
		bson_destroy(&doc);
		return 0;
	}
	out = bson_as_canonical_extended_json(&doc, NULL);
	printf("%s\n", out);
	bson_free(out);
	bson_destroy(&doc);
	return 0;
}

static int
cmd_hosts(const char *target)
{
	LedgerSinkHost hosts[16];
	int			n;
	int			srv;
	int			i;
	char		err[512];

	if (ledger_mongo_target_hosts(target, hosts, 16, &n, &srv, err, sizeof(err)) != 0)
	{
		printf("ERR %s\n", err);
		return 0;
	}
	printf("srv=%d", srv);
	for (i = 0; i < n; i++)
		printf(" %s:%d%s", hosts[i].name, hosts[i].port, hosts[i].is_unix ? "[unix]" : "");
	printf("\n");
	return 0;
}

/* --- SQLite --------------------------------------------------------- */

static char *
sql1(const char *path, const char *sql)
{
	static char out[4096];
	sqlite3    *db;
	sqlite3_stmt *st;

	out[0] = '\0';
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
	{
		snprintf(out, sizeof(out), "(cannot open)");
		sqlite3_close(db);
		return out;
	}
	sqlite3_busy_timeout(db, 2000);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		snprintf(out, sizeof(out), "(error: %s)", sqlite3_errmsg(db));
	else
	{
		int			rc;

		while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		{
			int			c;

			if (out[0])
				strncat(out, ";", sizeof(out) - strlen(out) - 1);
			for (c = 0; c < sqlite3_column_count(st); c++)
			{
				const unsigned char *v = sqlite3_column_text(st, c);

				if (c > 0)
					strncat(out, "|", sizeof(out) - strlen(out) - 1);
				strncat(out, v ? (const char *) v : "NULL", sizeof(out) - strlen(out) - 1);
			}
		}
		if (rc != SQLITE_DONE)
			snprintf(out, sizeof(out), "(error: %s)", sqlite3_errmsg(db));
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return out;
}

static int
cmd_sqlite(const char *path)
{
	const LedgerSinkOps *ops = &ledger_sqlite_sink_ops;
	char		err[1024];
	char		other[4200];
	LedgerSinkFailure f;
	void	   *st;
	void	   *st2;
	int			rc;
	struct stat sb;
	LedgerExportRow b1[4];
	LedgerExportRow b2[3];

	unlink(path);
	err[0] = '\0';
	st = ops->open("s1", path, "*", "{\"file_mode\": \"0640\"}", err, sizeof(err));
	check(st != NULL, "sqlite: open creates the file (%s)", err);
	if (st == NULL)
		return 1;
	memset(&sb, 0, sizeof(sb));
	stat(path, &sb);
	check((sb.st_mode & 0777) == 0640, "sqlite: file_mode 0640 applied to the file (%o)",
		  (unsigned) (sb.st_mode & 0777));
	snprintf(other, sizeof(other), "%s-wal", path);
	memset(&sb, 0, sizeof(sb));
	stat(other, &sb);
	check((sb.st_mode & 0777) == 0640, "sqlite: and to its -wal (%o)",
		  (unsigned) (sb.st_mode & 0777));
	snprintf(other, sizeof(other), "%s-shm", path);
	memset(&sb, 0, sizeof(sb));
	stat(other, &sb);
	check((sb.st_mode & 0777) == 0640, "sqlite: and to its -shm (%o)",
		  (unsigned) (sb.st_mode & 0777));
	check(cursor_of(ops, st) == -1, "sqlite: a new file has no cursor");

	b1[0] = entry(1, "a", 1, "{\"x\": 1}", "k", "[]");
	b1[1] = entry(2, "a", 2, "[1, 2]", "", "[\"t\"]");
	b1[2] = entry(3, "b", 1, "\"s\"", "", "[]");
	b1[3] = update(4, 1, "a", "[\"new\"]", "{\"n\": \"v\"}");
	rc = apply(ops, st, b1, 4, &f, err, sizeof(err));
	check(rc == 0, "sqlite: a batch applies (%s)", err);
	check(cursor_of(ops, st) == 4, "sqlite: the cursor is the batch's last position");
	check(strcmp(sql1(path, "SELECT id, source_id, tags, annotations, updated_at IS NOT NULL FROM ledger_entries WHERE id = 1"),
				 "1|1|[\"new\"]|{\"n\":\"v\"}|1") == 0, "sqlite: the update reached the row (%s)",
		  sql1(path, "SELECT id, source_id, tags, annotations FROM ledger_entries WHERE id = 1"));

	/* the same batch again (a crash before the server recorded it) */
	rc = apply(ops, st, b1, 4, &f, err, sizeof(err));
	check(rc == 0, "sqlite: the same batch again is harmless (%s)", err);
	check(strcmp(sql1(path, "SELECT count(*) FROM ledger_entries"), "3") == 0, "sqlite: still 3 rows");

	/* dedup key reused after a trim: the trim goes first, in id order */
	b2[0] = trim(5, 1, "a");
	b2[1] = entry(6, "a", 3, "{\"again\": true}", "k", "[]");
	rc = apply(ops, st, b2, 2, &f, err, sizeof(err));
	check(rc == 0, "sqlite: trim then a reused dedup key (%s)", err);
	check(strcmp(sql1(path, "SELECT group_concat(id) FROM (SELECT id FROM ledger_entries WHERE stream = 'a' ORDER BY id)"), "2,6") == 0,
		  "sqlite: the trimmed row is gone and the new one is there");

	/* same id, other content: a divergence naming the entry */
	b2[0] = entry(6, "a", 3, "{\"again\": false}", "k", "[]");
	rc = apply(ops, st, b2, 1, &f, err, sizeof(err));
	check(rc != 0 && f.kind == LEDGER_SINK_DIVERGED && f.index == 0 &&
		  strstr(err, "entry 6") != NULL, "sqlite: a different row with the same id diverges (%s: %s)",
		  kind_name(f.kind), err);

	/* an update of a row the target lacks */
	b2[0] = update(7, 99, "a", "[]", "{}");
	rc = apply(ops, st, b2, 1, &f, err, sizeof(err));
	check(rc != 0 && f.kind == LEDGER_SINK_MISSING,
		  "sqlite: an update of a missing row says so (%s)", kind_name(f.kind));

	/* a second sink on the same file keeps its own cursor */
	st2 = ops->open("s2", path, "b*", "{\"file_mode\": \"0640\"}", err, sizeof(err));
	check(st2 != NULL && cursor_of(ops, st2) == -1, "sqlite: a second sink on the file has its own cursor");
	if (st2 != NULL)
	{
		int64_t		ids[LEDGER_SINK_SCAN_MAX];
		int			n = -1;

		rc = ops->scan(st2, 0, ids, &n, &f, err, sizeof(err));
		check(rc == 0 && n == 1 && ids[0] == 3,
			  "sqlite: scan sees the rows of its own streams only (%d)", n);
		b2[0] = entry(3, "b", 1, "\"s\"", "", "[]");
		rc = apply(ops, st2, b2, 1, &f, err, sizeof(err));
	check(rc == 0 && cursor_of(ops, st2) == 3 &&
			  cursor_of(ops, st) == 6, "sqlite: its writes leave the first cursor alone (%s)", err);
		ops->close(st2);
	}

	/* somebody else appends, the way the Go library does */
	sql1(path, "INSERT INTO ledger_entries (stream, payload) VALUES ('a', '{}')");
	{
		int64_t		ids[LEDGER_SINK_SCAN_MAX];
		int			n;

		rc = ops->scan(st, 6, ids, &n, &f, err, sizeof(err));
		check(rc != 0 && f.kind == LEDGER_SINK_DIVERGED &&
			  strstr(err, "no ledger sink wrote") != NULL, "sqlite: scan finds a foreign row (%s)", err);
	}
	b2[0] = entry(7, "a", 4, "{}", "", "[]");
	b2[1] = entry(8, "b", 2, "{}", "", "[]");
	rc = apply(ops, st, b2, 2, &f, err, sizeof(err));
	check(rc != 0 && f.kind == LEDGER_SINK_DIVERGED &&
		  strstr(err, "id 7") != NULL, "sqlite: a batch over a foreign row diverges and names it (%s)", err);
	check(cursor_of(ops, st) == 6, "sqlite: the failed batch left the cursor alone");
	sql1(path, "DELETE FROM ledger_entries WHERE source_id = ''");

	/* the file replaced under the sink */
	snprintf(other, sizeof(other), "%s.new", path);
	sql1(other, "CREATE TABLE x (a)");
	rename(other, path);
	b2[0] = entry(7, "a", 4, "{}", "", "[]");
	rc = apply(ops, st, b2, 1, &f, err, sizeof(err));
	check(rc != 0 && f.kind == LEDGER_SINK_DIVERGED &&
		  strstr(err, "replaced") != NULL, "sqlite: a replaced file diverges (%s)", err);
	/* and deleted */
	unlink(path);
	rc = apply(ops, st, b2, 1, &f, err, sizeof(err));
	check(rc != 0 && f.kind == LEDGER_SINK_DIVERGED &&
		  strstr(err, "gone") != NULL, "sqlite: a deleted file diverges (%s)", err);
	ops->close(st);

	/* options */
	check(ops->check(path, "{\"file_mode\": \"0777\"}", err, sizeof(err)) != 0, "sqlite: file_mode 0777 is refused");
	check(ops->check("relative.db", "{}", err, sizeof(err)) != 0, "sqlite: a relative path is refused");
	return failures ? 1 : 0;
}

/* --- MongoDB -------------------------------------------------------- */

static int64_t
mongo_count(const char *uri, const char *db, const char *coll, const char *filter_json)
{
	mongoc_client_t *c = mongoc_client_new(uri);
	mongoc_collection_t *col;
	bson_t	   *filter;
	int64_t		n;

	if (c == NULL)
		return -1;
	col = mongoc_client_get_collection(c, db, coll);
	filter = bson_new_from_json((const uint8_t *) filter_json, -1, NULL);
	n = mongoc_collection_count_documents(col, filter, NULL, NULL, NULL, NULL);
	bson_destroy(filter);
	mongoc_collection_destroy(col);
	mongoc_client_destroy(c);
	return n;
}

static void
mongo_insert_foreign(const char *uri, const char *db, const char *coll)
{
	mongoc_client_t *c = mongoc_client_new(uri);
	mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
	bson_t	   *doc = BCON_NEW("stream", "a", "payload", "{", "}");

	mongoc_collection_insert_one(col, doc, NULL, NULL, NULL);	/* driver _id */
	bson_destroy(doc);
	mongoc_collection_destroy(col);
	mongoc_client_destroy(c);
}

static int
cmd_mongo(const char *uri, const char *db)
{
	const LedgerSinkOps *ops = &ledger_mongo_sink_ops;
	char		opts[256];
	char		err[1024];
	LedgerSinkFailure f;
	LedgerExportRow b[4];
	void	   *st;
	void	   *st2;
	int			rc;

	snprintf(opts, sizeof(opts), "{\"database\": \"%s\"}", db);
	err[0] = '\0';
	st = ops->open("m1", uri, "*", opts, err, sizeof(err));
	check(st != NULL, "mongo: open (%s)", err);
	if (st == NULL)
		return 1;
	check(cursor_of(ops, st) == -1, "mongo: a new collection has no cursor");
	b[0] = entry(1, "a", 1, "{\"x\": 1, \"big\": 9007199254740993, \"f\": 2.5}", "k", "[]");
	b[1] = entry(2, "a", 2, "[1, \"two\"]", "", "[\"t\"]");
	b[2] = entry(3, "b", 1, "42", "", "[]");
	b[3] = update(4, 1, "a", "[\"new\"]", "{\"n\": \"v\"}");
	rc = apply(ops, st, b, 4, &f, err, sizeof(err));
	check(rc == 0, "mongo: a batch applies (%s)", err);
	check(cursor_of(ops, st) == 4, "mongo: the cursor is the batch's last position");
	check(mongo_count(uri, db, "ledger_entries", "{\"tags\": \"new\", \"annotations.n\": \"v\", \"source_id\": \"1\"}") == 1,
		  "mongo: the update reached the document");
	check(mongo_count(uri, db, "ledger_entries", "{\"payload.big\": {\"$numberLong\": \"9007199254740993\"}}") == 1,
		  "mongo: an int64 payload value is stored as int64");
	check(mongo_count(uri, db, "ledger_entries", "{\"payload.value\": 42, \"payload_scalar\": true}") == 1,
		  "mongo: a scalar payload is wrapped");
	rc = apply(ops, st, b, 4, &f, err, sizeof(err));
	check(rc == 0 &&
		  mongo_count(uri, db, "ledger_entries", "{}") == 3, "mongo: the same batch again is harmless (%s)", err);

	b[0] = trim(5, 1, "a");
	b[1] = entry(6, "a", 3, "{\"again\": true}", "k", "[]");
	rc = apply(ops, st, b, 2, &f, err, sizeof(err));
	check(rc == 0 &&
		  mongo_count(uri, db, "ledger_entries", "{\"stream\": \"a\"}") == 2,
		  "mongo: trim then a reused dedup key (%s)", err);
	b[0] = entry(6, "a", 3, "{\"again\": false}", "k", "[]");
	rc = apply(ops, st, b, 1, &f, err, sizeof(err));
	check(rc != 0 && f.kind == LEDGER_SINK_DIVERGED && f.index == 0 &&
		  strstr(err, "entry 6") != NULL, "mongo: a different document with the same _id diverges (%s)", err);
	b[0] = update(7, 99, "a", "[]", "{}");
	rc = apply(ops, st, b, 1, &f, err, sizeof(err));
	check(rc != 0 && f.kind == LEDGER_SINK_MISSING,
		  "mongo: an update of a missing document says so (%s)", kind_name(f.kind));

	/* a document the server refuses is a divergence naming the entry */
	b[0] = entry(8, "a", 4, "{\"$date\": \"x\"}", "", "[]");
	b[1] = entry(9, "a", 5, "{}", "", "[]");
	rc = apply(ops, st, b, 2, &f, err, sizeof(err));
	if (rc == 0)
		check(mongo_count(uri, db, "ledger_entries", "{\"source_id\": \"8\"}") == 1,
			  "mongo: {\"$date\": \"x\"} is stored as a plain field");
	else
		check(f.kind == LEDGER_SINK_DIVERGED && f.index == 0 && strstr(err, "entry 8") != NULL &&
			  cursor_of(ops, st) == 6 && mongo_count(uri, db, "ledger_entries", "{\"source_id\": \"9\"}") == 0,
			  "mongo: a server that refuses {\"$date\": \"x\"} stops the sink at entry 8 (%s)", err);

	/* a second sink on the collection keeps its own cursor */
	st2 = ops->open("m2", uri, "b*", opts, err, sizeof(err));
	check(st2 != NULL && cursor_of(ops, st2) == -1, "mongo: a second sink has its own cursor");
	if (st2 != NULL)
	{
		int64_t		ids[LEDGER_SINK_SCAN_MAX];
		int			n = -1;

		rc = ops->scan(st2, 0, ids, &n, &f, err, sizeof(err));
		check(rc == 0 && n == 1 && ids[0] == 3,
			  "mongo: scan sees the documents of its own streams only (%d, %s)", n, err);
		b[0] = entry(3, "b", 1, "42", "", "[]");
		rc = apply(ops, st2, b, 1, &f, err, sizeof(err));
	check(rc == 0 && cursor_of(ops, st2) == 3 &&
			  cursor_of(ops, st) == 6, "mongo: its writes leave the first cursor alone (%s)", err);
		ops->close(st2);
	}
	mongo_insert_foreign(uri, db, "ledger_entries");
	{
		int64_t		ids[LEDGER_SINK_SCAN_MAX];
		int			n;

		rc = ops->scan(st, 6, ids, &n, &f, err, sizeof(err));
		check(rc != 0 && f.kind == LEDGER_SINK_DIVERGED &&
			  strstr(err, "no ledger sink wrote") != NULL, "mongo: scan finds a foreign document (%s)", err);
	}
	ops->close(st);
	return failures ? 1 : 0;
}

static int
cmd_mongo_open(const char *uri, const char *options)
{
	char		err[1024] = "";
	double		t0 = now_ms();
	void	   *st = ledger_mongo_sink_ops.open("timed", uri, "*", options, err, sizeof(err));
	int64_t		c;
	int			present;

	if (st != NULL && ledger_mongo_sink_ops.cursor(st, &c, &present, err, sizeof(err)) != 0)
	{
		ledger_mongo_sink_ops.close(st);
		st = NULL;
	}
	if (st == NULL)
	{
		printf("ERR %.0f %s\n", now_ms() - t0, err);
		return 1;
	}
	ledger_mongo_sink_ops.close(st);
	printf("OK %.0f\n", now_ms() - t0);
	return 0;
}

static int
cmd_mongo_insert(const char *uri, const char *db, const char *coll, const char *json)
{
	bson_error_t error;
	bson_t	   *doc = bson_new_from_json((const uint8_t *) json, -1, &error);
	mongoc_client_t *c = mongoc_client_new(uri);
	mongoc_collection_t *col;
	int			ok;

	if (doc == NULL || c == NULL)
	{
		printf("ERR %s\n", doc == NULL ? error.message : "bad URI");
		return 1;
	}
	col = mongoc_client_get_collection(c, db, coll);
	ok = mongoc_collection_insert_one(col, doc, NULL, NULL, &error);
	printf(ok ? "OK\n" : "ERR %s\n", error.message);
	bson_destroy(doc);
	mongoc_collection_destroy(col);
	mongoc_client_destroy(c);
	return ok ? 0 : 1;
}

int
main(int argc, char **argv)
{
	int			rc = 2;

	mongoc_init();
	if (argc == 3 && strcmp(argv[1], "bson") == 0)
		rc = cmd_bson(argv[2]);
	else if (argc == 4 && strcmp(argv[1], "redact") == 0)
	{
		char	   *r = ledger_sink_redact_target(argv[2], argv[3]);

		printf("%s\n", r ? r : "(out of memory)");
		free(r);
		rc = 0;
	}
	else if (argc == 5 && strcmp(argv[1], "scrub") == 0)
	{
		ledger_sink_scrub_message(argv[2], argv[3], argv[4]);
		printf("%s\n", argv[4]);
		rc = 0;
	}
	else if (argc == 3 && strcmp(argv[1], "hosts") == 0)
		rc = cmd_hosts(argv[2]);
	else if (argc == 5 && strcmp(argv[1], "check") == 0)
	{
		char		err[1024] = "";
		const LedgerSinkOps *ops = strcmp(argv[2], "sqlite") == 0 ?
			&ledger_sqlite_sink_ops : &ledger_mongo_sink_ops;

		rc = ops->check(argv[3], argv[4], err, sizeof(err)) == 0 ? 0 : 1;
		printf(rc == 0 ? "OK\n" : "ERR %s\n", err);
	}
	else if (argc == 3 && strcmp(argv[1], "sqlite") == 0)
		rc = cmd_sqlite(argv[2]);
	else if (argc == 4 && strcmp(argv[1], "mongo") == 0)
		rc = cmd_mongo(argv[2], argv[3]);
	else if (argc == 6 && strcmp(argv[1], "mongo-insert") == 0)
		rc = cmd_mongo_insert(argv[2], argv[3], argv[4], argv[5]);
	else if (argc == 3 && strcmp(argv[1], "oid") == 0)
	{
		printf("%08x%016llx\n", 0, (unsigned long long) strtoll(argv[2], NULL, 10));
		rc = 0;
	}
	else if (argc == 4 && strcmp(argv[1], "mongo-open") == 0)
		rc = cmd_mongo_open(argv[2], argv[3]);
	else
		fprintf(stderr, "usage: see the header of test/sink_harness/harness.c\n");
	mongoc_cleanup();
	return rc;
}
