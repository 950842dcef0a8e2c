/*-------------------------------------------------------------------------
 *
 * src/sink_mongo.c
 *	  Export sink mirroring the log into a MongoDB collection laid out like
 *	  the store of github.com/rbaliyan/ledger (package mongodb), through
 *	  libmongoc.
 *
 * Document layout (field names and order of the Go library's bson tags):
 *
 *	_id             ObjectId, derived from the PostgreSQL id (below)
 *	stream          string
 *	payload         the payload by value (sink_bson.c); a scalar payload is
 *	                wrapped as {"value": <scalar>} because the library
 *	                decodes payload into a document, and the entry gets
 *	                payload_scalar: true
 *	order_key       string, always present ("" when unset)
 *	dedup_key       string, always present ("" when unset)
 *	schema_version  int32
 *	metadata        document of strings, left out when empty
 *	tags            array of strings, always present
 *	annotations     document of strings, left out when empty
 *	source_id       string, the PostgreSQL id in decimal
 *	created_at      date (milliseconds; microseconds are truncated)
 *	updated_at      date, left out when unset
 *	seq             int64 (not in the Go struct; its decoder ignores it)
 *
 * _id scheme: 4 zero bytes followed by the PostgreSQL id as an 8-byte
 * big-endian integer.  ObjectIds compare bytewise, so _id order is id
 * order, and the zero "timestamp" keeps these _ids below every
 * driver-generated ObjectId (ObjectId("000000010000000000000000") is the
 * bound): a document above it was written by somebody else.
 *
 * Cursor: a document of the library's cursor collection
 * "<collection>_cursors", _id 'ledger_sink:' || <sink name>, with
 * position (int64) and cursor (the position as a 24-digit hex ObjectId
 * string, the library's own cursor format), both moved with $max, so a
 * cursor never goes back and sinks sharing a collection never meet.
 * MongoDB has no transaction to tie the documents to the cursor, so every
 * item is idempotent and the cursor is written after them.
 *
 * Items go in one ordered bulk write (inserts, side-data updates and trim
 * deletions in id order).  A duplicate _id is a batch sent again: the
 * stored document must match ours in every immutable field, and then only
 * its side data is refreshed; anything else, and any document the server
 * refuses, is a divergence naming the entry id.
 *
 * Time-outs: server selection and connect time-outs are capped at 3 s and
 * the socket time-out at 30 s (MONGO_SINK_*_CAP_MS), whatever the URI asks
 * for, so no call blocks for long (the socket cap is the larger one because
 * a server without index range scans, FerretDB 1.x, answers the opening
 * checks with collection scans); the driver (export.c) also runs every call
 * on a helper thread, so the worker answers SIGTERM at once in any case.
 *
 * Documents somebody else wrote (driver-made _ids) are looked for when the
 * sink is opened (scan()), not with every batch: on such a server each look
 * is a collection scan.
 *
 * Plain C, malloc/free, no server headers: see sink.h.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <mongoc/mongoc.h>

#include "sink.h"

#define MONGO_SINK_DEFAULT_COLLECTION	"ledger_entries"
#define MONGO_SINK_SERVER_SELECTION_MS	2000
#define MONGO_SINK_SERVER_SELECTION_CAP_MS 3000
#define MONGO_SINK_CONNECT_MS			2000
#define MONGO_SINK_CONNECT_CAP_MS		3000
#define MONGO_SINK_SOCKET_CAP_MS		30000
#define MONGO_SINK_APPNAME				"ledger-sink"
#define MONGO_SINK_CURSOR_PREFIX		"ledger_sink:"
#define MONGO_DUPLICATE_KEY				11000

typedef struct MongoSink
{
	mongoc_client_t *client;
	mongoc_collection_t *coll;
	mongoc_collection_t *cursors;
	char	   *sink_name;
	char	   *target;			/* kept to scrub driver messages */
	char	   *redacted;		/* for messages */
	char	   *database;
	char	   *collection;
	char	   *cursor_id;
	char	   *stream_lo;		/* stream filter: [lo, hi), or exact lo */
	char	   *stream_hi;		/* NULL: no upper bound */
	int			stream_exact;
	int			all_streams;
} MongoSink;

typedef struct MongoOptions
{
	char	   *database;		/* from options, else from the URI */
	char	   *collection;
} MongoOptions;

static void
fail_as(LedgerSinkFailure *failure, LedgerSinkErrorKind kind, int index)
{
	if (failure != NULL)
	{
		failure->kind = kind;
		failure->index = index;
	}
}

/* MongoDB database name rules (no "/\. \"$", at most 63 bytes). */
static int
valid_database(const char *s)
{
	size_t		len = strlen(s);

	if (len == 0 || len > 63)
		return 0;
	return strpbrk(s, "/\\. \"$") == NULL;
}

/* The Go library's ValidateName: [A-Za-z_][A-Za-z0-9_]*; we cap the length. */
static int
valid_collection(const char *s)
{
	size_t		i;

	if (!(isalpha((unsigned char) s[0]) || s[0] == '_'))
		return 0;
	for (i = 1; s[i] != '\0'; i++)
	{
		if (i >= 100)
			return 0;
		if (!(isalnum((unsigned char) s[i]) || s[i] == '_'))
			return 0;
	}
	return 1;
}

static void
free_options(MongoOptions *o)
{
	free(o->database);
	free(o->collection);
	o->database = NULL;
	o->collection = NULL;
}

/*
 * Parse the URI and options_json.  On success *urip (if not NULL) is the
 * parsed URI and o is filled in.  Messages show the target redacted and
 * the driver's words scrubbed.
 */
