/*-------------------------------------------------------------------------
 *
 * sink_mongo.c
 *	  Export sink writing entries into a MongoDB collection laid out like
 *	  the store of github.com/rbaliyan/ledger (package mongodb, v0.0.13),
 *	  through libmongoc; also target redaction for every sink kind.
 *
 * Document layout (field names and order of the Go library's bson tags):
 *
 *	_id             ObjectId, derived from the PostgreSQL id (below)
 *	stream          string
 *	payload         the payload (below)
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
 *	payload_scalar  true, only for a scalar payload (see below)
 *
 * _id scheme: 12 bytes = 4 zero bytes followed by the PostgreSQL id as an
 * 8-byte big-endian integer; ObjectId("00000000" + %016x of the id).
 * ObjectIds compare bytewise, so _id order is id order, and a batch sent
 * again produces the same _ids (duplicate-key errors, counted as already
 * exported).  The zero prefix (an ObjectId "timestamp" of 1970) keeps
 * these _ids below every driver-generated ObjectId, so position() only
 * looks at _id < ObjectId("000000010000000000000000").
 *
 * Payload: JSON text is turned into BSON by libbson's JSON parser
 * (bson_init_from_json; that parser reads MongoDB Extended JSON, so an
 * object such as {"$date": ...} becomes the BSON type it names).
 *	- a JSON object becomes an embedded document;
 *	- a JSON array becomes a BSON array;
 *	- a scalar (string, number, true/false, null) becomes the document
 *	  {"value": <scalar>} and the entry gets the top-level field
 *	  payload_scalar: true, so {"value": 1} and 1 stay distinguishable.
 * JSON numbers become int32 when they fit, else int64, else double;
 * integers beyond int64 and doubles beyond double's range cannot be
 * written (libbson rejects them) and make write() fail naming the entry.
 *
 * Position: the largest _id of the collection below the prefix bound,
 * decoded back to the id; 0 when there is none.  No separate cursor
 * document: the documents are the position, so there is nothing to keep
 * atomic with them.  An unordered insert can leave a hole when some
 * document fails for another reason than a duplicate key; write() then
 * deletes this batch's documents above the first hole (best effort) so
 * the next position() does not skip the failed ones.
 *
 * Indexes (created on open, names as the Go driver derives them):
 * stream_1__id_1, stream_1_order_key_1__id_1, stream_1_dedup_key_1
 * (unique, partialFilterExpression {dedup_key: {$gt: ""}}), stream_1,
 * source_id_1 (unique, sparse), stream_1_tags_1__id_1.
 *
 * Threading: one state per thread; every call is blocking.  check(),
 * open() and ledger_sink_redact_target() call mongoc_init() themselves
 * (it runs once per process); nobody needs to call mongoc_cleanup().
 *
 * src/sink_mongo.c
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mongoc/mongoc.h>

#include "sink.h"

#define MONGO_SINK_DEFAULT_COLLECTION "ledger_entries"
#define MONGO_SINK_SERVER_SELECTION_MS 2000
#define MONGO_SINK_CONNECT_MS		2000
#define MONGO_SINK_SOCKET_MS		30000
#define MONGO_SINK_APPNAME			"ledger-sink"

typedef struct MongoSink
{
	mongoc_client_t *client;
	mongoc_collection_t *coll;
	char	   *sink_name;
	char	   *redacted;		/* target without password, for messages */
	char	   *password;		/* scrubbed out of driver messages */
	char	   *database;
	char	   *collection;
} MongoSink;

typedef struct MongoOptions
{
	char	   *database;		/* from options, else from the URI */
	char	   *collection;
} MongoOptions;

static void set_err(char *err, size_t errlen, const char *fmt,...)
	__attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static char *
sink_strdup(const char *s)
{
	size_t		len;
	char	   *r;

	if (s == NULL)
		return NULL;
	len = strlen(s) + 1;
	r = malloc(len);
	if (r != NULL)
		memcpy(r, s, len);
	return r;
}

