/*-------------------------------------------------------------------------
 *
 * src/export.c
 *		The sink driver of the background worker: one export pass moves
 *		each active sink forward by at most one batch.
 *
 * Exactly-once export: entries are read only below the read_all horizon
 * (horizon.c), in id order, in batches.  A batch and the sink's position
 * are written to the target in one target transaction (SQLite) or as
 * idempotent documents whose _id derives from the entry id (MongoDB); the
 * worker then records the position in ledger.sinks.  After a crash it
 * resumes from the larger of the two positions.
 *
 * Memory: the pass context (the worker's) holds the sink list of one pass;
 * each sink's step runs in a step context reset after the step, so a batch
 * never outlives its sink's turn.  Open targets live in TopMemoryContext
 * (SinkState) and are closed when their sink is dropped or changed, and at
 * exit.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "datatype/timestamp.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "sink.h"

int			ledger_export_batch = 1000;

typedef struct SinkState
{
	char	   *name;
	char	   *identity;		/* kind|target|options|created_at: reopen on change */
	const LedgerSinkOps *ops;
	void	   *handle;
	int64		target_position;
	int			failures;
	TimestampTz retry_at;
} SinkState;

static SinkState *sink_states = NULL;
static int	nsink_states = 0;
static int	maxsink_states = 0;

static void
close_all_sinks(int code, Datum arg)
{
	int			i;

	for (i = 0; i < nsink_states; i++)
		if (sink_states[i].handle)
			sink_states[i].ops->close(sink_states[i].handle);
	nsink_states = 0;
}


typedef struct SinkRow
{
	char	   *name;
	char	   *kind;
	char	   *target;
	char	   *streams;
	char	   *options;
	char	   *state;
	int64		position;
	char	   *identity;
} SinkRow;

typedef struct SinkList
{
	MemoryContext cxt;
	List	   *sinks;
	bool		extension_missing;
} SinkList;

static bool
load_sinks(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SinkList   *list = (SinkList *) arg;
	uint64		r;
	int			rc;

	if (!ledger_worker_extension_is_current())
	{
		list->extension_missing = true;
		return true;
	}
	ledger_spi_connect();
	if (plan == NULL)
		plan = ledger_prepare_plan("SELECT name::pg_catalog.text, kind, target, streams::pg_catalog.text,"
								   " options::pg_catalog.text, state, position, created_at::pg_catalog.text"
								   " FROM ledger.sinks ORDER BY name", 0, NULL);
	rc = SPI_execute_plan(plan, NULL, NULL, true, 0);
	ledger_spi_check(rc, SPI_OK_SELECT, "sink list");
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(list->cxt);
		SinkRow    *sink = palloc0(sizeof(SinkRow));
		bool		isnull;

		sink->name = SPI_getvalue(tup, desc, 1);
		sink->kind = SPI_getvalue(tup, desc, 2);
		sink->target = SPI_getvalue(tup, desc, 3);
		sink->streams = SPI_getvalue(tup, desc, 4);
		sink->options = SPI_getvalue(tup, desc, 5);
		sink->state = SPI_getvalue(tup, desc, 6);
		sink->position = DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull));
		sink->identity = psprintf("%s|%s|%s|%s", sink->kind, sink->target, sink->options,
								  SPI_getvalue(tup, desc, 8));
		list->sinks = lappend(list->sinks, sink);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return true;
}