static int
parse_target(const char *target, const char *options_json, mongoc_uri_t **urip,
			 MongoOptions *o, char *err, size_t errlen)
{
	bson_error_t error;
	mongoc_uri_t *uri = NULL;
	bson_t		wrap = BSON_INITIALIZER;
	bson_iter_t iter;
	bson_iter_t child;
	char	   *redacted = NULL;
	const char *uri_db;
	char		msg[256];
	int			result = -1;

	memset(o, 0, sizeof(*o));
	if (urip != NULL)
		*urip = NULL;
	mongoc_init();

	if (target == NULL || target[0] == '\0')
	{
		sink_set_err(err, errlen, "mongodb sink: target must be a MongoDB URI (mongodb://...), got an empty string");
		goto done;
	}
	redacted = ledger_sink_redact_target("mongodb", target);
	if (redacted == NULL)
	{
		sink_set_err(err, errlen, "mongodb sink: out of memory");
		goto done;
	}
	uri = mongoc_uri_new_with_error(target, &error);
	if (uri == NULL)
	{
		ledger_sink_scrub_message("mongodb", target, error.message);
		sink_set_err(err, errlen, "mongodb sink: invalid MongoDB URI \"%s\": %s", redacted, error.message);
		goto done;
	}

	/* options are data too: read them without Extended JSON */
	if (ledger_bson_append_json(&wrap, "o", options_json && options_json[0] ? options_json : "{}",
								msg, sizeof(msg)) != 0 ||
		!bson_iter_init_find(&iter, &wrap, "o") || !BSON_ITER_HOLDS_DOCUMENT(&iter))
	{
		sink_set_err(err, errlen, "mongodb sink: options must be a JSON object");
		goto done;
	}
	bson_iter_recurse(&iter, &child);
	while (bson_iter_next(&child))
	{
		const char *key = bson_iter_key(&child);
		char	  **dest;

		if (strcmp(key, "database") == 0)
			dest = &o->database;
		else if (strcmp(key, "collection") == 0)
			dest = &o->collection;
		else
		{
			sink_set_err(err, errlen,
					"mongodb sink: unknown option \"%.64s\" (options are \"database\" and \"collection\")",
					key);
			goto done;
		}
		if (!BSON_ITER_HOLDS_UTF8(&child))
		{
			sink_set_err(err, errlen, "mongodb sink: option \"%s\" must be a string", key);
			goto done;
		}
		free(*dest);
		if ((*dest = sink_strdup(bson_iter_utf8(&child, NULL))) == NULL)
		{
			sink_set_err(err, errlen, "mongodb sink: out of memory");
			goto done;
		}
	}

	uri_db = mongoc_uri_get_database(uri);
	if (o->database == NULL)
	{
		if (uri_db == NULL || uri_db[0] == '\0')
		{
			sink_set_err(err, errlen,
					"mongodb sink: no database: URI \"%s\" names none and option \"database\" is not set",
					redacted);
			goto done;
		}
		if ((o->database = sink_strdup(uri_db)) == NULL)
		{
			sink_set_err(err, errlen, "mongodb sink: out of memory");
			goto done;
		}
	}
	if (!valid_database(o->database))
	{
		sink_set_err(err, errlen,
				"mongodb sink: database name \"%.64s\" is invalid (1 to 63 bytes, none of / \\ . space \" $)",
				o->database);
		goto done;
	}
	if (o->collection == NULL &&
		(o->collection = sink_strdup(MONGO_SINK_DEFAULT_COLLECTION)) == NULL)
	{
		sink_set_err(err, errlen, "mongodb sink: out of memory");
		goto done;
	}
	if (!valid_collection(o->collection))
	{
		sink_set_err(err, errlen,
				"mongodb sink: option \"collection\" value \"%.64s\" is not a valid collection name (letters, digits and _, not starting with a digit)",
				o->collection);
		goto done;
	}
	result = 0;
	if (urip != NULL)
	{
		*urip = uri;
		uri = NULL;
	}

done:
	if (result != 0)
		free_options(o);
	if (uri != NULL)
		mongoc_uri_destroy(uri);
	bson_destroy(&wrap);
	free(redacted);
	return result;
}

static int
mongo_sink_check(const char *target, const char *options_json, char *err, size_t errlen)
{
	MongoOptions o;

	if (parse_target(target, options_json, NULL, &o, err, errlen) != 0)
		return -1;
	free_options(&o);
	return 0;
}

int
ledger_mongo_target_hosts(const char *target, LedgerSinkHost *hosts, int max, int *n,
						  int *is_srv, char *err, size_t errlen)
{
	bson_error_t error;
	mongoc_uri_t *uri;
	const mongoc_host_list_t *h;

	*n = 0;
	*is_srv = 0;
	mongoc_init();
	uri = mongoc_uri_new_with_error(target, &error);
	if (uri == NULL)
	{
		char	   *redacted = ledger_sink_redact_target("mongodb", target);

		ledger_sink_scrub_message("mongodb", target, error.message);
		sink_set_err(err, errlen, "invalid MongoDB URI \"%s\": %s", redacted ? redacted : "", error.message);
		free(redacted);
		return -1;
	}
	*is_srv = mongoc_uri_get_srv_hostname(uri) != NULL;
	for (h = mongoc_uri_get_hosts(uri); h != NULL && *n < max; h = h->next)
	{
		LedgerSinkHost *out = &hosts[(*n)++];

		snprintf(out->name, sizeof(out->name), "%s", h->host);
		out->port = h->port;
		out->is_unix = h->family == AF_UNIX;
	}
	mongoc_uri_destroy(uri);
	return 0;
}

/* Error from the driver: our words around the driver's, scrubbed. */
static void
driver_err(MongoSink *s, char *err, size_t errlen, const char *what, const char *msg)
{
	char		clean[1024];

	sink_set_err(clean, sizeof(clean), "%s", msg ? msg : "");
	ledger_sink_scrub_message("mongodb", s->target, clean);
	sink_set_err(err, errlen, "mongodb sink \"%s\": %s on \"%s\" (database \"%s\", collection \"%s\"): %s",
			s->sink_name, what, s->redacted, s->database, s->collection, clean);
}

static void
mongo_sink_close(void *state)
{
	MongoSink  *s = state;

	if (s == NULL)
		return;
	if (s->coll != NULL)
		mongoc_collection_destroy(s->coll);
	if (s->cursors != NULL)
		mongoc_collection_destroy(s->cursors);
	if (s->client != NULL)
		mongoc_client_destroy(s->client);
	free(s->sink_name);
	if (s->target != NULL)
	{
		memset(s->target, 0, strlen(s->target));
		free(s->target);
	}
	free(s->redacted);
	free(s->database);
	free(s->collection);
	free(s->cursor_id);
	free(s->stream_lo);
	free(s->stream_hi);
	free(s);
}

