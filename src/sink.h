/*-------------------------------------------------------------------------
 *
 * src/sink.h
 *	  Interface between the export driver (export.c) and the export sinks
 *	  (sink_sqlite.c, sink_mongo.c).
 *
 * Plain C: no postgres.h, no palloc, no ereport.  The sink modules are
 * self-contained so that they can be built and tested outside the server
 * (test/sink_harness), so that the driver can run their blocking calls on
 * a helper thread (sink_thread.c) that never touches server state, and so
 * that any failure of a target comes back as a return code plus a one-line
 * message, never as a longjmp.
 *
 * A sink is a mirror.  The driver hands it items in id order: entries to
 * insert, current side data of an entry to overwrite, and trims.  Every
 * item carries a position (the entry's or the change's id); the sink
 * applies a batch and moves its own cursor in the target to the batch's
 * last position, atomically where the target allows it (SQLite), or after
 * the items (MongoDB, where every item is idempotent).  Nothing is ever
 * skipped: a target that does not hold what it should makes apply() fail
 * with LEDGER_SINK_DIVERGED and a message naming the entry id.
 *
 * Messages written into err buffers name the sink and the offending value
 * and never contain a credential: targets appear only redacted
 * (sink_redact.c), and driver messages are scrubbed of every secret the
 * target carries.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LEDGER_SINK_H
#define LEDGER_SINK_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum LedgerExportOp
{
	LEDGER_EXPORT_INSERT,		/* an entry, in full */
	LEDGER_EXPORT_UPDATE,		/* the current tags/annotations/updated_at of entry id */
	LEDGER_EXPORT_TRIM			/* delete the stream's rows with id <= id */
} LedgerExportOp;

/* One item as the driver hands it to a sink. */
typedef struct LedgerExportRow
{
	LedgerExportOp op;
	int64_t		position;		/* the cursor once this item is applied */
	int64_t		id;				/* entry id (TRIM: the highest id it deleted) */
	const char *stream;
	/* INSERT only */
	int64_t		seq;
	const char *payload_json;	/* any JSON value, as jsonb prints it */
	const char *order_key;		/* "" when unset */
	const char *dedup_key;		/* "" when unset */
	int32_t		schema_version;
	const char *metadata_json;	/* JSON object of strings, "{}" when empty */
	int64_t		created_at_us;	/* microseconds since the Unix epoch, UTC */
	/* INSERT and UPDATE */
	const char *tags_json;		/* JSON array of strings, "[]" when empty */
	const char *annotations_json;	/* JSON object of strings, "{}" when empty */
	int			has_updated_at;
	int64_t		updated_at_us;
} LedgerExportRow;

typedef enum LedgerSinkErrorKind
{
	LEDGER_SINK_TRANSIENT,		/* could not reach or lock the target */
	LEDGER_SINK_DIVERGED,		/* the target does not mirror the log */
	LEDGER_SINK_MISSING			/* UPDATE of an entry the target lacks */
} LedgerSinkErrorKind;

/* What went wrong in a failed call. */
typedef struct LedgerSinkFailure
{
	LedgerSinkErrorKind kind;
	int			index;			/* the item that failed, -1 for none */
} LedgerSinkFailure;

/* How many ids scan() reports at most per call. */
#define LEDGER_SINK_SCAN_MAX 1000