static SinkState *
sink_state_for(SinkRow *sink)
{
	int			i;
	SinkState  *st;

	for (i = 0; i < nsink_states; i++)
	{
		st = &sink_states[i];
		if (strcmp(st->name, sink->name) != 0)
			continue;
		if (strcmp(st->identity, sink->identity) == 0)
			return st;
		/* recreated with other settings: start over */
		if (st->handle)
			st->ops->close(st->handle);
		pfree(st->identity);
		st->identity = MemoryContextStrdup(TopMemoryContext, sink->identity);
		st->handle = NULL;
		st->failures = 0;
		st->retry_at = 0;
		return st;
	}
	if (sink_states == NULL)
	{
		maxsink_states = 8;
		sink_states = MemoryContextAlloc(TopMemoryContext, sizeof(SinkState) * maxsink_states);
		before_shmem_exit(close_all_sinks, (Datum) 0);
	}
	else if (nsink_states == maxsink_states)
	{
		maxsink_states *= 2;
		sink_states = repalloc(sink_states, sizeof(SinkState) * maxsink_states);
	}
	st = &sink_states[nsink_states++];
	memset(st, 0, sizeof(SinkState));
	st->name = MemoryContextStrdup(TopMemoryContext, sink->name);
	st->identity = MemoryContextStrdup(TopMemoryContext, sink->identity);
	st->ops = ledger_sink_ops(sink->kind);
	return st;
}

/* Close the states of sinks that were dropped. */
static void
forget_dropped_sinks(List *sinks)
{
	int			i = 0;

	while (i < nsink_states)
	{
		ListCell   *lc;
		bool		present = false;

		foreach(lc, sinks)
			if (strcmp(((SinkRow *) lfirst(lc))->name, sink_states[i].name) == 0)
				present = true;
		if (present)
		{
			i++;
			continue;
		}
		if (sink_states[i].handle)
			sink_states[i].ops->close(sink_states[i].handle);
		pfree(sink_states[i].name);
		pfree(sink_states[i].identity);
		sink_states[i] = sink_states[--nsink_states];
	}
}

typedef struct SinkStep
{
	SinkRow    *sink;
	SinkState  *state;
	MemoryContext cxt;
	/* filled by fetch_batch */
	LedgerExportRow *rows;
	int			nrows;
	int64		scanned_to;		/* every matching id <= this is in rows */
	int64		horizon;		/* the read_all horizon at fetch time */
	/* for record_* */
	char	   *error;
} SinkStep;

static int64
unix_micros(TimestampTz ts)
{
	return ts + ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
}