static void
append_index(bson_t *indexes, int i, const char *name, const char *const *fields,
			 int unique, int sparse, int partial_dedup)
{
	char		keybuf[16];
	const char *key;
	bson_t		idx;
	bson_t		keys;
	int			f;

	bson_uint32_to_string((uint32_t) i, &key, keybuf, sizeof(keybuf));
	bson_append_document_begin(indexes, key, -1, &idx);
	bson_append_document_begin(&idx, "key", -1, &keys);
	for (f = 0; fields[f] != NULL; f++)
		bson_append_int32(&keys, fields[f], -1, 1);
	bson_append_document_end(&idx, &keys);
	bson_append_utf8(&idx, "name", -1, name, -1);
	if (unique)
		bson_append_bool(&idx, "unique", -1, true);
	if (sparse)
		bson_append_bool(&idx, "sparse", -1, true);
	if (partial_dedup)
	{
		bson_t		pfe;
		bson_t		gt;

		bson_append_document_begin(&idx, "partialFilterExpression", -1, &pfe);
		bson_append_document_begin(&pfe, "dedup_key", -1, &gt);
		bson_append_utf8(&gt, "$gt", -1, "", 0);
		bson_append_document_end(&pfe, &gt);
		bson_append_document_end(&idx, &pfe);
	}
	bson_append_document_end(indexes, &idx);
}

/* createIndexes for one index; 0 ok, 1 the server lacks an option, -1 error */
static int
create_index(MongoSink *s, const char *name, const char *const *fields, int unique,
			 int sparse, int partial_dedup, char *err, size_t errlen)
{
	bson_t		cmd = BSON_INITIALIZER;
	bson_t		indexes;
	bson_t		reply;
	bson_error_t error;
	bool		ok;

	bson_append_utf8(&cmd, "createIndexes", -1, s->collection, -1);
	bson_append_array_begin(&cmd, "indexes", -1, &indexes);
	append_index(&indexes, 0, name, fields, unique, sparse, partial_dedup);
	bson_append_array_end(&cmd, &indexes);
	ok = mongoc_collection_write_command_with_opts(s->coll, &cmd, NULL, &reply, &error);
	bson_destroy(&cmd);
	bson_destroy(&reply);
	if (ok)
		return 0;
	if (strstr(error.message, "not implemented") != NULL ||
		strstr(error.message, "not supported") != NULL)
		return 1;
	driver_err(s, err, errlen, "cannot create indexes", error.message);
	return -1;
}

/*
 * The Go library's indexes, with the names its driver derives.  A server
 * without partial or sparse unique indexes (FerretDB 1.x) gets the same
 * keys without the uniqueness: the log enforces it, the mirror does not
 * have to.
 */
static int
create_indexes(MongoSink *s, char *err, size_t errlen)
{
	static const char *const stream_id[] = {"stream", "_id", NULL};
	static const char *const stream_order_id[] = {"stream", "order_key", "_id", NULL};
	static const char *const stream_dedup[] = {"stream", "dedup_key", NULL};
	static const char *const stream[] = {"stream", NULL};
	static const char *const source_id[] = {"source_id", NULL};
	static const char *const stream_tags_id[] = {"stream", "tags", "_id", NULL};
	int			rc;

	if (create_index(s, "stream_1__id_1", stream_id, 0, 0, 0, err, errlen) != 0 ||
		create_index(s, "stream_1_order_key_1__id_1", stream_order_id, 0, 0, 0, err, errlen) != 0 ||
		create_index(s, "stream_1", stream, 0, 0, 0, err, errlen) != 0 ||
		create_index(s, "stream_1_tags_1__id_1", stream_tags_id, 0, 0, 0, err, errlen) != 0)
		return -1;
	rc = create_index(s, "stream_1_dedup_key_1", stream_dedup, 1, 0, 1, err, errlen);
	if (rc > 0)
		rc = create_index(s, "stream_1_dedup_key_1", stream_dedup, 0, 0, 0, err, errlen);
	if (rc != 0)
		return -1;
	rc = create_index(s, "source_id_1", source_id, 1, 1, 0, err, errlen);
	if (rc > 0)
		rc = create_index(s, "source_id_1", source_id, 0, 0, 0, err, errlen);
	return rc != 0 ? -1 : 0;
}

/* Lower a time-out option to cap (0 means "no limit" to the driver). */
static void
cap_timeout(mongoc_uri_t *uri, const char *option, int32_t fallback, int32_t cap)
{
	int32_t		v = mongoc_uri_get_option_as_int32(uri, option, fallback);

	if (v <= 0 || v > cap)
		v = cap;
	mongoc_uri_set_option_as_int32(uri, option, v);
}

/* The stream filter of the sink's pattern: exact name, or a byte range. */
static int
set_stream_filter(MongoSink *s, const char *streams)
{
	size_t		len = strlen(streams);

	if (strcmp(streams, "*") == 0 || len == 0)
	{
		s->all_streams = 1;
		return 0;
	}
	if (streams[len - 1] != '*')
	{
		s->stream_exact = 1;
		s->stream_lo = sink_strdup(streams);
		return s->stream_lo ? 0 : -1;
	}
	s->stream_lo = sink_strdup(streams);
	if (s->stream_lo == NULL)
		return -1;
	s->stream_lo[len - 1] = '\0';
	/* the smallest string above every one starting with the prefix */
	s->stream_hi = sink_strdup(s->stream_lo);
	if (s->stream_hi == NULL)
		return -1;
	for (len = strlen(s->stream_hi); len > 0; len--)
	{
		unsigned char *c = (unsigned char *) &s->stream_hi[len - 1];

		if (*c < 0xFF)
		{
			(*c)++;
			s->stream_hi[len] = '\0';
			return 0;
		}
	}
	free(s->stream_hi);
	s->stream_hi = NULL;
	return 0;
}