/*
 * Locate the password of a URI by text alone (the URI may not even parse):
 * userinfo runs from after "://" to the last '@' before the query ('?');
 * the password is what follows its first ':'.  Sets *start and *len, returns
 * 0 when there is no password.
 */
static int
find_password(const char *uri, size_t *start, size_t *len)
{
	const char *scheme = strstr(uri, "://");
	const char *auth;
	const char *query;
	const char *at = NULL;
	const char *p;
	const char *colon;

	if (scheme == NULL)
		return 0;
	auth = scheme + 3;
	query = strchr(auth, '?');
	if (query == NULL)
		query = auth + strlen(auth);
	for (p = auth; p < query; p++)
		if (*p == '@')
			at = p;
	if (at == NULL)
		return 0;
	colon = memchr(auth, ':', (size_t) (at - auth));
	if (colon == NULL)
		return 0;
	*start = (size_t) (colon + 1 - uri);
	*len = (size_t) (at - (colon + 1));
	return 1;
}

char *
ledger_sink_redact_target(const char *kind, const char *target)
{
	size_t		start;
	size_t		len;
	char	   *r;

	if (target == NULL)
		target = "";
	/* anything but an sqlite path is treated as a URI: redact when unsure */
	if ((kind != NULL && strcmp(kind, "sqlite") == 0) ||
		!find_password(target, &start, &len))
		return sink_strdup(target);

	r = malloc(strlen(target) - len + 5);
	if (r == NULL)
		return NULL;
	memcpy(r, target, start);
	memcpy(r + start, "****", 4);
	strcpy(r + start + 4, target + start + len);
	return r;
}

/*
 * Replace every occurrence of secret in buf by "****" (a secret shorter
 * than 4 characters by as many '*': buf never grows).
 */
static void
scrub(char *buf, const char *secret)
{
	size_t		slen;
	char	   *p;

	if (buf == NULL || secret == NULL || (slen = strlen(secret)) == 0)
		return;
	p = buf;
	while ((p = strstr(p, secret)) != NULL)
	{
		if (slen >= 4)
		{
			memcpy(p, "****", 4);
			memmove(p + 4, p + slen, strlen(p + slen) + 1);
			p += 4;
		}
		else
		{
			memset(p, '*', slen);
			p += slen;
		}
	}
}

