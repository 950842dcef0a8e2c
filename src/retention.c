/*-------------------------------------------------------------------------
 *
 * src/retention.c
 *		Entries leave the log only here: trim(), set_retention(),
 *		enforce_retention(), and the retention pass of the background
 *		worker.
 *
 * A trim always removes a prefix of the stream (every entry with id <=
 * before_id), so the stream's remaining seqs stay contiguous and count stays
 * last_seq - trimmed_seq.  The trim takes the stream row lock like an append,
 * so it never interleaves with one.  Each trim that deletes something writes
 * one transactional "ledger.trim" logical message, which the output plugin
 * turns into a single trim record instead of one per deleted row.
 *
 * Retention is set-based: one query finds, for every stream under a
 * retention limit, whether its cut moved past its first entry -- a point
 * lookup per stream, no scan -- and only those streams are trimmed, each in
 * a short transaction of its own, at most ledger.retention_batch entries at
 * a time.  A stream whose lock is held (an appender idle in transaction) is
 * skipped and retried later instead of stalling the worker.  The cut never
 * passes the position of any sink whose pattern matches the stream, in
 * whatever state: only drop_sink releases what a sink has yet to export.
 * With nothing to delete a pass computes when the oldest entry will be due
 * (max_age), so an idle database costs the worker no transaction at all.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "compat.h"

PG_FUNCTION_INFO_V1(ledger_trim);
PG_FUNCTION_INFO_V1(ledger_set_retention);
PG_FUNCTION_INFO_V1(ledger_enforce_retention);

int			ledger_retention_batch = 1000;
int			ledger_retention_interval_ms = 1000;

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
	ledger_log_logical_message("ledger.trim", msg.data, msg.len);
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

	if (!ledger_stream_lookup(stream_name, false, &stream) || before_id <= 0)
	{
		SPI_finish();
		return 0;
	}
	ledger_stream_lock(stream_name, 0, &stream);

	if (delete_plan == NULL)
	{
		Oid			types[3] = {INT4OID, INT8OID, INT8OID};
		Oid			utypes[3] = {INT4OID, INT8OID, TIMESTAMPTZOID};

		delete_plan = ledger_prepare_plan("WITH d AS (DELETE FROM ledger.entries"
										  " WHERE id OPERATOR(pg_catalog.=) ANY (SELECT e.id FROM ledger.entries e"
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
		ledger_mirror_note_trim(stream.stream_id, before_id);
	}

	SPI_finish();
	return deleted;
}

/*
 * A stream whose retention cut may have passed its first entry, as the
 * candidate query found it.
 */
typedef struct RetentionCandidate
{
	int32		stream_id;
	char	   *name;
	int64		count_cut;		/* max_entries: delete ids <= this; 0 = none */
	bool		has_max_age;
	Interval	max_age;
	bool		has_sink_floor;
	int64		sink_floor;		/* the sinks matching it exported up to here */
} RetentionCandidate;

typedef struct RetentionCandidates
{
	MemoryContext cxt;
	const char *pattern;		/* only streams it matches */
	List	   *list;
	bool		has_rules;
	TimestampTz next_due;		/* the oldest young entry comes of age, 0 = never */
} RetentionCandidates;

/*
 * One statement for every stream under a retention limit: the winning rule
 * (longest matching pattern), the id at the max_entries cut, the stream's
 * first entry and the smallest position of the sinks matching it -- all
 * point lookups, whatever the streams hold.
 */