static void
append_stream_filter(MongoSink *s, bson_t *filter)
{
	bson_t		range;

	if (s->all_streams)
		return;
	if (s->stream_exact)
	{
		bson_append_utf8(filter, "stream", -1, s->stream_lo, -1);
		return;
	}
	bson_append_document_begin(filter, "stream", -1, &range);
	bson_append_utf8(&range, "$gte", -1, s->stream_lo, -1);
	if (s->stream_hi != NULL)
		bson_append_utf8(&range, "$lt", -1, s->stream_hi, -1);
	bson_append_document_end(filter, &range);
}

static void *
mongo_sink_open(const char *sink_name, const char *target, const char *streams,
				const char *options_json, char *err, size_t errlen)
{
	MongoSink  *s;
	MongoOptions o;
	mongoc_uri_t *uri = NULL;
	bson_error_t error;
	char	   *cursors_name;

	if (sink_name == NULL)
		sink_name = "";
	if (streams == NULL)
		streams = "*";
	if (parse_target(target, options_json, &uri, &o, err, errlen) != 0)
		return NULL;

	s = calloc(1, sizeof(MongoSink));
	if (s == NULL)
	{
		sink_set_err(err, errlen, "mongodb sink \"%s\": out of memory", sink_name);
		mongoc_uri_destroy(uri);
		free_options(&o);
		return NULL;
	}
	s->database = o.database;
	s->collection = o.collection;
	s->sink_name = sink_strdup(sink_name);
	s->target = sink_strdup(target);
	s->redacted = ledger_sink_redact_target("mongodb", target);
	s->cursor_id = malloc(strlen(MONGO_SINK_CURSOR_PREFIX) + strlen(sink_name) + 1);
	if (s->sink_name == NULL || s->target == NULL || s->redacted == NULL ||
		s->cursor_id == NULL || set_stream_filter(s, streams) != 0)
	{
		sink_set_err(err, errlen, "mongodb sink \"%s\": out of memory", sink_name);
		mongoc_uri_destroy(uri);
		mongo_sink_close(s);
		return NULL;
	}
	strcpy(s->cursor_id, MONGO_SINK_CURSOR_PREFIX);
	strcat(s->cursor_id, sink_name);

	cap_timeout(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, MONGO_SINK_SERVER_SELECTION_MS,
				MONGO_SINK_SERVER_SELECTION_CAP_MS);
	cap_timeout(uri, MONGOC_URI_CONNECTTIMEOUTMS, MONGO_SINK_CONNECT_MS, MONGO_SINK_CONNECT_CAP_MS);
	cap_timeout(uri, MONGOC_URI_SOCKETTIMEOUTMS, MONGO_SINK_SOCKET_CAP_MS, MONGO_SINK_SOCKET_CAP_MS);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_APPNAME))
		mongoc_uri_set_appname(uri, MONGO_SINK_APPNAME);

	s->client = mongoc_client_new_from_uri_with_error(uri, &error);
	mongoc_uri_destroy(uri);
	if (s->client == NULL)
	{
		driver_err(s, err, errlen, "cannot create a client", error.message);
		mongo_sink_close(s);
		return NULL;
	}
	mongoc_client_set_error_api(s->client, MONGOC_ERROR_API_VERSION_2);
	s->coll = mongoc_client_get_collection(s->client, s->database, s->collection);
	cursors_name = malloc(strlen(s->collection) + sizeof("_cursors"));
	if (cursors_name == NULL)
	{
		sink_set_err(err, errlen, "mongodb sink \"%s\": out of memory", sink_name);
		mongo_sink_close(s);
		return NULL;
	}
	strcpy(cursors_name, s->collection);
	strcat(cursors_name, "_cursors");
	s->cursors = mongoc_client_get_collection(s->client, s->database, cursors_name);
	free(cursors_name);

	if (create_indexes(s, err, errlen) != 0)
	{
		mongo_sink_close(s);
		return NULL;
	}
	return s;
}

/* ObjectId for a PostgreSQL id: 4 zero bytes + 8-byte big-endian id. */
static void
oid_from_id(int64_t id, bson_oid_t *oid)
{
	uint64_t	v = (uint64_t) id;
	int			i;

	memset(oid->bytes, 0, 4);
	for (i = 0; i < 8; i++)
		oid->bytes[11 - i] = (uint8_t) (v >> (8 * i));
}

static int64_t
id_from_oid(const bson_oid_t *oid)
{
	uint64_t	v = 0;
	int			i;

	for (i = 4; i < 12; i++)
		v = (v << 8) | oid->bytes[i];
	return (int64_t) v;
}

/* The bound above every _id of ours: ObjectId("000000010000000000000000"). */
static void
oid_upper_bound(bson_oid_t *oid)
{
	memset(oid->bytes, 0, 12);
	oid->bytes[3] = 1;
}

static int
mongo_sink_cursor(void *state, int64_t *cursor, int *present, char *err, size_t errlen)
{
	MongoSink  *s = state;
	bson_t	   *filter = BCON_NEW("_id", BCON_UTF8(s->cursor_id));
	bson_t	   *opts = BCON_NEW("limit", BCON_INT64(1));
	mongoc_cursor_t *c;
	const bson_t *doc;
	bson_error_t error;
	bson_iter_t it;
	int			result = 0;

	*cursor = 0;
	*present = 0;
	c = mongoc_collection_find_with_opts(s->cursors, filter, opts, NULL);
	if (mongoc_cursor_next(c, &doc))
	{
		if (bson_iter_init_find(&it, doc, "position") &&
			(BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_INT32(&it)) &&
			bson_iter_as_int64(&it) >= 0)
		{
			*cursor = bson_iter_as_int64(&it);
			*present = 1;
		}
		else
		{
			driver_err(s, err, errlen, "cannot read the cursor",
					   "the cursor document has no integer field \"position\"");
			result = -1;
		}
	}
	if (result == 0 && mongoc_cursor_error(c, &error))
	{
		driver_err(s, err, errlen, "cannot read the cursor", error.message);
		result = -1;
	}
	mongoc_cursor_destroy(c);
	bson_destroy(opts);
	bson_destroy(filter);
	return result;
}