static bool
fetch_batch(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SinkStep   *step = (SinkStep *) arg;
	int64		from = Max(step->sink->position, step->state->target_position);
	int64		horizon;
	int64		window_end;
	Datum		args[5];
	uint64		r;
	int			rc;

	step->nrows = 0;
	step->scanned_to = from;
	ledger_spi_connect();
	horizon = ledger_horizon();
	step->horizon = horizon;
	if (horizon <= from + 1)
	{
		SPI_finish();
		return true;
	}
	/*
	 * Scan a bounded window of ids per batch, so that a batch costs the
	 * same whatever plan the statistics of a freshly loaded table suggest.
	 */
	window_end = Min(horizon - 1, from + (int64) ledger_export_batch * 4);

	if (plan == NULL)
	{
		Oid			types[5] = {INT8OID, INT8OID, TEXTOID, INT8OID, INT8OID};

		plan = ledger_prepare_plan("SELECT e.id, s.name::pg_catalog.text, e.seq, e.payload::pg_catalog.text,"
								   " e.order_key::pg_catalog.text, e.dedup_key::pg_catalog.text, e.schema_version,"
								   " e.metadata::pg_catalog.text, pg_catalog.to_jsonb(e.tags)::pg_catalog.text,"
								   " e.annotations::pg_catalog.text, e.created_at, e.updated_at"
								   " FROM ledger.entries e JOIN ledger.streams s"
								   " ON s.stream_id OPERATOR(pg_catalog.=) e.stream_id"
								   " WHERE e.id OPERATOR(pg_catalog.>) $1 AND e.id OPERATOR(pg_catalog.<=) $5"
								   " AND ledger.pattern_rank($3, s.name) OPERATOR(pg_catalog.>=) 0"
								   " ORDER BY e.id LIMIT $4",
								   5, types);
	}
	args[0] = Int64GetDatum(from);
	args[1] = Int64GetDatum(horizon);
	args[2] = CStringGetTextDatum(step->sink->streams);
	args[3] = Int64GetDatum(ledger_export_batch);
	args[4] = Int64GetDatum(window_end);

	/*
	 * Read with a snapshot taken after the horizon: the transaction's own
	 * snapshot is older, and could miss an entry below the horizon that
	 * committed in between -- which the position would then step over.
	 */
	PushActiveSnapshot(GetLatestSnapshot());
	rc = SPI_execute_plan(plan, args, NULL, true, 0);
	PopActiveSnapshot();
	ledger_spi_check(rc, SPI_OK_SELECT, "export batch");

	{
		MemoryContext old = MemoryContextSwitchTo(step->cxt);

		step->rows = palloc0(sizeof(LedgerExportRow) * Max(SPI_processed, 1));
		for (r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			LedgerExportRow *row = &step->rows[r];
			bool		isnull;
			Datum		d;

			row->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			row->stream = SPI_getvalue(tup, desc, 2);
			row->seq = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			row->payload_json = SPI_getvalue(tup, desc, 4);
			row->order_key = SPI_getvalue(tup, desc, 5);
			row->dedup_key = SPI_getvalue(tup, desc, 6);
			row->schema_version = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
			row->metadata_json = SPI_getvalue(tup, desc, 8);
			row->tags_json = SPI_getvalue(tup, desc, 9);
			row->annotations_json = SPI_getvalue(tup, desc, 10);
			row->created_at_us = unix_micros(DatumGetTimestampTz(SPI_getbinval(tup, desc, 11, &isnull)));
			d = SPI_getbinval(tup, desc, 12, &isnull);
			row->has_updated_at = !isnull;
			row->updated_at_us = isnull ? 0 : unix_micros(DatumGetTimestampTz(d));
		}
		MemoryContextSwitchTo(old);
	}
	step->nrows = (int) SPI_processed;
	/* a short batch means every matching entry of the window is in it */
	step->scanned_to = step->nrows < ledger_export_batch ? window_end :
		step->rows[step->nrows - 1].id;
	SPI_finish();
	return true;
}

static bool
record_success(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SinkStep   *step = (SinkStep *) arg;
	Datum		args[3];
	int			rc;

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[3] = {TEXTOID, INT8OID, INT8OID};

		plan = ledger_prepare_plan("UPDATE ledger.sinks SET position = GREATEST(position, $2),"
								   " exported_total = exported_total OPERATOR(pg_catalog.+) $3,"
								   " state = CASE WHEN state OPERATOR(pg_catalog.=) 'error' THEN 'active' ELSE state END"
								   " WHERE name OPERATOR(pg_catalog.=) $1",
								   3, types);
	}
	args[0] = CStringGetTextDatum(step->sink->name);
	args[1] = Int64GetDatum(step->scanned_to);
	args[2] = Int64GetDatum(step->nrows);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_UPDATE, "sink position update");
	SPI_finish();
	return true;
}

static bool
record_error(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SinkStep   *step = (SinkStep *) arg;
	Datum		args[2];
	int			rc;

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[2] = {TEXTOID, TEXTOID};

		plan = ledger_prepare_plan("UPDATE ledger.sinks SET last_error = $2, last_error_at = pg_catalog.now(),"
								   " state = CASE WHEN state OPERATOR(pg_catalog.=) 'paused' THEN state ELSE 'error' END"
								   " WHERE name OPERATOR(pg_catalog.=) $1",
								   2, types);
	}
	args[0] = CStringGetTextDatum(step->sink->name);
	args[1] = CStringGetTextDatum(step->error);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_UPDATE, "sink error update");
	SPI_finish();
	return true;
}

static void
sink_failed(SinkStep *step, const char *message)
{
	SinkState  *st = step->state;
	int			backoff_s = 1 << Min(st->failures, 6);	/* 1 s .. 64 s */

	st->failures++;
	st->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff_s * 1000);
	if (st->handle)
	{
		st->ops->close(st->handle);
		st->handle = NULL;
	}
	step->error = pstrdup(message);
	ereport(LOG,
			(errmsg("ledger sink \"%s\" failed, retrying in %d s: %s",
					step->sink->name, backoff_s, message)));
	(void) ledger_worker_run_in_transaction(record_error, step, "ledger: recording sink error");
}

