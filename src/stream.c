/*-------------------------------------------------------------------------
 *
 * src/stream.c
 *		The per-stream row of ledger.streams: lookup, creation on first
 *		append, and the UPDATE that both numbers and serializes appends.
 *
 * Appending to a stream starts with
 *		UPDATE ledger.streams SET last_seq = last_seq + n WHERE name = $1
 * The row lock it takes is held to commit, so appends to one stream are
 * numbered gaplessly in commit order, and appends to different streams never
 * touch the same row.  The update is HOT (no indexed column changes).
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"

#define STREAM_COLUMNS \
	"stream_id, last_seq, trimmed_seq, schema_version, created_at, last_appended_at"

/* The stream's current version: longest matching pattern, else 1. */
#define RESOLVE_VERSION_SQL(name) \
	"COALESCE((SELECT st.schema_version FROM ledger.stream_settings st" \
	" WHERE st.schema_version IS NOT NULL AND (st.pattern OPERATOR(pg_catalog.=) " name \
	" OR (pg_catalog.right(st.pattern, 1) OPERATOR(pg_catalog.=) '*'" \
	" AND pg_catalog.starts_with(" name ", pg_catalog.left(st.pattern, -1))))" \
	" ORDER BY (st.pattern OPERATOR(pg_catalog.=) " name ") DESC," \
	" pg_catalog.length(st.pattern) DESC LIMIT 1), 1)"

static void
stream_from_tuple(HeapTuple tuple, TupleDesc desc, LedgerStream *stream)
{
	bool		isnull;
	Datum		d;

	stream->stream_id = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
	stream->last_seq = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
	stream->trimmed_seq = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
	stream->schema_version = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
	stream->created_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 5, &isnull));
	d = SPI_getbinval(tuple, desc, 6, &isnull);
	stream->has_last_appended_at = !isnull;
	stream->last_appended_at = isnull ? 0 : DatumGetTimestampTz(d);
}

/* Read a stream's row without locking it; false when it does not exist. */
bool
ledger_stream_lookup(const char *name, LedgerStream *stream)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	int			rc;

	if (plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		plan = ledger_prepare_plan("SELECT " STREAM_COLUMNS
								   " FROM ledger.streams WHERE name OPERATOR(pg_catalog.=) $1",
								   1, types);
	}
	args[0] = CStringGetTextDatum(name);
	rc = SPI_execute_plan(plan, args, NULL, false, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "stream lookup");
	if (SPI_processed == 0)
		return false;
	stream_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, stream);
	return true;
}

/*
 * Create the stream's row if it is missing (a no-op when it exists).  The SHARE lock on
 * stream_settings orders creation against set_schema_version(): either the
 * new row is stamped with the new version, or set_schema_version() (which
 * updates existing rows after taking ROW EXCLUSIVE) sees the new row.
 */
void
ledger_stream_create(const char *name)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	Datum		args[1];
	int			rc;

	if (insert_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		lock_plan = ledger_prepare_plan("LOCK TABLE ledger.stream_settings IN SHARE MODE",
										0, NULL);
		insert_plan = ledger_prepare_plan("INSERT INTO ledger.streams (name, schema_version)"
										  " VALUES ($1, " RESOLVE_VERSION_SQL("$1") ")"
										  " ON CONFLICT (name) DO NOTHING",
										  1, types);
	}
	rc = SPI_execute_plan(lock_plan, NULL, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_UTILITY, "stream settings lock");
	args[0] = CStringGetTextDatum(name);
	rc = SPI_execute_plan(insert_plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_INSERT, "stream creation");
}

/*
 * Lock a stream for appending (creating it on first use) and advance its
 * last_seq by seq_delta, which may be 0 to lock only.  On return
 * stream->last_seq is the value after the bump.
 */
void
ledger_stream_lock(const char *name, int64 seq_delta, LedgerStream *stream)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	int			attempt;

	if (plan == NULL)
	{
		Oid			types[2] = {TEXTOID, INT8OID};

		plan = ledger_prepare_plan("UPDATE ledger.streams SET last_seq = last_seq OPERATOR(pg_catalog.+) $2"
								   " WHERE name OPERATOR(pg_catalog.=) $1"
								   " RETURNING " STREAM_COLUMNS,
								   2, types);
	}
	args[0] = CStringGetTextDatum(name);
	args[1] = Int64GetDatum(seq_delta);

	for (attempt = 0; attempt < 2; attempt++)
	{
		int			rc = SPI_execute_plan(plan, args, NULL, false, 1);

		ledger_spi_check(rc, SPI_OK_UPDATE_RETURNING, "stream lock");
		if (SPI_processed == 1)
		{
			stream_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, stream);
			return;
		}
		ledger_stream_create(name);
	}

	/*
	 * Only a transaction-snapshot isolation level can miss a row that a
	 * concurrent transaction created and committed meanwhile.
	 */
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not serialize access due to concurrent creation of stream \"%s\"", name),
			 errhint("Retry the transaction.")));
}

/* Give back seq numbers reserved by ledger_stream_lock() but not used. */
void
ledger_stream_unbump(int32 stream_id, int64 seq_delta)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	int			rc;

	if (plan == NULL)
	{
		Oid			types[2] = {INT4OID, INT8OID};

		plan = ledger_prepare_plan("UPDATE ledger.streams SET last_seq = last_seq OPERATOR(pg_catalog.-) $2"
								   " WHERE stream_id OPERATOR(pg_catalog.=) $1",
								   2, types);
	}
	args[0] = Int32GetDatum(stream_id);
	args[1] = Int64GetDatum(seq_delta);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_UPDATE, "stream seq release");
}

/* The current schema version of a (possibly not yet existing) stream. */
int32
ledger_resolve_schema_version(const char *name)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	bool		isnull;
	int			rc;

	if (plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		plan = ledger_prepare_plan("SELECT " RESOLVE_VERSION_SQL("$1"), 1, types);
	}
	args[0] = CStringGetTextDatum(name);
	rc = SPI_execute_plan(plan, args, NULL, false, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "schema version lookup");
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * After a settings change for a pattern, re-resolve the version of every
 * existing stream that the pattern matches (a longer pattern may still win).
 */
void
ledger_refresh_stream_versions(const char *pattern)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	int			rc;

	if (plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		plan = ledger_prepare_plan("UPDATE ledger.streams s SET schema_version = " RESOLVE_VERSION_SQL("s.name")
								   " WHERE CASE WHEN pg_catalog.right($1, 1) OPERATOR(pg_catalog.=) '*'"
								   " THEN pg_catalog.starts_with(s.name, pg_catalog.left($1, -1))"
								   " ELSE s.name OPERATOR(pg_catalog.=) $1 END",
								   1, types);
	}
	args[0] = CStringGetTextDatum(pattern);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_UPDATE, "stream version refresh");
}