/* Scrub both the raw (percent-encoded) and the decoded password. */
static void
scrub_target_password(char *buf, const char *target)
{
	size_t		start;
	size_t		len;
	char	   *raw;
	char	   *decoded;

	if (target == NULL || !find_password(target, &start, &len) || len == 0)
		return;
	raw = malloc(len + 1);
	if (raw == NULL)
	{
		buf[0] = '\0';
		return;
	}
	memcpy(raw, target + start, len);
	raw[len] = '\0';
	scrub(buf, raw);
	decoded = mongoc_uri_unescape(raw);
	if (decoded != NULL)
	{
		scrub(buf, decoded);
		bson_free(decoded);
	}
	free(raw);
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
 * parsed URI and o is filled in.  Messages use the redacted target.
 */
static int
parse_target(const char *target, const char *options_json, mongoc_uri_t **urip,
			 MongoOptions *o, char *err, size_t errlen)
{
	bson_error_t error;
	mongoc_uri_t *uri = NULL;
	bson_t	   *opts = NULL;
	bson_iter_t iter;
	char	   *redacted = NULL;
	const char *uri_db;
	int			result = -1;

	memset(o, 0, sizeof(*o));
	if (urip != NULL)
		*urip = NULL;
	mongoc_init();

	if (target == NULL || target[0] == '\0')
	{
		set_err(err, errlen, "mongodb sink: target must be a MongoDB URI (mongodb://...), got an empty string");
		return -1;
	}
	redacted = ledger_sink_redact_target("mongodb", target);
	if (redacted == NULL)
	{
		set_err(err, errlen, "mongodb sink: out of memory");
		return -1;
	}

	uri = mongoc_uri_new_with_error(target, &error);
	if (uri == NULL)
	{
		scrub_target_password(error.message, target);
		set_err(err, errlen, "mongodb sink: invalid MongoDB URI \"%s\": %s",
				redacted, error.message);
		goto done;
	}

	if (options_json == NULL || options_json[0] == '\0')
		options_json = "{}";
	{
		const char *p = options_json;

		while (isspace((unsigned char) *p))
			p++;
		if (*p != '{')
		{
			set_err(err, errlen, "mongodb sink: options must be a JSON object, got \"%s\"", options_json);
			goto done;
		}
	}
	opts = bson_new_from_json((const uint8_t *) options_json, -1, &error);
	if (opts == NULL)
	{
		set_err(err, errlen, "mongodb sink: options \"%s\" are not a valid JSON object: %s",
				options_json, error.message);
		goto done;
	}

	if (!bson_iter_init(&iter, opts))
	{
		set_err(err, errlen, "mongodb sink: cannot read options");
		goto done;
	}
	while (bson_iter_next(&iter))
	{
		const char *key = bson_iter_key(&iter);
		char	  **dest;

		if (strcmp(key, "database") == 0)
			dest = &o->database;
		else if (strcmp(key, "collection") == 0)
			dest = &o->collection;
		else
		{
			set_err(err, errlen,
					"mongodb sink: unknown option \"%s\" (options are \"database\" and \"collection\")",
					key);
			goto done;
		}
		if (!BSON_ITER_HOLDS_UTF8(&iter))
		{
			set_err(err, errlen, "mongodb sink: option \"%s\" must be a string", key);
			goto done;
		}
		free(*dest);
		*dest = sink_strdup(bson_iter_utf8(&iter, NULL));
		if (*dest == NULL)
		{
			set_err(err, errlen, "mongodb sink: out of memory");
			goto done;
		}
	}

	uri_db = mongoc_uri_get_database(uri);
	if (o->database == NULL)
	{
		if (uri_db == NULL || uri_db[0] == '\0')
		{
			set_err(err, errlen,
					"mongodb sink: no database: URI \"%s\" names none and option \"database\" is not set",
					redacted);
			goto done;
		}
		if ((o->database = sink_strdup(uri_db)) == NULL)
		{
			set_err(err, errlen, "mongodb sink: out of memory");
			goto done;
		}
	}
	if (!valid_database(o->database))
	{
		set_err(err, errlen,
				"mongodb sink: database name \"%s\" is invalid (1 to 63 bytes, none of / \\ . space \" $)",
				o->database);
		goto done;
	}
	if (o->collection == NULL &&
		(o->collection = sink_strdup(MONGO_SINK_DEFAULT_COLLECTION)) == NULL)
	{
		set_err(err, errlen, "mongodb sink: out of memory");
		goto done;
	}
	if (!valid_collection(o->collection))
	{
		set_err(err, errlen,
				"mongodb sink: option \"collection\" value \"%s\" is not a valid collection name (letters, digits and _, not starting with a digit)",
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
	if (opts != NULL)
		bson_destroy(opts);
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

/*
 * Error from the driver: prefix + the driver's message with the password
 * scrubbed out of it (only the driver's part is scrubbed, so a short
 * password cannot mangle the rest of the message).
 */
static void
driver_err(MongoSink *s, char *err, size_t errlen, const char *what, const char *msg)
{
	char		clean[1024];

	set_err(clean, sizeof(clean), "%s", msg ? msg : "");
	if (s->password != NULL)
		scrub(clean, s->password);
	set_err(err, errlen, "mongodb sink \"%s\": %s on \"%s\" (database \"%s\", collection \"%s\"): %s",
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
	if (s->client != NULL)
		mongoc_client_destroy(s->client);
	free(s->sink_name);
	free(s->redacted);
	if (s->password != NULL)
	{
		memset(s->password, 0, strlen(s->password));
		free(s->password);
	}
	free(s->database);
	free(s->collection);
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

static int
create_indexes(MongoSink *s, char *err, size_t errlen)
{
	static const char *const stream_id[] = {"stream", "_id", NULL};
	static const char *const stream_order_id[] = {"stream", "order_key", "_id", NULL};
	static const char *const stream_dedup[] = {"stream", "dedup_key", NULL};
	static const char *const stream[] = {"stream", NULL};
	static const char *const source_id[] = {"source_id", NULL};
	static const char *const stream_tags_id[] = {"stream", "tags", "_id", NULL};
	bson_t		cmd = BSON_INITIALIZER;
	bson_t		indexes;
	bson_t		reply;
	bson_error_t error;
	bool		ok;

	bson_append_utf8(&cmd, "createIndexes", -1, s->collection, -1);
	bson_append_array_begin(&cmd, "indexes", -1, &indexes);
	append_index(&indexes, 0, "stream_1__id_1", stream_id, 0, 0, 0);
	append_index(&indexes, 1, "stream_1_order_key_1__id_1", stream_order_id, 0, 0, 0);
	append_index(&indexes, 2, "stream_1_dedup_key_1", stream_dedup, 1, 0, 1);
	append_index(&indexes, 3, "stream_1", stream, 0, 0, 0);
	append_index(&indexes, 4, "source_id_1", source_id, 1, 1, 0);
	append_index(&indexes, 5, "stream_1_tags_1__id_1", stream_tags_id, 0, 0, 0);
	bson_append_array_end(&cmd, &indexes);

	ok = mongoc_collection_write_command_with_opts(s->coll, &cmd, NULL, &reply, &error);
	bson_destroy(&cmd);
	bson_destroy(&reply);
	if (!ok)
	{
		driver_err(s, err, errlen, "cannot create indexes", error.message);
		return -1;
	}
	return 0;
}

static void *
mongo_sink_open(const char *sink_name, const char *target, const char *options_json,
				char *err, size_t errlen)
{
	MongoSink  *s;
	MongoOptions o;
	mongoc_uri_t *uri = NULL;
	bson_error_t error;
	size_t		pstart;
	size_t		plen;

	if (sink_name == NULL)
		sink_name = "";
	if (parse_target(target, options_json, &uri, &o, err, errlen) != 0)
		return NULL;

	s = calloc(1, sizeof(MongoSink));
	if (s == NULL)
	{
		set_err(err, errlen, "mongodb sink \"%s\": out of memory", sink_name);
		mongoc_uri_destroy(uri);
		free_options(&o);
		return NULL;
	}
	s->database = o.database;
	s->collection = o.collection;
	s->sink_name = sink_strdup(sink_name);
	s->redacted = ledger_sink_redact_target("mongodb", target);
	if (mongoc_uri_get_password(uri) != NULL && mongoc_uri_get_password(uri)[0] != '\0')
		s->password = sink_strdup(mongoc_uri_get_password(uri));
	else if (find_password(target, &pstart, &plen) && plen > 0)
	{
		/* unlikely: keep the raw text so it is scrubbed all the same */
		s->password = malloc(plen + 1);
		if (s->password != NULL)
		{
			memcpy(s->password, target + pstart, plen);
			s->password[plen] = '\0';
		}
	}
	if (s->sink_name == NULL || s->redacted == NULL)
	{
		set_err(err, errlen, "mongodb sink \"%s\": out of memory", sink_name);
		mongoc_uri_destroy(uri);
		mongo_sink_close(s);
		return NULL;
	}

	/* Fail fast on an unreachable server unless the URI says otherwise. */
	if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
									   MONGO_SINK_SERVER_SELECTION_MS);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS,
									   MONGO_SINK_CONNECT_MS);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_SOCKETTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS,
									   MONGO_SINK_SOCKET_MS);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_APPNAME))
		mongoc_uri_set_appname(uri, MONGO_SINK_APPNAME);

	s->client = mongoc_client_new_from_uri_with_error(uri, &error);
	mongoc_uri_destroy(uri);
	if (s->client == NULL)
	{
		driver_err(s, err, errlen, "cannot create client", error.message);
		mongo_sink_close(s);
		return NULL;
	}
	mongoc_client_set_error_api(s->client, MONGOC_ERROR_API_VERSION_2);
	s->coll = mongoc_client_get_collection(s->client, s->database, s->collection);

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
mongo_sink_position(void *state, int64_t *pos, char *err, size_t errlen)
{
	MongoSink  *s = state;
	bson_t		filter = BSON_INITIALIZER;
	bson_t		lt;
	bson_t	   *opts;
	bson_oid_t	bound;
	mongoc_cursor_t *cursor;
	const bson_t *doc;
	bson_error_t error;
	bson_iter_t iter;
	int			result = 0;

	*pos = 0;
	oid_upper_bound(&bound);
	bson_append_document_begin(&filter, "_id", -1, &lt);
	bson_append_oid(&lt, "$lt", -1, &bound);
	bson_append_document_end(&filter, &lt);
	opts = BCON_NEW("sort", "{", "_id", BCON_INT32(-1), "}",
					"limit", BCON_INT64(1),
					"projection", "{", "_id", BCON_INT32(1), "}");

	cursor = mongoc_collection_find_with_opts(s->coll, &filter, opts, NULL);
	if (mongoc_cursor_next(cursor, &doc))
	{
		if (bson_iter_init_find(&iter, doc, "_id") && BSON_ITER_HOLDS_OID(&iter))
			*pos = id_from_oid(bson_iter_oid(&iter));
		else
		{
			driver_err(s, err, errlen, "cannot read position", "the newest document has no ObjectId _id");
			result = -1;
		}
	}
	if (result == 0 && mongoc_cursor_error(cursor, &error))
	{
		driver_err(s, err, errlen, "cannot read position", error.message);
		result = -1;
	}
	mongoc_cursor_destroy(cursor);
	bson_destroy(opts);
	bson_destroy(&filter);
	return result;
}

/* First non-space character of a JSON text. */
static char
json_first(const char *json)
{
	while (json != NULL && isspace((unsigned char) *json))
		json++;
	return json ? *json : '\0';
}

/*
 * Parse a JSON value by wrapping it as {"v": <json>}; on success *wrapped
 * is a new bson_t whose iterator *it points at "v".
 */
static bson_t *
parse_value(const char *json, bson_iter_t *it, bson_error_t *error)
{
	size_t		len = strlen(json);
	char	   *text = malloc(len + 8);
	bson_t	   *b;

	if (text == NULL)
	{
		bson_set_error(error, 0, 0, "out of memory");
		return NULL;
	}
	memcpy(text, "{\"v\":", 5);
	memcpy(text + 5, json, len);
	memcpy(text + 5 + len, "\n}", 3);
	b = bson_new_from_json((const uint8_t *) text, -1, error);
	free(text);
	if (b == NULL)
		return NULL;
	if (!bson_iter_init_find(it, b, "v"))
	{
		bson_set_error(error, 0, 0, "not a single JSON value");
		bson_destroy(b);
		return NULL;
	}
	return b;
}

/*
 * Append a JSON object of strings as a document (left out when empty), or
 * a JSON array of strings as an array (always).  Returns 0 or -1 with
 * *what naming the problem.
 */
static int
append_strings(bson_t *doc, const char *field, const char *json, int is_array,
			   char *msg, size_t msglen)
{
	bson_iter_t it;
	bson_iter_t child;
	bson_error_t error;
	bson_t	   *b;
	uint32_t	n = 0;
	const uint8_t *data;
	uint32_t	datalen;
	bson_t		sub;

	if (json == NULL || json_first(json) == '\0')
		json = is_array ? "[]" : "{}";
	b = parse_value(json, &it, &error);
	if (b == NULL)
	{
		set_err(msg, msglen, "%s is not valid JSON: %s", field, error.message);
		return -1;
	}
	if (is_array ? !BSON_ITER_HOLDS_ARRAY(&it) : !BSON_ITER_HOLDS_DOCUMENT(&it))
	{
		set_err(msg, msglen, "%s is not a JSON %s", field, is_array ? "array" : "object");
		bson_destroy(b);
		return -1;
	}
	bson_iter_recurse(&it, &child);
	while (bson_iter_next(&child))
	{
		if (!BSON_ITER_HOLDS_UTF8(&child))
		{
			set_err(msg, msglen, "%s member \"%s\" is not a string", field, bson_iter_key(&child));
			bson_destroy(b);
			return -1;
		}
		n++;
	}
	if (is_array)
	{
		bson_iter_array(&it, &datalen, &data);
		if (bson_init_static(&sub, data, datalen))
			bson_append_array(doc, field, -1, &sub);
	}
	else if (n > 0)
	{
		bson_iter_document(&it, &datalen, &data);
		if (bson_init_static(&sub, data, datalen))
			bson_append_document(doc, field, -1, &sub);
	}
	bson_destroy(b);
	return 0;
}

static int64_t
us_to_ms(int64_t us)
{
	return us >= 0 ? us / 1000 : -((-us + 999) / 1000);
}

/* Build the document for one row into doc (initialized by the caller). */
static int
build_document(const LedgerExportRow *r, bson_t *doc, char *msg, size_t msglen)
{
	bson_oid_t	oid;
	bson_iter_t it;
	bson_error_t error;
	bson_t	   *payload;
	char		idtxt[24];
	int			scalar = 0;
	char		first = json_first(r->payload_json);

	payload = parse_value(r->payload_json ? r->payload_json : "null", &it, &error);
	if (payload == NULL)
	{
		set_err(msg, msglen, "payload cannot be converted to BSON: %s", error.message);
		return -1;
	}

	oid_from_id(r->id, &oid);
	bson_append_oid(doc, "_id", 3, &oid);
	bson_append_utf8(doc, "stream", 6, r->stream ? r->stream : "", -1);
	if (first == '{' && BSON_ITER_HOLDS_DOCUMENT(&it))
		bson_append_iter(doc, "payload", 7, &it);
	else if (first == '[' && BSON_ITER_HOLDS_ARRAY(&it))
		bson_append_iter(doc, "payload", 7, &it);
	else
	{
		bson_t		wrap;

		scalar = 1;
		bson_append_document_begin(doc, "payload", 7, &wrap);
		bson_append_iter(&wrap, "value", 5, &it);
		bson_append_document_end(doc, &wrap);
	}
	bson_destroy(payload);

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
	return 0;
}

/*
 * Best effort after a non-duplicate write error: delete this batch's
 * documents with ids in (from_id, to_id], so that position() does not
 * move past a document that is not there.
 */
static void
delete_range(MongoSink *s, int64_t from_id, int64_t to_id)
{
	bson_oid_t	lo;
	bson_oid_t	hi;
	bson_t		filter = BSON_INITIALIZER;
	bson_t		range;

	oid_from_id(from_id, &lo);
	oid_from_id(to_id, &hi);
	bson_append_document_begin(&filter, "_id", 3, &range);
	bson_append_oid(&range, "$gt", 3, &lo);
	bson_append_oid(&range, "$lte", 4, &hi);
	bson_append_document_end(&filter, &range);
	(void) mongoc_collection_delete_many(s->coll, &filter, NULL, NULL, NULL);
	bson_destroy(&filter);
}

static int
mongo_sink_write(void *state, const LedgerExportRow *rows, int n, char *err, size_t errlen)
{
	MongoSink  *s = state;
	bson_t	   *docs;
	const bson_t **ptrs;
	bson_t	   *opts = NULL;
	bson_t		reply;
	bson_error_t error;
	bson_iter_t iter;
	bson_iter_t we;
	char		msg[512];
	int			built = 0;
	int			result = -1;
	int			i;
	bool		ok;

	if (n <= 0)
		return 0;
	docs = calloc((size_t) n, sizeof(bson_t));
	ptrs = calloc((size_t) n, sizeof(bson_t *));
	if (docs == NULL || ptrs == NULL)
	{
		set_err(err, errlen, "mongodb sink \"%s\": out of memory", s->sink_name);
		goto done;
	}
	for (i = 0; i < n; i++)
	{
		bson_init(&docs[i]);
		built++;
		if (build_document(&rows[i], &docs[i], msg, sizeof(msg)) != 0)
		{
			set_err(err, errlen, "mongodb sink \"%s\": entry %" PRId64 " of stream \"%s\": %s",
					s->sink_name, rows[i].id, rows[i].stream ? rows[i].stream : "", msg);
			goto done;
		}
		ptrs[i] = &docs[i];
	}

	/*
	 * Unordered; no client-side key validation: payload keys with dots, a
	 * leading '$' or an empty name are legal JSON and MongoDB 5.0+ stores
	 * them (an older server refuses them, and says so).
	 */
	opts = BCON_NEW("ordered", BCON_BOOL(false), "validate", BCON_BOOL(false));
	ok = mongoc_collection_insert_many(s->coll, ptrs, (size_t) n, opts, &reply, &error);
	if (ok)
		result = 0;
	else
	{
		int			first_bad = -1;
		int			bad_code = 0;
		char		bad_msg[256] = "";
		int			have_write_errors = 0;

		if (bson_iter_init_find(&iter, &reply, "writeErrors") &&
			BSON_ITER_HOLDS_ARRAY(&iter) && bson_iter_recurse(&iter, &we))
		{
			while (bson_iter_next(&we))
			{
				bson_iter_t f;
				int32_t		code = 0;
				int32_t		index = -1;
				const char *emsg = "";

				have_write_errors = 1;
				if (!BSON_ITER_HOLDS_DOCUMENT(&we) || !bson_iter_recurse(&we, &f))
					continue;
				while (bson_iter_next(&f))
				{
					if (strcmp(bson_iter_key(&f), "code") == 0)
						code = (int32_t) bson_iter_as_int64(&f);
					else if (strcmp(bson_iter_key(&f), "index") == 0)
						index = (int32_t) bson_iter_as_int64(&f);
					else if (strcmp(bson_iter_key(&f), "errmsg") == 0 && BSON_ITER_HOLDS_UTF8(&f))
						emsg = bson_iter_utf8(&f, NULL);
				}
				if (code == 11000)
					continue;	/* already exported */
				if (first_bad < 0 || index < first_bad)
				{
					first_bad = index < 0 ? 0 : index;
					bad_code = code;
					set_err(bad_msg, sizeof(bad_msg), "%s", emsg);
				}
			}
		}
		if (bson_iter_init_find(&iter, &reply, "writeConcernErrors") &&
			BSON_ITER_HOLDS_ARRAY(&iter) && bson_iter_recurse(&iter, &we) &&
			bson_iter_next(&we))
		{
			driver_err(s, err, errlen, "write concern error", error.message);
		}
		else if (!have_write_errors)
			driver_err(s, err, errlen, "cannot insert", error.message);
		else if (first_bad >= 0)
		{
			if (first_bad >= n)
				first_bad = 0;
			set_err(msg, sizeof(msg), "entry %" PRId64 " failed with code %d: %s",
					 rows[first_bad].id, bad_code, bad_msg);
			driver_err(s, err, errlen, "cannot insert", msg);
			delete_range(s, rows[first_bad].id, rows[n - 1].id);
		}
		else
			result = 0;			/* only duplicates: already exported */
	}
	bson_destroy(&reply);

done:
	if (opts != NULL)
		bson_destroy(opts);
	for (i = 0; i < built; i++)
		bson_destroy(&docs[i]);
	free(docs);
	free(ptrs);
	return result;
}

const LedgerSinkOps ledger_mongo_sink_ops = {
	.kind = "mongodb",
	.check = mongo_sink_check,
	.open = mongo_sink_open,
	.position = mongo_sink_position,
	.write = mongo_sink_write,
	.close = mongo_sink_close,
};