/*
 * Export one batch to one sink; true when it has more to export now.
 * *next_retry is lowered to the sink's retry time when it waits for one.
 */
static bool
export_step(SinkRow *sink, MemoryContext cxt, TimestampTz *next_retry)
{
	SinkState  *st = sink_state_for(sink);
	SinkStep	step;
	char		err[1024];

	if (st->ops == NULL || strcmp(sink->state, "paused") == 0)
		return false;
	/* resume_sink() sets the state back to active: retry at once */
	if (strcmp(sink->state, "active") == 0 && st->failures > 0 && st->handle == NULL)
		st->retry_at = 0;
	if (st->retry_at > GetCurrentTimestamp())
	{
		if (*next_retry == 0 || st->retry_at < *next_retry)
			*next_retry = st->retry_at;
		return false;
	}

	memset(&step, 0, sizeof(step));
	step.sink = sink;
	step.state = st;
	step.cxt = cxt;

	if (st->handle == NULL)
	{
		int64		pos = 0;

		err[0] = '\0';
		st->handle = st->ops->open(sink->name, sink->target, sink->options, err, sizeof(err));
		if (st->handle == NULL ||
			st->ops->position(st->handle, &pos, err, sizeof(err)) != 0)
		{
			sink_failed(&step, err);
			*next_retry = (*next_retry == 0 || st->retry_at < *next_retry) ?
				st->retry_at : *next_retry;
			return false;
		}
		st->target_position = pos;
	}

	if (!ledger_worker_run_in_transaction(fetch_batch, &step, "ledger: reading an export batch"))
		return false;
	if (step.nrows > 0)
	{
		err[0] = '\0';
		if (st->ops->write(st->handle, step.rows, step.nrows, err, sizeof(err)) != 0)
		{
			sink_failed(&step, err);
			*next_retry = (*next_retry == 0 || st->retry_at < *next_retry) ?
				st->retry_at : *next_retry;
			return false;
		}
		st->target_position = step.rows[step.nrows - 1].id;
	}
	st->failures = 0;
	if (step.scanned_to > sink->position || step.nrows > 0 || strcmp(sink->state, "error") == 0)
		(void) ledger_worker_run_in_transaction(record_success, &step, "ledger: recording sink position");
	/* more to do now: a full batch, or a window that ended below the horizon */
	return step.nrows >= ledger_export_batch || step.scanned_to < step.horizon - 1;
}

/*
 * One export pass over every sink of the database.  Runs in the worker's
 * pass context; each sink's step in a step context of its own.
 */
void
ledger_export_pass(MemoryContext pass_cxt, LedgerExportPass *result)
{
	SinkList	list;
	ListCell   *lc;
	MemoryContext step_cxt;

	memset(result, 0, sizeof(*result));
	list.cxt = pass_cxt;
	list.sinks = NIL;
	list.extension_missing = false;
	if (!ledger_worker_run_in_transaction(load_sinks, &list, "ledger: loading sinks"))
	{
		/* keep the worker: the next wake-up tries again */
		result->has_sinks = true;
		return;
	}
	result->extension_missing = list.extension_missing;
	result->has_sinks = (list.sinks != NIL);
	forget_dropped_sinks(list.sinks);

	step_cxt = AllocSetContextCreate(pass_cxt, "ledger export step", ALLOCSET_DEFAULT_SIZES);
	foreach(lc, list.sinks)
	{
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(step_cxt);
		if (export_step((SinkRow *) lfirst(lc), step_cxt, &result->next_retry))
			result->more = true;
		MemoryContextSwitchTo(old);
		MemoryContextReset(step_cxt);
	}
	MemoryContextDelete(step_cxt);
}