#define CANDIDATES_SQL \
	"SELECT s.stream_id, s.name::pg_catalog.text," \
	" CASE WHEN r.max_entries IS NOT NULL" \
	" AND (s.last_seq OPERATOR(pg_catalog.-) s.trimmed_seq) OPERATOR(pg_catalog.>) r.max_entries" \
	" THEN (SELECT c.id FROM ledger.entries c WHERE c.stream_id OPERATOR(pg_catalog.=) s.stream_id" \
	" AND c.seq OPERATOR(pg_catalog.=) (s.last_seq OPERATOR(pg_catalog.-) r.max_entries)) END," \
	" r.max_age, f.id, f.created_at," \
	" (SELECT pg_catalog.min(k.position) FROM ledger.sinks k" \
	" WHERE ledger.pattern_rank(k.streams, s.name) OPERATOR(pg_catalog.>=) 0)" \
	" FROM ledger.streams s" \
	" CROSS JOIN LATERAL (SELECT st.max_entries, st.max_age FROM ledger.stream_settings st" \
	" WHERE (st.max_entries IS NOT NULL OR st.max_age IS NOT NULL)" \
	" AND ledger.pattern_rank(st.pattern, s.name) OPERATOR(pg_catalog.>=) 0" \
	" ORDER BY ledger.pattern_rank(st.pattern, s.name) DESC LIMIT 1) r" \
	" LEFT JOIN LATERAL (SELECT e.id, e.created_at FROM ledger.entries e" \
	" WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id" \
	" AND e.seq OPERATOR(pg_catalog.=) (s.trimmed_seq OPERATOR(pg_catalog.+) 1)) f ON true" \
	" WHERE s.last_seq OPERATOR(pg_catalog.>) s.trimmed_seq" \
	" AND ledger.pattern_rank($1, s.name) OPERATOR(pg_catalog.>=) 0"

/* Fill cands with the streams whose cut moved.  Caller is in a transaction. */
static void
find_candidates(RetentionCandidates *cands)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr rules_plan = NULL;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	Datum		args[1];
	bool		isnull;
	uint64		r;
	int			rc;

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		plan = ledger_prepare_plan(CANDIDATES_SQL, 1, types);
		rules_plan = ledger_prepare_plan("SELECT EXISTS (SELECT 1 FROM ledger.stream_settings"
										 " WHERE max_entries IS NOT NULL OR max_age IS NOT NULL)",
										 0, NULL);
	}
	rc = SPI_execute_plan(rules_plan, NULL, NULL, true, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "retention rules");
	cands->has_rules = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (!cands->has_rules)
	{
		SPI_finish();
		return;
	}

	args[0] = CStringGetTextDatum(cands->pattern);
	rc = SPI_execute_plan(plan, args, NULL, true, 0);
	ledger_spi_check(rc, SPI_OK_SELECT, "retention candidates");
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		RetentionCandidate c;
		int64		first_id;
		TimestampTz first_created;
		bool		age_due = false;
		Datum		d;

		CHECK_FOR_INTERRUPTS();
		memset(&c, 0, sizeof(c));
		c.stream_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		d = SPI_getbinval(tup, desc, 3, &isnull);
		c.count_cut = isnull ? 0 : DatumGetInt64(d);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		c.has_max_age = !isnull;
		if (c.has_max_age)
			c.max_age = *DatumGetIntervalP(d);
		d = SPI_getbinval(tup, desc, 5, &isnull);
		if (isnull)
			continue;			/* emptied meanwhile */
		first_id = DatumGetInt64(d);
		first_created = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));
		d = SPI_getbinval(tup, desc, 7, &isnull);
		c.has_sink_floor = !isnull;
		c.sink_floor = isnull ? 0 : DatumGetInt64(d);

		if (c.has_max_age)
		{
			TimestampTz due = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
																	  TimestampTzGetDatum(first_created),
																	  IntervalPGetDatum(&c.max_age)));

			if (due <= now)
				age_due = true;
			else if (cands->next_due == 0 || due < cands->next_due)
				cands->next_due = due;
		}
		/* a sink that has not exported the first entry holds everything */
		if (c.has_sink_floor && c.sink_floor < first_id)
			continue;
		if (c.count_cut < first_id && !age_due)
			continue;

		{
			MemoryContext old = MemoryContextSwitchTo(cands->cxt);
			RetentionCandidate *copy = palloc(sizeof(RetentionCandidate));

			*copy = c;
			copy->name = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
			cands->list = lappend(cands->list, copy);
			MemoryContextSwitchTo(old);
		}
	}
	SPI_finish();
}

/*
 * Trim one candidate stream by at most batch entries.  Returns the number
 * deleted, or -1 when the stream is locked by an open transaction (then
 * nothing waited and nothing changed).
 */
