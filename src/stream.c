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
	"stream_id, last_seq, trimmed_seq, created_at, last_appended_at"

static void
stream_from_tuple(HeapTuple tuple, TupleDesc desc, LedgerStream *stream)
{
	bool		isnull;
	Datum		d;

	stream->stream_id = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
	stream->last_seq = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
	stream->trimmed_seq = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
	stream->created_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 4, &isnull));
	d = SPI_getbinval(tuple, desc, 5, &isnull);
	stream->has_last_appended_at = !isnull;
	stream->last_appended_at = isnull ? 0 : DatumGetTimestampTz(d);
}

/*
 * Read a stream's row without locking it; false when it does not exist.
 * read_only (STABLE callers) reads with the current snapshot; otherwise a
 * new one is taken, as for any statement of a VOLATILE function.
 */
bool
ledger_stream_lookup(const char *name, bool read_only, LedgerStream *stream)
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
	rc = SPI_execute_plan(plan, args, NULL, read_only, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "stream lookup");
	if (SPI_processed == 0)
		return false;
	stream_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, stream);
	return true;
}

/*
 * Create the stream's row if it is missing (a no-op when it exists).  The
 * row carries no schema version: that is read from ledger.stream_settings
 * when needed, so creating a stream locks nothing but its own row.
 */
void
ledger_stream_create(const char *name)
{
	static SPIPlanPtr insert_plan = NULL;
	Datum		args[1];
	int			rc;

	if (insert_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		insert_plan = ledger_prepare_plan("INSERT INTO ledger.streams (name) VALUES ($1)"
										  " ON CONFLICT (name) DO NOTHING",
										  1, types);
	}
	args[0] = CStringGetTextDatum(name);
	rc = SPI_execute_plan(insert_plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_INSERT, "stream creation");
}

/*
 * Take the stream's append lock if nobody holds it; false, without
 * waiting, if an open transaction does.  For the background worker, which
 * must never queue behind an appender that is idle in transaction.
 */
bool
ledger_stream_try_lock(int32 stream_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	int			rc;

	if (plan == NULL)
	{
		Oid			types[1] = {INT4OID};

		plan = ledger_prepare_plan("SELECT 1 FROM ledger.streams"
								   " WHERE stream_id OPERATOR(pg_catalog.=) $1"
								   " FOR UPDATE SKIP LOCKED",
								   1, types);
	}
	args[0] = Int32GetDatum(stream_id);
	rc = SPI_execute_plan(plan, args, NULL, false, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "stream try-lock");
	return SPI_processed == 1;
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