static int
mongo_sink_scan(void *state, int64_t after, int64_t *ids, int *n,
				LedgerSinkFailure *failure, char *err, size_t errlen)
{
	MongoSink  *s = state;
	bson_oid_t	lo;
	bson_oid_t	bound;
	bson_t		filter = BSON_INITIALIZER;
	bson_t		range;
	bson_t	   *opts;
	mongoc_cursor_t *c;
	const bson_t *doc;
	bson_error_t error;
	bson_iter_t it;
	int			result = 0;

	*n = 0;
	oid_upper_bound(&bound);

	/* a document with a driver-made _id: somebody else writes here */
	bson_append_document_begin(&filter, "_id", -1, &range);
	bson_append_oid(&range, "$gte", -1, &bound);
	bson_append_document_end(&filter, &range);
	opts = BCON_NEW("limit", BCON_INT64(1), "projection", "{", "_id", BCON_INT32(1), "}");
	c = mongoc_collection_find_with_opts(s->coll, &filter, opts, NULL);
	if (mongoc_cursor_next(c, &doc))
	{
		char		hex[25] = "";

		if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it))
			bson_oid_to_string(bson_iter_oid(&it), hex);
		sink_set_err(err, errlen,
				"mongodb sink \"%s\": collection \"%s\" of \"%s\" holds a document (_id ObjectId(\"%s\")) that no ledger sink wrote; somebody else writes to it",
				s->sink_name, s->collection, s->redacted, hex);
		fail_as(failure, LEDGER_SINK_DIVERGED, -1);
		result = -1;
	}
	else if (mongoc_cursor_error(c, &error))
	{
		driver_err(s, err, errlen, "cannot read", error.message);
		fail_as(failure, LEDGER_SINK_TRANSIENT, -1);
		result = -1;
	}
	mongoc_cursor_destroy(c);
	bson_destroy(opts);
	bson_destroy(&filter);
	if (result != 0)
		return result;

	/* our documents above after, in the sink's streams */
	oid_from_id(after, &lo);
	bson_init(&filter);
	bson_append_document_begin(&filter, "_id", -1, &range);
	bson_append_oid(&range, "$gt", -1, &lo);
	bson_append_oid(&range, "$lt", -1, &bound);
	bson_append_document_end(&filter, &range);
	append_stream_filter(s, &filter);
	opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}",
					"limit", BCON_INT64(LEDGER_SINK_SCAN_MAX),
					"projection", "{", "_id", BCON_INT32(1), "}");
	c = mongoc_collection_find_with_opts(s->coll, &filter, opts, NULL);
	while (*n < LEDGER_SINK_SCAN_MAX && mongoc_cursor_next(c, &doc))
		if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it))
			ids[(*n)++] = id_from_oid(bson_iter_oid(&it));
	if (mongoc_cursor_error(c, &error))
	{
		driver_err(s, err, errlen, "cannot read", error.message);
		fail_as(failure, LEDGER_SINK_TRANSIENT, -1);
		result = -1;
	}
	mongoc_cursor_destroy(c);
	bson_destroy(opts);
	bson_destroy(&filter);
	return result;
}

/*
 * Append a JSON object of strings as a document (left out when empty), or
 * a JSON array of strings as an array (always).
 */
static int
append_strings(bson_t *doc, const char *field, const char *json, int is_array,
			   char *msg, size_t msglen)
{
	bson_t		wrap = BSON_INITIALIZER;
	bson_iter_t it;
	bson_iter_t child;
	int			n = 0;

	if (json == NULL || json[0] == '\0')
		json = is_array ? "[]" : "{}";
	if (ledger_bson_append_json(&wrap, field, json, msg, msglen) != 0)
	{
		bson_destroy(&wrap);
		return -1;
	}
	if (!bson_iter_init_find(&it, &wrap, field) ||
		(is_array ? !BSON_ITER_HOLDS_ARRAY(&it) : !BSON_ITER_HOLDS_DOCUMENT(&it)))
	{
		sink_set_err(msg, msglen, "%s is not a JSON %s", field, is_array ? "array" : "object");
		bson_destroy(&wrap);
		return -1;
	}
	bson_iter_recurse(&it, &child);
	while (bson_iter_next(&child))
	{
		if (!BSON_ITER_HOLDS_UTF8(&child))
		{
			sink_set_err(msg, msglen, "%s member \"%.64s\" is not a string", field, bson_iter_key(&child));
			bson_destroy(&wrap);
			return -1;
		}
		n++;
	}
	if (is_array || n > 0)
		bson_append_iter(doc, field, -1, &it);
	bson_destroy(&wrap);
	return 0;
}

static int64_t
us_to_ms(int64_t us)
{
	return us >= 0 ? us / 1000 : -((-us + 999) / 1000);
}