static int64
trim_candidate(RetentionCandidate *c, int64 batch)
{
	static SPIPlanPtr age_plan = NULL;
	int64		before_id = c->count_cut;

	ledger_spi_connect();
	if (!ledger_stream_try_lock(c->stream_id))
	{
		SPI_finish();
		return -1;
	}
	if (c->has_max_age)
	{
		TimestampTz cutoff;
		Datum		args[3];
		bool		isnull;
		uint64		r;
		int			rc;

		/* entries in id order, up to the first one young enough to stay */
		if (age_plan == NULL)
		{
			Oid			types[3] = {INT4OID, INT8OID, TIMESTAMPTZOID};

			age_plan = ledger_prepare_plan("SELECT e.id, e.created_at OPERATOR(pg_catalog.<) $3"
										   " FROM ledger.entries e"
										   " WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
										   " ORDER BY e.stream_id, e.id LIMIT $2",
										   3, types);
		}
		cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
														 TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
														 IntervalPGetDatum(&c->max_age)));
		args[0] = Int32GetDatum(c->stream_id);
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

	if (c->has_sink_floor)
		before_id = Min(before_id, c->sink_floor);
	if (before_id <= 0)
		return 0;
	return LedgerTrim(c->name, before_id, batch);
}

/* --- the background worker's retention pass ---------------------------- */

typedef struct TrimStep
{
	RetentionCandidate *candidate;
	int64		deleted;
} TrimStep;

static bool
find_candidates_in_transaction(void *arg)
{
	find_candidates((RetentionCandidates *) arg);
	return true;
}

static bool
trim_in_transaction(void *arg)
{
	TrimStep   *step = (TrimStep *) arg;

	step->deleted = trim_candidate(step->candidate, ledger_retention_batch);
	return true;
}

void
ledger_retention_pass(MemoryContext pass_cxt, LedgerRetentionPass *result)
{
	RetentionCandidates cands;
	ListCell   *lc;

	memset(result, 0, sizeof(*result));
	memset(&cands, 0, sizeof(cands));
	cands.cxt = pass_cxt;
	cands.pattern = "*";
	if (!ledger_worker_run_in_transaction(find_candidates_in_transaction, &cands,
										  "ledger: finding streams to trim"))
	{
		result->has_rules = true;	/* try again on the next wake-up */
		return;
	}
	result->has_rules = cands.has_rules;
	result->next_due = cands.next_due;

	foreach(lc, cands.list)
	{
		TrimStep	step;

		CHECK_FOR_INTERRUPTS();
		step.candidate = lfirst(lc);
		step.deleted = 0;
		if (!ledger_worker_run_in_transaction(trim_in_transaction, &step,
											  "ledger: enforcing retention"))
			continue;
		if (step.deleted < 0)
		{
			/* an appender holds the stream: come back soon, don't wait */
			result->locked_out = true;
			ereport(DEBUG1,
					(errmsg("ledger retention skips stream \"%s\": it is locked by an open transaction",
							step.candidate->name)));
		}
		else if (step.deleted >= ledger_retention_batch)
			result->more = true;
	}
}

/*
 * ledger.enforce_retention(streams text DEFAULT '*') RETURNS bigint
 *
 * Enforce the retention limits of the streams matching a pattern now, in
 * the caller's transaction, as the worker would; for servers without the
 * worker, and for tests.  Streams locked by open transactions are skipped,
 * never waited for.  Returns the number of entries deleted.
 */
Datum
ledger_enforce_retention(PG_FUNCTION_ARGS)
{
	RetentionCandidates cands;
	bool		is_prefix;
	ListCell   *lc;
	int64		total = 0;

	memset(&cands, 0, sizeof(cands));
	cands.cxt = CurrentMemoryContext;
	cands.pattern = ledger_check_pattern(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), &is_prefix);
	find_candidates(&cands);
	foreach(lc, cands.list)
	{
		int64		deleted;

		do
		{
			CHECK_FOR_INTERRUPTS();
			deleted = trim_candidate(lfirst(lc), ledger_retention_batch);
			if (deleted > 0)
				total += deleted;
		} while (deleted >= ledger_retention_batch);
	}
	PG_RETURN_INT64(total);
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

	if (!ledger_loaded_via_preload && !(PG_ARGISNULL(1) && PG_ARGISNULL(2)))
		ereport(WARNING,
				(errmsg("retention limits for \"%s\" are stored, but nothing enforces them",
						ledger_quote_value(pattern, strlen(pattern))),
				 errdetail("ledger is not in shared_preload_libraries, so no background worker runs."),
				 errhint("Add 'ledger' to shared_preload_libraries and restart, or call ledger.enforce_retention() regularly.")));
	PG_RETURN_VOID();
}
