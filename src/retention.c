/*-------------------------------------------------------------------------
 *
 * src/retention.c
 *		Entries leave the log only here: trim(), set_retention(), and the
 *		per-stream retention pass that the background worker runs.
 *
 * A trim always removes a prefix of the stream (every entry with id <=
 * before_id), so the stream's remaining seqs stay contiguous and count stays
 * last_seq - trimmed_seq.  The trim takes the stream row lock like an append,
 * so it never interleaves with one.  Each trim that deletes something writes
 * one transactional "ledger.trim" logical message, which the output plugin
 * turns into a single trim record instead of one per deleted row.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "replication/message.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"
#include "access/xact.h"

PG_FUNCTION_INFO_V1(ledger_trim);
PG_FUNCTION_INFO_V1(ledger_set_retention);

static void
log_trim_message(const char *stream_name, int64 before_id, int64 deleted)
{
	StringInfoData msg;

	if (!XLogLogicalInfoActive())
		return;
	initStringInfo(&msg);
	appendStringInfoString(&msg, "{\"stream\":");
	escape_json(&msg, stream_name);
	appendStringInfo(&msg, ",\"before_id\":" INT64_FORMAT ",\"deleted\":" INT64_FORMAT "}",
					 before_id, deleted);
	LogLogicalMessage("ledger.trim", msg.data, msg.len, true);
	pfree(msg.data);
}

/*
 * Delete the stream's entries with id <= before_id, at most max_rows of them
 * (the oldest first; 0 = no limit).  Returns the number deleted.
 */
int64
LedgerTrim(const char *stream_name, int64 before_id, int64 max_rows)
{
	static SPIPlanPtr delete_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	LedgerStream stream;
	Datum		args[3];
	bool		isnull;
	int64		deleted = 0;
	volatile int rc = 0;

	ledger_spi_connect();

	if (!ledger_stream_lookup(stream_name, &stream) || before_id <= 0)
	{
		SPI_finish();
		return 0;
	}
	ledger_stream_lock(stream_name, 0, &stream);

	if (delete_plan == NULL)
	{
		Oid			types[3] = {INT4OID, INT8OID, INT8OID};
		Oid			utypes[3] = {INT4OID, INT8OID, TIMESTAMPTZOID};

		delete_plan = ledger_prepare_plan("WITH d AS (DELETE FROM ledger.entries WHERE id IN"
										  " (SELECT e.id FROM ledger.entries e"
										  " WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
										  " AND e.id OPERATOR(pg_catalog.<=) $2"
										  " ORDER BY e.id LIMIT $3)"
										  " RETURNING id, seq, created_at)"
										  " SELECT pg_catalog.count(*), pg_catalog.max(d.seq),"
										  " (pg_catalog.array_agg(d.created_at ORDER BY d.id DESC))[1] FROM d",
										  3, types);
		update_plan = ledger_prepare_plan("UPDATE ledger.streams SET trimmed_seq = $2,"
										  " last_appended_at = CASE WHEN $2 OPERATOR(pg_catalog.=) last_seq"
										  " THEN $3 ELSE last_appended_at END"
										  " WHERE stream_id OPERATOR(pg_catalog.=) $1",
										  3, utypes);
	}

	args[0] = Int32GetDatum(stream.stream_id);
	args[1] = Int64GetDatum(before_id);
	args[2] = Int64GetDatum(max_rows > 0 ? max_rows : PG_INT64_MAX);
	ledger_entries_writable(true);
	PG_TRY();
	{
		rc = SPI_execute_plan(delete_plan, args, NULL, false, 0);
	}
	PG_FINALLY();
	{
		ledger_entries_writable(false);
	}
	PG_END_TRY();
	ledger_spi_check(rc, SPI_OK_SELECT, "trim");

	deleted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (deleted > 0)
	{
		int64		new_trimmed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
															  SPI_tuptable->tupdesc, 2, &isnull));
		Datum		last_created = SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 3, &isnull);

		args[1] = Int64GetDatum(new_trimmed);
		args[2] = last_created;
		rc = SPI_execute_plan(update_plan, args, NULL, false, 0);
		ledger_spi_check(rc, SPI_OK_UPDATE, "trim bookkeeping");
		log_trim_message(stream_name, before_id, deleted);
	}

	SPI_finish();
	return deleted;
}

/*
 * One retention step for a stream: find the cut that max_entries and
 * max_age ask for, and trim at most batch entries below it.  The cut keeps
 * trims a prefix of the stream: with max_age, entries are walked in id
 * order and the cut stops at the first one young enough to stay.  An
 * active sink that matches the stream holds the cut at its position, so the
 * export (an archive) keeps every entry; paused sinks and sinks in error do
 * not hold retention back.
 */
