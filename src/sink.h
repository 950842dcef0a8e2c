/*-------------------------------------------------------------------------
 *
 * sink.h
 *	  Interface between the export worker and the export sinks (SQLite,
 *	  MongoDB).
 *
 * Plain C: no postgres.h, no palloc, no ereport.  The sink modules are
 * self-contained so that they can be built and tested outside the server
 * (test/sink_harness) and so that any failure of a target comes back to
 * the worker as a return code plus a one-line message, never as a longjmp.
 *
 * Every message written into an err buffer names the sink and the
 * offending value, and never contains a MongoDB password.
 *
 * src/sink.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef LEDGER_SINK_H
#define LEDGER_SINK_H

#include <stddef.h>
#include <stdint.h>

/* One entry as the worker hands it to a sink. */
typedef struct LedgerExportRow
{
	int64_t		id;				/* PostgreSQL entry id, > 0, increasing */
	const char *stream;
	int64_t		seq;
	const char *payload_json;	/* any JSON value as text */
	const char *order_key;		/* "" when unset */
	const char *dedup_key;		/* "" when unset */
	int32_t		schema_version;
	const char *metadata_json;	/* JSON object of strings, "{}" when empty */
	const char *tags_json;		/* JSON array of strings, "[]" when empty */
	const char *annotations_json;	/* JSON object of strings, "{}" when empty */
	int64_t		created_at_us;	/* microseconds since the Unix epoch, UTC */
	int			has_updated_at;
	int64_t		updated_at_us;
} LedgerExportRow;

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
	 * Connect/open, creating the table/collection indexes if missing.
	 * Returns NULL on failure with err set.
	 */
	void	   *(*open) (const char *sink_name, const char *target,
						 const char *options_json, char *err, size_t errlen);

	/* Last exported PostgreSQL id recorded in the target (0 if none). */
	int			(*position) (void *state, int64_t *pos, char *err, size_t errlen);

	/*
	 * Write n >= 1 rows (increasing ids) together with the new position
	 * (rows[n-1].id), atomically where the target allows it.  Rows already
	 * in the target are skipped silently.  0 ok / -1 error; after an error
	 * the state is still usable, but closing and reopening is always safe.
	 */
	int			(*write) (void *state, const LedgerExportRow *rows, int n,
						  char *err, size_t errlen);

	void		(*close) (void *state);
} LedgerSinkOps;

extern const LedgerSinkOps ledger_sqlite_sink_ops;
extern const LedgerSinkOps ledger_mongo_sink_ops;

/*
 * Copy of target safe to show users: the password of a MongoDB URI is
 * replaced by "****"; an sqlite path is returned unchanged.  malloc'd
 * (free() it); NULL only when out of memory.
 */
extern char *ledger_sink_redact_target(const char *kind, const char *target);

#endif							/* LEDGER_SINK_H */