typedef struct LedgerSinkOps
{
	const char *kind;			/* "sqlite" or "mongodb" */

	/*
	 * Validate target + options without connecting or creating anything.
	 * options_json is a JSON object text (NULL or "" means "{}").  Returns 0,
	 * or -1 with a one-line message naming the offending value in err.
	 */
	int			(*check) (const char *target, const char *options_json,
						  char *err, size_t errlen);

	/*
	 * Connect/open, creating the table/collection and indexes if missing.
	 * streams is the sink's pattern (scan() keeps to it).  Returns NULL on
	 * failure with err set.
	 */
	void	   *(*open) (const char *sink_name, const char *target,
						 const char *streams, const char *options_json,
						 char *err, size_t errlen);

	/* This sink's cursor in the target; *present 0 when it has none yet. */
	int			(*cursor) (void *state, int64_t *cursor, int *present,
						   char *err, size_t errlen);

	/*
	 * Ids of the rows of the sink's streams in the target with id > after,
	 * ascending, at most LEDGER_SINK_SCAN_MAX of them, into ids/n.  A row
	 * above after that no ledger sink wrote (any stream) fails the call
	 * with LEDGER_SINK_DIVERGED.  The driver checks the ids against the
	 * server when it opens the sink: a target ahead of the server (after a
	 * failover to a lagging replica) is a divergence.
	 */
	int			(*scan) (void *state, int64_t after, int64_t *ids, int *n,
						 LedgerSinkFailure *failure, char *err, size_t errlen);

	/*
	 * Apply n >= 1 items (increasing positions) and move the cursor to
	 * rows[n-1].position.  An INSERT of an entry the target already holds
	 * with the same immutable fields only refreshes its side data (a batch
	 * sent again after a crash); with other content it is a divergence.
	 * 0 ok, or -1 with *failure and err set; the state stays usable, and
	 * closing and reopening is always safe.
	 */
	int			(*apply) (void *state, const LedgerExportRow *rows, int n,
						  LedgerSinkFailure *failure, char *err, size_t errlen);

	void		(*close) (void *state);
} LedgerSinkOps;

extern const LedgerSinkOps ledger_sqlite_sink_ops;
extern const LedgerSinkOps ledger_mongo_sink_ops;

/* sink_mongo.c: the hosts a MongoDB URI names, for ledger.sink_hosts */
typedef struct LedgerSinkHost
{
	char		name[256];		/* host name or address, or a socket path */
	int			port;
	int			is_unix;		/* a unix-domain socket */
} LedgerSinkHost;

/*
 * The seed hosts of a mongodb target (at most max); *is_srv when it names
 * an SRV record instead (mongodb+srv://), whose hosts only DNS knows.
 * -1 with err (redacted) when the URI does not parse.
 */
extern int	ledger_mongo_target_hosts(const char *target, LedgerSinkHost *hosts,
									  int max, int *n, int *is_srv,
									  char *err, size_t errlen);

/* sink_redact.c */

/*
 * Copy of target safe to show users: a MongoDB URI with its password,
 * every option value whose name contains password, secret, token or key,
 * and the authMechanismProperties values replaced by "***"; an sqlite path
 * unchanged.  malloc'd (free() it); NULL only when out of memory.
 */
extern char *ledger_sink_redact_target(const char *kind, const char *target);

/*
 * Overwrite, in place, every secret that target carries (raw and
 * percent-decoded) wherever it occurs in msg; the message never grows.
 */
extern void ledger_sink_scrub_message(const char *kind, const char *target,
									  char *msg);

/* sink_bson.c */
struct _bson_t;

/*
 * Append the JSON text json (a value as jsonb prints it) under key to doc,
 * by value: objects, arrays, strings, booleans and null as such; numbers as
 * int32/int64 when integral and in range, else double when the double
 * prints back as the same number, else Decimal128; keys are never
 * interpreted.  0, or -1 with a message in err.
 */
extern int	ledger_bson_append_json(struct _bson_t *doc, const char *key,
									const char *json, char *err, size_t errlen);

/*
 * Helpers every target uses.  A target runs on its sink's helper thread
 * (sink_thread.c), where palloc and ereport must not be called, so errors go
 * into the caller's buffer and copies are malloc'd.
 */
static inline void sink_set_err(char *err, size_t errlen, const char *fmt,...)
	__attribute__((format(printf, 3, 4)));

static inline void
sink_set_err(char *err, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* malloc'd copy of s; NULL for NULL or when out of memory */
static inline char *
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

#endif							/* LEDGER_SINK_H */