/* The whole document of an INSERT item, into doc (initialized by the caller). */
static int
build_document(const LedgerExportRow *r, bson_t *doc, char *msg, size_t msglen)
{
	bson_oid_t	oid;
	bson_t		wrap = BSON_INITIALIZER;
	bson_iter_t it;
	char		idtxt[24];
	int			scalar;

	if (ledger_bson_append_json(&wrap, "payload", r->payload_json, msg, msglen) != 0 ||
		!bson_iter_init_find(&it, &wrap, "payload"))
	{
		bson_destroy(&wrap);
		return -1;
	}
	scalar = !BSON_ITER_HOLDS_DOCUMENT(&it) && !BSON_ITER_HOLDS_ARRAY(&it);

	oid_from_id(r->id, &oid);
	bson_append_oid(doc, "_id", 3, &oid);
	bson_append_utf8(doc, "stream", 6, r->stream ? r->stream : "", -1);
	if (scalar)
	{
		bson_t		value;

		bson_append_document_begin(doc, "payload", 7, &value);
		bson_append_iter(&value, "value", 5, &it);
		bson_append_document_end(doc, &value);
	}
	else
		bson_append_iter(doc, "payload", 7, &it);
	bson_destroy(&wrap);

	bson_append_utf8(doc, "order_key", 9, r->order_key ? r->order_key : "", -1);
	bson_append_utf8(doc, "dedup_key", 9, r->dedup_key ? r->dedup_key : "", -1);
	bson_append_int32(doc, "schema_version", 14, r->schema_version);
	if (append_strings(doc, "metadata", r->metadata_json, 0, msg, msglen) != 0 ||
		append_strings(doc, "tags", r->tags_json, 1, msg, msglen) != 0 ||
		append_strings(doc, "annotations", r->annotations_json, 0, msg, msglen) != 0)
		return -1;
	snprintf(idtxt, sizeof(idtxt), "%" PRId64, r->id);
	bson_append_utf8(doc, "source_id", 9, idtxt, -1);
	bson_append_date_time(doc, "created_at", 10, us_to_ms(r->created_at_us));
	if (r->has_updated_at)
		bson_append_date_time(doc, "updated_at", 10, us_to_ms(r->updated_at_us));
	bson_append_int64(doc, "seq", 3, r->seq);
	if (scalar)
		bson_append_bool(doc, "payload_scalar", 14, true);
	if (bson_has_field(doc, "payload") && doc->len > BSON_MAX_SIZE)
	{
		sink_set_err(msg, msglen, "the document would exceed the BSON size limit");
		return -1;
	}
	return 0;
}

/* {$set: {tags, [annotations], [updated_at]}, $unset: {the others}} */
static int
build_side_data_update(const LedgerExportRow *r, bson_t *update, char *msg, size_t msglen)
{
	bson_t		set;
	bson_t		unset;
	bson_t		tmp = BSON_INITIALIZER;
	int			has_annotations;

	if (append_strings(&tmp, "annotations", r->annotations_json, 0, msg, msglen) != 0)
	{
		bson_destroy(&tmp);
		return -1;
	}
	has_annotations = bson_has_field(&tmp, "annotations");
	bson_append_document_begin(update, "$set", 4, &set);
	if (append_strings(&set, "tags", r->tags_json, 1, msg, msglen) != 0)
	{
		bson_destroy(&tmp);
		return -1;
	}
	if (has_annotations)
	{
		bson_iter_t it;

		bson_iter_init_find(&it, &tmp, "annotations");
		bson_append_iter(&set, "annotations", 11, &it);
	}
	if (r->has_updated_at)
		bson_append_date_time(&set, "updated_at", 10, us_to_ms(r->updated_at_us));
	bson_append_document_end(update, &set);
	bson_destroy(&tmp);
	if (!has_annotations || !r->has_updated_at)
	{
		bson_append_document_begin(update, "$unset", 6, &unset);
		if (!has_annotations)
			bson_append_utf8(&unset, "annotations", 11, "", 0);
		if (!r->has_updated_at)
			bson_append_utf8(&unset, "updated_at", 10, "", 0);
		bson_append_document_end(update, &unset);
	}
	return 0;
}

/* {_id: oid(id), source_id: "id"} */
static void
entry_selector(int64_t id, bson_t *selector)
{
	bson_oid_t	oid;
	char		idtxt[24];

	oid_from_id(id, &oid);
	snprintf(idtxt, sizeof(idtxt), "%" PRId64, id);
	bson_append_oid(selector, "_id", 3, &oid);
	bson_append_utf8(selector, "source_id", 9, idtxt, -1);
}

/* Same type and bytes, or both absent? */
static int
same_field(const bson_t *a, const bson_t *b, const char *key)
{
	bson_iter_t ia;
	bson_iter_t ib;
	int			ha = bson_iter_init_find(&ia, a, key);
	int			hb = bson_iter_init_find(&ib, b, key);
	const bson_value_t *va;
	const bson_value_t *vb;

	if (!ha || !hb)
		return ha == hb;
	va = bson_iter_value(&ia);
	vb = bson_iter_value(&ib);
	if (va->value_type != vb->value_type)
		return 0;
	switch (va->value_type)
	{
		case BSON_TYPE_UTF8:
			return va->value.v_utf8.len == vb->value.v_utf8.len &&
				memcmp(va->value.v_utf8.str, vb->value.v_utf8.str, va->value.v_utf8.len) == 0;
		case BSON_TYPE_DOCUMENT:
		case BSON_TYPE_ARRAY:
			return va->value.v_doc.data_len == vb->value.v_doc.data_len &&
				memcmp(va->value.v_doc.data, vb->value.v_doc.data, va->value.v_doc.data_len) == 0;
		case BSON_TYPE_INT32:
			return va->value.v_int32 == vb->value.v_int32;
		case BSON_TYPE_INT64:
			return va->value.v_int64 == vb->value.v_int64;
		case BSON_TYPE_DATE_TIME:
			return va->value.v_datetime == vb->value.v_datetime;
		case BSON_TYPE_BOOL:
			return va->value.v_bool == vb->value.v_bool;
		default:
			return 0;
	}
}

/*
 * An insert met a duplicate key: is the stored document this very entry
 * (then refresh its side data), or another one (a divergence)?
 */