int64
LedgerEnforceRetention(const char *stream_name, bool has_max_entries, int64 max_entries,
					   Interval *max_age, int64 export_floor, int64 batch)
{
	static SPIPlanPtr seq_plan = NULL;
	static SPIPlanPtr age_plan = NULL;
	LedgerStream stream;
	int64		before_id = 0;
	Datum		args[3];
	bool		isnull;
	int			rc;

	ledger_spi_connect();
	if (seq_plan == NULL)
	{
		Oid			types[3] = {INT4OID, INT8OID, TIMESTAMPTZOID};

		seq_plan = ledger_prepare_plan("SELECT e.id FROM ledger.entries e"
									   " WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
									   " AND e.seq OPERATOR(pg_catalog.=) $2",
									   2, types);
		age_plan = ledger_prepare_plan("SELECT e.id, e.created_at OPERATOR(pg_catalog.<) $3 FROM ledger.entries e"
									   " WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
									   " ORDER BY e.id LIMIT $2",
									   3, types);
	}
	if (!ledger_stream_lookup(stream_name, &stream))
	{
		SPI_finish();
		return 0;
	}
	args[0] = Int32GetDatum(stream.stream_id);

	if (has_max_entries && stream.last_seq - stream.trimmed_seq > max_entries)
	{
		/* every entry with seq <= last_seq - max_entries goes */
		int64		cut_seq = Min(stream.last_seq - max_entries, stream.trimmed_seq + batch);

		args[1] = Int64GetDatum(cut_seq);
		rc = SPI_execute_plan(seq_plan, args, NULL, true, 1);
		ledger_spi_check(rc, SPI_OK_SELECT, "retention cut");
		if (SPI_processed == 1)
			before_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (max_age != NULL)
	{
		TimestampTz cutoff;
		uint64		r;

		cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
														 TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
														 IntervalPGetDatum(max_age)));
		args[1] = Int64GetDatum(batch);
		args[2] = TimestampTzGetDatum(cutoff);
		rc = SPI_execute_plan(age_plan, args, NULL, true, 0);
		ledger_spi_check(rc, SPI_OK_SELECT, "retention age scan");
		for (r = 0; r < SPI_processed; r++)
		{
			if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull)))
				break;
			before_id = Max(before_id,
							DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull)));
		}
	}
	SPI_finish();

	/* never remove what an active sink has yet to export (-1: no sink) */
	if (export_floor >= 0)
		before_id = Min(before_id, export_floor);
	if (before_id <= 0)
		return 0;
	return LedgerTrim(stream_name, before_id, batch);
}

Datum
ledger_trim(PG_FUNCTION_ARGS)
{
	char	   *stream_name;

	stream_name = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("before_id must not be null")));
	PG_RETURN_INT64(LedgerTrim(stream_name, PG_GETARG_INT64(1), 0));
}

Datum
ledger_set_retention(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *pattern;
	bool		is_prefix;
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	int			rc;

	pattern = ledger_check_pattern(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), &is_prefix);
	if (!PG_ARGISNULL(1) && PG_GETARG_INT64(1) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_entries must not be negative, not " INT64_FORMAT, PG_GETARG_INT64(1))));
	if (!PG_ARGISNULL(2))
	{
		Interval   *age = PG_GETARG_INTERVAL_P(2);

		if (age->month < 0 || age->day < 0 || age->time < 0 ||
			(age->month == 0 && age->day == 0 && age->time == 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_age must be a positive interval, not \"%s\"",
							DatumGetCString(DirectFunctionCall1(interval_out, PG_GETARG_DATUM(2))))));
	}

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[3] = {TEXTOID, INT8OID, INTERVALOID};

		plan = ledger_prepare_plan("INSERT INTO ledger.stream_settings AS s (pattern, max_entries, max_age)"
								   " VALUES ($1, $2, $3) ON CONFLICT (pattern) DO UPDATE"
								   " SET max_entries = EXCLUDED.max_entries, max_age = EXCLUDED.max_age,"
								   " updated_at = pg_catalog.now()",
								   3, types);
	}
	args[0] = CStringGetTextDatum(pattern);
	args[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	args[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	if (PG_ARGISNULL(1))
		nulls[1] = 'n';
	if (PG_ARGISNULL(2))
		nulls[2] = 'n';
	rc = SPI_execute_plan(plan, args, nulls, false, 0);
	ledger_spi_check(rc, SPI_OK_INSERT, "set_retention");
	SPI_finish();
	PG_RETURN_VOID();
}