static int
resolve_duplicate(MongoSink *s, const LedgerExportRow *r, char *err, size_t errlen,
				  LedgerSinkErrorKind *kind)
{
	static const char *const immutable[] = {
		"stream", "payload", "order_key", "dedup_key", "schema_version", "metadata",
		"source_id", "created_at", "seq", "payload_scalar", NULL
	};
	bson_t		ours = BSON_INITIALIZER;
	bson_t		filter = BSON_INITIALIZER;
	bson_t	   *opts = BCON_NEW("limit", BCON_INT64(1));
	mongoc_cursor_t *c;
	const bson_t *theirs;
	bson_error_t error;
	bson_oid_t	oid;
	char		msg[512];
	int			result = -1;
	int			i;

	*kind = LEDGER_SINK_DIVERGED;
	if (build_document(r, &ours, msg, sizeof(msg)) != 0)
	{
		sink_set_err(err, errlen, "mongodb sink \"%s\": entry %" PRId64 ": %s", s->sink_name, r->id, msg);
		goto done;
	}
	oid_from_id(r->id, &oid);
	bson_append_oid(&filter, "_id", 3, &oid);
	c = mongoc_collection_find_with_opts(s->coll, &filter, opts, NULL);
	if (!mongoc_cursor_next(c, &theirs))
	{
		if (mongoc_cursor_error(c, &error))
		{
			driver_err(s, err, errlen, "cannot read", error.message);
			*kind = LEDGER_SINK_TRANSIENT;
		}
		else
			sink_set_err(err, errlen,
					"mongodb sink \"%s\": entry %" PRId64 " of stream \"%.64s\": collection \"%s\" holds another document with its dedup_key or source_id",
					s->sink_name, r->id, r->stream ? r->stream : "", s->collection);
		mongoc_cursor_destroy(c);
		goto done;
	}
	for (i = 0; immutable[i] != NULL; i++)
	{
		if (!same_field(&ours, theirs, immutable[i]))
		{
			sink_set_err(err, errlen,
					"mongodb sink \"%s\": entry %" PRId64 " of stream \"%.64s\": collection \"%s\" already holds a different document with its _id (field \"%s\" differs)",
					s->sink_name, r->id, r->stream ? r->stream : "", s->collection, immutable[i]);
			mongoc_cursor_destroy(c);
			goto done;
		}
	}
	mongoc_cursor_destroy(c);

	/* the same entry, sent again: bring its side data up to date */
	{
		bson_t		update = BSON_INITIALIZER;
		bson_t		selector = BSON_INITIALIZER;

		entry_selector(r->id, &selector);
		if (build_side_data_update(r, &update, msg, sizeof(msg)) != 0)
			sink_set_err(err, errlen, "mongodb sink \"%s\": entry %" PRId64 ": %s", s->sink_name, r->id, msg);
		else if (!mongoc_collection_update_one(s->coll, &selector, &update, NULL, NULL, &error))
		{
			driver_err(s, err, errlen, "cannot update", error.message);
			*kind = LEDGER_SINK_TRANSIENT;
		}
		else
			result = 0;
		bson_destroy(&update);
		bson_destroy(&selector);
	}

done:
	bson_destroy(&ours);
	bson_destroy(&filter);
	bson_destroy(opts);
	return result;
}

/* Add item r to the bulk write. */
static int
add_to_bulk(MongoSink *s, mongoc_bulk_operation_t *bulk, const LedgerExportRow *r,
			char *err, size_t errlen)
{
	bson_t		doc = BSON_INITIALIZER;
	bson_t		selector = BSON_INITIALIZER;
	bson_error_t error;
	char		msg[512];
	bool		ok = true;

	switch (r->op)
	{
		case LEDGER_EXPORT_INSERT:
			if (build_document(r, &doc, msg, sizeof(msg)) != 0)
				ok = false;
			else
			{
				/*
				 * No client-side key checks: payload keys with dots, a
				 * leading '$' or no characters are data, and MongoDB 5.0+
				 * stores them (a server that does not refuses the document,
				 * and says so).
				 */
				bson_t	   *opts = BCON_NEW("validate", BCON_BOOL(false));

				ok = mongoc_bulk_operation_insert_with_opts(bulk, &doc, opts, &error);
				bson_destroy(opts);
				if (!ok)
					sink_set_err(msg, sizeof(msg), "%s", error.message);
			}
			break;
		case LEDGER_EXPORT_UPDATE:
			entry_selector(r->id, &selector);
			if (build_side_data_update(r, &doc, msg, sizeof(msg)) != 0)
				ok = false;
			else if (!mongoc_bulk_operation_update_one_with_opts(bulk, &selector, &doc, NULL, &error))
			{
				sink_set_err(msg, sizeof(msg), "%s", error.message);
				ok = false;
			}
			break;
		case LEDGER_EXPORT_TRIM:
			{
				bson_oid_t	hi;
				bson_t		range;

				oid_from_id(r->id, &hi);
				bson_append_utf8(&selector, "stream", 6, r->stream ? r->stream : "", -1);
				bson_append_document_begin(&selector, "_id", 3, &range);
				bson_append_oid(&range, "$lte", 4, &hi);
				bson_append_document_end(&selector, &range);
				if (!mongoc_bulk_operation_remove_many_with_opts(bulk, &selector, NULL, &error))
				{
					sink_set_err(msg, sizeof(msg), "%s", error.message);
					ok = false;
				}
				break;
			}
	}
	if (!ok)
		sink_set_err(err, errlen, "mongodb sink \"%s\": entry %" PRId64 " of stream \"%.64s\": %s",
				s->sink_name, r->id, r->stream ? r->stream : "", msg);
	bson_destroy(&doc);
	bson_destroy(&selector);
	return ok ? 0 : -1;
}

/* The first write error of a bulk reply: its index, code and message. */
static int
first_write_error(const bson_t *reply, int *index, int *code, char *msg, size_t msglen)
{
	bson_iter_t it;
	bson_iter_t errs;
	bson_iter_t f;

	if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it) ||
		!bson_iter_recurse(&it, &errs) || !bson_iter_next(&errs) ||
		!BSON_ITER_HOLDS_DOCUMENT(&errs) || !bson_iter_recurse(&errs, &f))
		return 0;
	*index = -1;
	*code = 0;
	msg[0] = '\0';
	while (bson_iter_next(&f))
	{
		if (strcmp(bson_iter_key(&f), "index") == 0)
			*index = (int) bson_iter_as_int64(&f);
		else if (strcmp(bson_iter_key(&f), "code") == 0)
			*code = (int) bson_iter_as_int64(&f);
		else if (strcmp(bson_iter_key(&f), "errmsg") == 0 && BSON_ITER_HOLDS_UTF8(&f))
			sink_set_err(msg, msglen, "%s", bson_iter_utf8(&f, NULL));
	}
	return 1;
}

static int64_t
reply_count(const bson_t *reply, const char *field)
{
	bson_iter_t it;

	return bson_iter_init_find(&it, reply, field) ? bson_iter_as_int64(&it) : 0;
}

/*
 * One side-data update on its own, to tell which of a bulk's updates found
 * no document.
 */
static int
update_matched(MongoSink *s, const LedgerExportRow *r, int *matched, char *err, size_t errlen)
{
	bson_t		selector = BSON_INITIALIZER;
	bson_t		update = BSON_INITIALIZER;
	bson_t		reply;
	bson_error_t error;
	char		msg[512];
	int			result = -1;

	entry_selector(r->id, &selector);
	if (build_side_data_update(r, &update, msg, sizeof(msg)) != 0)
		sink_set_err(err, errlen, "mongodb sink \"%s\": entry %" PRId64 ": %s", s->sink_name, r->id, msg);
	else if (!mongoc_collection_update_one(s->coll, &selector, &update, NULL, &reply, &error))
	{
		driver_err(s, err, errlen, "cannot update", error.message);
		bson_destroy(&reply);
	}
	else
	{
		*matched = reply_count(&reply, "matchedCount") > 0;
		bson_destroy(&reply);
		result = 0;
	}
	bson_destroy(&selector);
	bson_destroy(&update);
	return result;
}

static int
mongo_sink_apply(void *state, const LedgerExportRow *rows, int n,
				 LedgerSinkFailure *failure, char *err, size_t errlen)
{
	MongoSink  *s = state;
	int			from = 0;

	fail_as(failure, LEDGER_SINK_TRANSIENT, -1);
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	while (from < n)
	{
		mongoc_bulk_operation_t *bulk;
		bson_t	   *opts = BCON_NEW("ordered", BCON_BOOL(true));
		bson_t		reply;
		bson_error_t error;
		int			nupdates = 0;
		int			upto = n;	/* items [from, upto) executed */
		int			index = -1;
		int			code = 0;
		char		msg[512];
		int			i;
		bool		ok;

		bulk = mongoc_collection_create_bulk_operation_with_opts(s->coll, opts);
		bson_destroy(opts);
		for (i = from; i < n; i++)
		{
			if (add_to_bulk(s, bulk, &rows[i], err, errlen) != 0)
			{
				mongoc_bulk_operation_destroy(bulk);
				fail_as(failure, LEDGER_SINK_DIVERGED, i);
				return -1;
			}
		}
		ok = mongoc_bulk_operation_execute(bulk, &reply, &error) != 0;
		mongoc_bulk_operation_destroy(bulk);
		if (!ok && !first_write_error(&reply, &index, &code, msg, sizeof(msg)))
		{
			char		what[128];

			snprintf(what, sizeof(what), "cannot write the items from entry %" PRId64 " on (%d of them)",
					 rows[from].id, n - from);
			driver_err(s, err, errlen, what, error.message);
			bson_destroy(&reply);
			return -1;
		}
		if (!ok)
			upto = from + (index >= 0 ? index : 0);

		/* every update before the failure must have found its document */
		for (i = from; i < upto; i++)
			if (rows[i].op == LEDGER_EXPORT_UPDATE)
				nupdates++;
		if (reply_count(&reply, "nMatched") < nupdates)
		{
			for (i = from; i < upto; i++)
			{
				int			matched = 1;

				if (rows[i].op != LEDGER_EXPORT_UPDATE)
					continue;
				if (update_matched(s, &rows[i], &matched, err, errlen) != 0)
				{
					bson_destroy(&reply);
					return -1;
				}
				if (!matched)
				{
					sink_set_err(err, errlen,
							"mongodb sink \"%s\": entry %" PRId64 " of stream \"%.64s\" is missing from collection \"%s\"",
							s->sink_name, rows[i].id, rows[i].stream ? rows[i].stream : "", s->collection);
					fail_as(failure, LEDGER_SINK_MISSING, i);
					bson_destroy(&reply);
					return -1;
				}
			}
		}
		bson_destroy(&reply);
		if (ok)
			break;

		if (upto >= n)
		{
			driver_err(s, err, errlen, "cannot write", msg);
			return -1;
		}
		if (code == MONGO_DUPLICATE_KEY && rows[upto].op == LEDGER_EXPORT_INSERT)
		{
			LedgerSinkErrorKind kind;

			if (resolve_duplicate(s, &rows[upto], err, errlen, &kind) != 0)
			{
				fail_as(failure, kind, upto);
				return -1;
			}
			from = upto + 1;
			continue;
		}
		ledger_sink_scrub_message("mongodb", s->target, msg);
		sink_set_err(err, errlen,
				"mongodb sink \"%s\": collection \"%s\" refused entry %" PRId64 " of stream \"%.64s\" (code %d): %s",
				s->sink_name, s->collection, rows[upto].id,
				rows[upto].stream ? rows[upto].stream : "", code, msg);
		fail_as(failure, LEDGER_SINK_DIVERGED, upto);
		return -1;
	}

	/* the cursor, after the items: $max never lets it go back */
	{
		bson_t		selector = BSON_INITIALIZER;
		bson_t	   *update;
		bson_t	   *opts = BCON_NEW("upsert", BCON_BOOL(true));
		bson_oid_t	oid;
		char		hex[25];
		bson_error_t error;
		bool		ok;

		oid_from_id(rows[n - 1].position, &oid);
		bson_oid_to_string(&oid, hex);
		bson_append_utf8(&selector, "_id", 3, s->cursor_id, -1);
		update = BCON_NEW("$max", "{", "position", BCON_INT64(rows[n - 1].position),
						  "cursor", BCON_UTF8(hex), "}");
		ok = mongoc_collection_update_one(s->cursors, &selector, update, opts, NULL, &error);
		bson_destroy(&selector);
		bson_destroy(update);
		bson_destroy(opts);
		if (!ok)
		{
			driver_err(s, err, errlen, "cannot update the cursor", error.message);
			return -1;
		}
	}
	return 0;
}

const LedgerSinkOps ledger_mongo_sink_ops = {
	.kind = "mongodb",
	.check = mongo_sink_check,
	.open = mongo_sink_open,
	.cursor = mongo_sink_cursor,
	.scan = mongo_sink_scan,
	.apply = mongo_sink_apply,
	.close = mongo_sink_close,
};
