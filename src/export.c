/*-------------------------------------------------------------------------
 *
 * src/export.c
 *		The sink driver of the background worker: one export pass moves
 *		each active sink forward by at most one batch of items.
 *
 * A sink mirrors the log.  Its items, in one id order, are the entries of
 * its streams and the changes recorded by mirror.c (side-data updates and
 * trims, with ids drawn from the same sequence after the change's locks),
 * all read below the read_all horizon (horizon.c) with a snapshot taken
 * after the horizon, so no item below it is ever missed.  An UPDATE item
 * carries the entry's current side data and a TRIM the stream's highest
 * deleted id, so applying an item again is harmless.
 *
 * Positions: the target holds the sink's cursor (sink.h), written with or
 * after the items; ledger.sinks.position is set to it afterwards, so the
 * cursor is never behind the position.  On opening a sink the driver
 * checks the target against the server before it trusts it:
 *	- a cursor missing or behind the position: the target lost what it was
 *	  sent (a file deleted, replaced or restored);
 *	- a cursor beyond the newest id this server ever handed out, or rows of
 *	  the sink's streams that the server does not have and no pending trim
 *	  explains: the target is ahead of this server (a failover to a lagging
 *	  replica);
 *	- rows that no ledger sink wrote (sink.h scan()).
 * Any of these, and any divergence a sink reports while applying, puts the
 * sink in state 'error' with a message naming the entry; the worker keeps
 * retrying with back-off and never skips.  It resumes from the position,
 * not the cursor: what lies between is sent again and verified.
 *
 * Sinks created while a change was being made: a change records itself
 * only when a sink exists, judged with a fresh snapshot after publishing
 * its horizon floor (mirror.c).  So when the driver opens a sink it draws
 * a barrier id and exports nothing until the horizon passes it: by then
 * every transaction that could have missed the sink has ended.
 *
 * Threads and memory: every sink call runs on the sink's helper thread
 * (sink_thread.c).  Applying a batch is handed over without waiting: the
 * next step reads the following batch while the thread writes, then waits
 * for the write and records it before handing over the next, so reading
 * the log and writing the target overlap.  A sink's batches live in two
 * contexts of its own, used in turn (one holds the batch in flight, one
 * the batch being read), each reset once its batch is recorded or
 * dropped; the pass context holds the sink list of one pass, and a step
 * context what one step needs besides.  Batches are bounded by
 * ledger.export_batch items and ledger.export_batch_bytes bytes, read
 * through a cursor.  Open targets, their threads and their batch contexts
 * live in TopMemoryContext (SinkState, one allocation per sink, since a
 * call in flight points at it) until their sink is paused, dropped or
 * changed, or the worker exits.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "sink.h"
#include "sink_thread.h"

int			ledger_export_batch = 1000;
int			ledger_export_batch_bytes = 8 * 1024 * 1024;

/* scan() rounds when opening a sink: up to this many target rows checked */
#define OPEN_SCAN_ROUNDS 100

typedef struct SinkState
{
	char	   *name;
	char	   *identity;		/* kind|target|options|created_at: reopen on change */
	const LedgerSinkOps *ops;
	LedgerSinkThread *thread;
	void	   *handle;
	int64		scanned;		/* every id <= this is applied or not the sink's */
	int64		barrier;		/* export nothing before the horizon passes it */
	int64		resent_upto;	/* the target's cursor when opened */
	int			failures;
	TimestampTz retry_at;
	/* the batch the helper thread is applying, while the next is read */
	struct SinkCall *flight;	/* NULL when none */
	LedgerExportRow *flight_rows;
	int			flight_inserts;
	MemoryContext batch_cxt[2]; /* one holds the flight, one the next batch */
	int			flight_cxt;
} SinkState;

static SinkState **sink_states = NULL; /* each apart: calls in flight point at them */
static int	nsink_states = 0;
static int	maxsink_states = 0;

/* --- calls on the helper thread ------------------------------------- */

typedef enum SinkCallKind
{
	CALL_OPEN,
	CALL_CURSOR,
	CALL_SCAN,
	CALL_APPLY,
	CALL_CLOSE
} SinkCallKind;

typedef struct SinkCall
{
	SinkCallKind kind;
	SinkState  *st;
	/* OPEN */
	const char *name;
	const char *target;
	const char *streams;
	const char *options;
	/* SCAN */
	int64		after;
	int64		ids[LEDGER_SINK_SCAN_MAX];
	int			nids;
	/* APPLY */
	const LedgerExportRow *rows;
	int			nrows;
	/* CURSOR */
	int64		cursor;
	int			present;
	/* results */
	int			rc;
	LedgerSinkFailure failure;
	char		err[1024];
} SinkCall;

/* Runs on the helper thread: plain C only. */
static void
run_call(void *arg)
{
	SinkCall   *c = arg;
	const LedgerSinkOps *ops = c->st->ops;
	int64_t		v;

	c->err[0] = '\0';
	c->rc = 0;
	c->failure.kind = LEDGER_SINK_TRANSIENT;
	c->failure.index = -1;
	switch (c->kind)
	{
		case CALL_OPEN:
			c->st->handle = ops->open(c->name, c->target, c->streams, c->options,
									  c->err, sizeof(c->err));
			c->rc = c->st->handle ? 0 : -1;
			break;
		case CALL_CURSOR:
			c->rc = ops->cursor(c->st->handle, &v, &c->present, c->err, sizeof(c->err));
			c->cursor = v;
			break;
		case CALL_SCAN:
			{
				int64_t		ids[LEDGER_SINK_SCAN_MAX];
				int			i;

				c->rc = ops->scan(c->st->handle, c->after, ids, &c->nids, &c->failure,
								  c->err, sizeof(c->err));
				for (i = 0; i < c->nids; i++)
					c->ids[i] = ids[i];
				break;
			}
		case CALL_APPLY:
			c->rc = ops->apply(c->st->handle, c->rows, c->nrows, &c->failure,
							   c->err, sizeof(c->err));
			break;
		case CALL_CLOSE:
			ops->close(c->st->handle);
			c->st->handle = NULL;
			break;
	}
}

/* pg_stat_activity shows which sink the worker waits for */
static int
sink_call(SinkState *st, SinkCall *c)
{
	static const char *const what[] = {"opening", "reading the cursor of", "checking",
	"writing to", "closing"};

	if (st->thread == NULL)
		st->thread = ledger_sink_thread_create();
	c->st = st;
	pgstat_report_activity(STATE_RUNNING, psprintf("ledger: %s sink %s", what[c->kind], st->name));
	ledger_sink_thread_run(st->thread, run_call, c);
	pgstat_report_activity(STATE_IDLE, NULL);
	return c->rc;
}

static void
close_sink(SinkState *st)
{
	/* a batch in flight is let finish; not recorded, it is sent again */
	if (st->flight != NULL)
	{
		ledger_sink_thread_wait(st->thread);
		pfree(st->flight);
		st->flight = NULL;
		MemoryContextReset(st->batch_cxt[st->flight_cxt]);
	}
	if (st->handle != NULL)
	{
		SinkCall   *c = palloc0(sizeof(SinkCall));

		c->kind = CALL_CLOSE;
		(void) sink_call(st, c);
		pfree(c);
	}
}

static void
forget_sink_state(SinkState *st)
{
	close_sink(st);
	if (st->thread != NULL)
		ledger_sink_thread_destroy(st->thread);
	MemoryContextDelete(st->batch_cxt[0]);
	MemoryContextDelete(st->batch_cxt[1]);
	pfree(st->name);
	pfree(st->identity);
}

/*
 * At exit: close what no helper thread is using.  A handle still in use
 * belongs to a call that the exit interrupted; the process ends with it.
 */
static void
close_all_sinks(int code, Datum arg)
{
	int			i;

	for (i = 0; i < nsink_states; i++)
	{
		SinkState  *st = sink_states[i];

		if (st->thread != NULL && ledger_sink_thread_busy(st->thread))
			continue;
		if (st->handle != NULL)
			st->ops->close(st->handle);
		st->handle = NULL;
	}
	nsink_states = 0;
}

/* --- the sink list --------------------------------------------------- */

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
		st = sink_states[i];
		if (strcmp(st->name, sink->name) != 0)
			continue;
		if (strcmp(st->identity, sink->identity) == 0)
			return st;
		/* recreated with other settings: start over */
		close_sink(st);
		pfree(st->identity);
		st->identity = MemoryContextStrdup(TopMemoryContext, sink->identity);
		st->ops = ledger_sink_ops(sink->kind);
		st->failures = 0;
		st->retry_at = 0;
		return st;
	}
	if (sink_states == NULL)
	{
		maxsink_states = 8;
		sink_states = MemoryContextAlloc(TopMemoryContext, sizeof(SinkState *) * maxsink_states);
		before_shmem_exit(close_all_sinks, (Datum) 0);
	}
	else if (nsink_states == maxsink_states)
	{
		maxsink_states *= 2;
		sink_states = repalloc(sink_states, sizeof(SinkState *) * maxsink_states);
	}
	st = MemoryContextAllocZero(TopMemoryContext, sizeof(SinkState));
	sink_states[nsink_states++] = st;
	st->batch_cxt[0] = AllocSetContextCreate(TopMemoryContext, "ledger export batch", ALLOCSET_DEFAULT_SIZES);
	st->batch_cxt[1] = AllocSetContextCreate(TopMemoryContext, "ledger export batch", ALLOCSET_DEFAULT_SIZES);
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
			if (strcmp(((SinkRow *) lfirst(lc))->name, sink_states[i]->name) == 0)
				present = true;
		if (present)
		{
			i++;
			continue;
		}
		forget_sink_state(sink_states[i]);
		pfree(sink_states[i]);
		sink_states[i] = sink_states[--nsink_states];
	}
}

/* --- one step -------------------------------------------------------- */

typedef struct SinkStep
{
	SinkRow    *sink;
	SinkState  *state;
	MemoryContext cxt;
	/* filled by fetch_batch */
	LedgerExportRow *rows;
	int			nrows;
	int			ninserts;
	int64		scanned_to;		/* every item <= this is in rows */
	int64		horizon;		/* the read_all horizon at fetch time */
	/* opening checks */
	int64		server_last;	/* the newest id this server handed out */
	int64	   *check_ids;
	int			ncheck_ids;
	int64		unexplained;	/* a target row the server cannot account for */
	int64		missing_id;		/* MISSING re-check: entry id; out: still there? */
	bool		missing_exists;
	/* for record_* */
	char	   *error;
} SinkStep;

static int64
unix_micros(TimestampTz ts)
{
	return ts + ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
}

#define ENTRIES_SQL \
	"SELECT e.id, s.name::pg_catalog.text, e.seq, e.payload::pg_catalog.text," \
	" e.order_key::pg_catalog.text, e.dedup_key::pg_catalog.text, e.schema_version," \
	" e.metadata::pg_catalog.text, pg_catalog.to_jsonb(e.tags)::pg_catalog.text," \
	" e.annotations::pg_catalog.text, e.created_at, e.updated_at" \
	" FROM ledger.entries e JOIN ledger.streams s ON s.stream_id OPERATOR(pg_catalog.=) e.stream_id" \
	" WHERE e.id OPERATOR(pg_catalog.>) $1 AND e.id OPERATOR(pg_catalog.<=) $2" \
	" AND ledger.pattern_rank($3, s.name) OPERATOR(pg_catalog.>=) 0" \
	" ORDER BY e.id"

#define CHANGES_SQL \
	"SELECT c.id, c.kind, c.entry_id, s.name::pg_catalog.text," \
	" pg_catalog.to_jsonb(e.tags)::pg_catalog.text, e.annotations::pg_catalog.text," \
	" e.updated_at, e.id IS NOT NULL" \
	" FROM ledger.changes c JOIN ledger.streams s ON s.stream_id OPERATOR(pg_catalog.=) c.stream_id" \
	" LEFT JOIN ledger.entries e ON c.kind OPERATOR(pg_catalog.=) 'update'" \
	" AND e.id OPERATOR(pg_catalog.=) c.entry_id" \
	" WHERE c.id OPERATOR(pg_catalog.>) $1 AND c.id OPERATOR(pg_catalog.<=) $2" \
	" AND ledger.pattern_rank($3, s.name) OPERATOR(pg_catalog.>=) 0" \
	" ORDER BY c.id LIMIT $4"

/*
 * A text column as a C string.  Not SPI_getvalue(): that looks the type's
 * output function up for every value, which is most of the cost of
 * reading a batch.
 */
static char *
text_column(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static void
fill_entry(LedgerExportRow *row, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	Datum		d;

	row->op = LEDGER_EXPORT_INSERT;
	row->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	row->position = row->id;
	row->stream = text_column(tup, desc, 2);
	row->seq = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	row->payload_json = text_column(tup, desc, 4);
	row->order_key = text_column(tup, desc, 5);
	row->dedup_key = text_column(tup, desc, 6);
	row->schema_version = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
	row->metadata_json = text_column(tup, desc, 8);
	row->tags_json = text_column(tup, desc, 9);
	row->annotations_json = text_column(tup, desc, 10);
	row->created_at_us = unix_micros(DatumGetTimestampTz(SPI_getbinval(tup, desc, 11, &isnull)));
	d = SPI_getbinval(tup, desc, 12, &isnull);
	row->has_updated_at = !isnull;
	row->updated_at_us = isnull ? 0 : unix_micros(DatumGetTimestampTz(d));
}

/* false when the change needs no item (its entry was trimmed since) */
static bool
fill_change(LedgerExportRow *row, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	char	   *kind = text_column(tup, desc, 2);
	Datum		d;

	memset(row, 0, sizeof(*row));
	row->position = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	row->id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	row->stream = text_column(tup, desc, 4);
	if (strcmp(kind, "trim") == 0)
	{
		row->op = LEDGER_EXPORT_TRIM;
		return true;
	}
	if (!DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull)))
		return false;			/* a later trim removes it from the target */
	row->op = LEDGER_EXPORT_UPDATE;
	row->tags_json = text_column(tup, desc, 5);
	row->annotations_json = text_column(tup, desc, 6);
	d = SPI_getbinval(tup, desc, 7, &isnull);
	row->has_updated_at = !isnull;
	row->updated_at_us = isnull ? 0 : unix_micros(DatumGetTimestampTz(d));
	return true;
}

static size_t
row_bytes(const LedgerExportRow *r)
{
	return strlen(r->payload_json) + strlen(r->metadata_json) + strlen(r->tags_json) +
		strlen(r->annotations_json) + strlen(r->stream) + 64;
}

/*
 * Read the next batch: the sink's entries and changes in a window of ids
 * below the horizon, merged in id order, within the batch limits.
 */
static bool
fetch_batch(void *arg)
{
	static SPIPlanPtr entries_plan = NULL;
	static SPIPlanPtr changes_plan = NULL;
	SinkStep   *step = (SinkStep *) arg;
	int64		from = Max(step->sink->position, step->state->scanned);
	int64		window_end;
	int64		scanned_to;
	Datum		args[4];
	Portal		portal;
	LedgerExportRow *entries;
	LedgerExportRow *changes;
	int			nentries = 0;
	int			nchanges = 0;
	size_t		bytes = 0;
	bool		entries_full = false;
	int64		last_entry = 0;
	int64		last_change = 0;
	int			i,
				j;
	uint64		r;
	uint64		changes_read;
	int			rc;
	MemoryContext old;

	step->nrows = 0;
	step->ninserts = 0;
	step->scanned_to = from;
	ledger_spi_connect();
	step->horizon = ledger_horizon();
	if (step->horizon <= from + 1 || step->horizon <= step->state->barrier)
	{
		SPI_finish();
		return true;
	}

	/*
	 * A bounded window of ids per batch, so that a batch costs the same
	 * whatever plan the statistics of a freshly loaded table suggest.  It
	 * counts ids handed out, not id values: on a node (ledger.set_node) ids
	 * stride by 2^node_bits.
	 */
	window_end = Min(step->horizon - 1,
					 from + (int64) ledger_export_batch * 4 * ledger_id_increment());
	if (entries_plan == NULL)
	{
		Oid			types[4] = {INT8OID, INT8OID, TEXTOID, INT8OID};

		entries_plan = ledger_prepare_plan(ENTRIES_SQL, 3, types);
		changes_plan = ledger_prepare_plan(CHANGES_SQL, 4, types);
	}
	args[0] = Int64GetDatum(from);
	args[1] = Int64GetDatum(window_end);
	args[2] = CStringGetTextDatum(step->sink->streams);
	args[3] = Int64GetDatum(ledger_export_batch);

	old = MemoryContextSwitchTo(step->cxt);
	entries = palloc(sizeof(LedgerExportRow) * ledger_export_batch);
	changes = palloc(sizeof(LedgerExportRow) * ledger_export_batch);
	MemoryContextSwitchTo(old);

	/*
	 * One snapshot taken after the horizon for both reads: the
	 * transaction's own is older, and could miss an item below the horizon
	 * that committed in between -- which the position would then step over.
	 */
	PushActiveSnapshot(GetLatestSnapshot());
	portal = SPI_cursor_open(NULL, entries_plan, args, NULL, true);
	while (!entries_full)
	{
		SPI_cursor_fetch(portal, true, Min(256, ledger_export_batch - nentries));
		if (SPI_processed == 0)
			break;
		old = MemoryContextSwitchTo(step->cxt);
		for (r = 0; r < SPI_processed; r++)
		{
			fill_entry(&entries[nentries], SPI_tuptable->vals[r], SPI_tuptable->tupdesc);
			bytes += row_bytes(&entries[nentries]);
			last_entry = entries[nentries].id;
			nentries++;
			if (nentries >= ledger_export_batch || bytes >= (size_t) ledger_export_batch_bytes)
			{
				entries_full = true;
				break;
			}
		}
		MemoryContextSwitchTo(old);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);

	rc = SPI_execute_plan(changes_plan, args, NULL, true, 0);
	ledger_spi_check(rc, SPI_OK_SELECT, "export changes");
	changes_read = SPI_processed;
	old = MemoryContextSwitchTo(step->cxt);
	for (r = 0; r < changes_read; r++)
	{
		bool		isnull;

		last_change = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
		if (fill_change(&changes[nchanges], SPI_tuptable->vals[r], SPI_tuptable->tupdesc))
			nchanges++;
	}
	MemoryContextSwitchTo(old);
	PopActiveSnapshot();
	SPI_finish();

	/* everything up to scanned_to is read; what lies beyond waits */
	scanned_to = window_end;
	if (entries_full)
		scanned_to = Min(scanned_to, last_entry);
	if (changes_read >= (uint64) ledger_export_batch)
		scanned_to = Min(scanned_to, last_change);

	/* merge by position */
	old = MemoryContextSwitchTo(step->cxt);
	step->rows = palloc(sizeof(LedgerExportRow) * Max(nentries + nchanges, 1));
	MemoryContextSwitchTo(old);
	i = j = 0;
	while (i < nentries || j < nchanges)
	{
		LedgerExportRow *next;

		if (j >= nchanges || (i < nentries && entries[i].position < changes[j].position))
			next = &entries[i++];
		else
			next = &changes[j++];
		if (next->position > scanned_to)
			break;
		/* what lies up to the cursor found on opening was sent before */
		if (next->op == LEDGER_EXPORT_INSERT && next->position > step->state->resent_upto)
			step->ninserts++;
		step->rows[step->nrows++] = *next;
	}
	step->scanned_to = scanned_to;
	ereport(DEBUG2,
			(errmsg_internal("ledger sink \"%s\": batch of %d items, ids %lld to %lld",
							 step->sink->name, step->nrows, (long long) from,
							 (long long) scanned_to)));
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
	args[1] = Int64GetDatum(step->nrows > 0 ? step->rows[step->nrows - 1].position : step->sink->position);
	args[2] = Int64GetDatum(step->ninserts);
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

/* The message is one the sink modules or this file built: redacted. */
static void
sink_failed(SinkStep *step, const char *message, TimestampTz *next_retry)
{
	SinkState  *st = step->state;
	int			backoff_s = 1 << Min(st->failures, 6);	/* 1 s .. 64 s */

	st->failures++;
	st->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff_s * 1000);
	close_sink(st);
	step->error = pstrdup(message);
	ereport(LOG,
			(errmsg("ledger sink \"%s\" failed, retrying in %d s: %s",
					step->sink->name, backoff_s, message)));
	(void) ledger_worker_run_in_transaction(record_error, step, "ledger: recording sink error");
	if (*next_retry == 0 || st->retry_at < *next_retry)
		*next_retry = st->retry_at;
}

/* --- opening: is the target what the server sent it? ----------------- */

static bool
read_server_last(void *arg)
{
	SinkStep   *step = (SinkStep *) arg;
	bool		isnull;
	int			rc;

	ledger_spi_connect();
	rc = SPI_execute("SELECT COALESCE(pg_catalog.pg_sequence_last_value('ledger.entries_id_seq'::pg_catalog.regclass), 0)",
					 true, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "sequence position");
	step->server_last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return true;
}

/*
 * Of the target's rows in check_ids, the first that is neither an entry
 * of this server nor removed by a trim still to be applied; 0 if none.
 */
static bool
check_target_ids(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SinkStep   *step = (SinkStep *) arg;
	Datum	   *elems;
	Datum		args[2];
	int			i;
	int			rc;

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[2] = {INT8ARRAYOID, INT8OID};

		plan = ledger_prepare_plan("SELECT x FROM pg_catalog.unnest($1) x"
								   " WHERE NOT EXISTS (SELECT 1 FROM ledger.entries e WHERE e.id OPERATOR(pg_catalog.=) x)"
								   " AND NOT EXISTS (SELECT 1 FROM ledger.changes c"
								   " WHERE c.kind OPERATOR(pg_catalog.=) 'trim' AND c.entry_id OPERATOR(pg_catalog.>=) x"
								   " AND c.id OPERATOR(pg_catalog.>) $2)"
								   " ORDER BY x LIMIT 1", 2, types);
	}
	elems = palloc(sizeof(Datum) * step->ncheck_ids);
	for (i = 0; i < step->ncheck_ids; i++)
		elems[i] = Int64GetDatum(step->check_ids[i]);
	args[0] = PointerGetDatum(construct_array(elems, step->ncheck_ids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = Int64GetDatum(step->sink->position);
	rc = SPI_execute_plan(plan, args, NULL, true, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "target check");
	step->unexplained = 0;
	if (SPI_processed == 1)
	{
		bool		isnull;

		step->unexplained = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	return true;
}

static bool
draw_barrier(void *arg)
{
	SinkStep   *step = (SinkStep *) arg;
	bool		isnull;
	int			rc;

	ledger_spi_connect();
	rc = SPI_execute("SELECT pg_catalog.nextval('ledger.entries_id_seq'::pg_catalog.regclass)", false, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "export barrier");
	step->state->barrier = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return true;
}

/* Open the target and check it against the server; false with a message. */
static bool
open_sink(SinkStep *step, char **message)
{
	SinkState  *st = step->state;
	SinkRow    *sink = step->sink;
	SinkCall   *c = palloc0(sizeof(SinkCall));
	int64		after;
	int			round;

	c->kind = CALL_OPEN;
	c->name = sink->name;
	c->target = sink->target;
	c->streams = sink->streams;
	c->options = sink->options;
	if (sink_call(st, c) != 0)
	{
		*message = pstrdup(c->err);
		return false;
	}
	c->kind = CALL_CURSOR;
	if (sink_call(st, c) != 0)
	{
		*message = pstrdup(c->err);
		return false;
	}
	if (!ledger_worker_run_in_transaction(read_server_last, step, "ledger: checking a sink"))
	{
		*message = pstrdup("could not read the server's newest id");
		return false;
	}
	if (!c->present && sink->position > 0)
	{
		*message = psprintf("sink \"%s\": the target holds no cursor for this sink, but the server exported up to id " INT64_FORMAT " to it: the target was replaced or emptied (drop and create the sink to export it again)",
							sink->name, sink->position);
		return false;
	}
	if (c->present && c->cursor < sink->position)
	{
		*message = psprintf("sink \"%s\": the target's cursor is at " INT64_FORMAT ", behind the " INT64_FORMAT " the server exported to it: the target lost entries (restored from an older copy?)",
							sink->name, (int64) c->cursor, sink->position);
		return false;
	}
	if (c->present && c->cursor > step->server_last)
	{
		*message = psprintf("sink \"%s\": the target's cursor is at " INT64_FORMAT ", ahead of id " INT64_FORMAT ", the newest this server has handed out: the target holds entries this server does not have (a failover to a lagging replica?)",
							sink->name, (int64) c->cursor, step->server_last);
		return false;
	}

	/* every row of the sink's streams above the position must be accounted for */
	after = sink->position;
	for (round = 0; round < OPEN_SCAN_ROUNDS; round++)
	{
		c->kind = CALL_SCAN;
		c->after = after;
		if (sink_call(st, c) != 0)
		{
			*message = pstrdup(c->err);
			return false;
		}
		if (c->nids == 0)
			break;
		if (c->ids[c->nids - 1] > step->server_last)
		{
			*message = psprintf("sink \"%s\": the target holds entry " INT64_FORMAT ", ahead of id " INT64_FORMAT ", the newest this server has handed out (a failover to a lagging replica?)",
								sink->name, c->ids[c->nids - 1], step->server_last);
			return false;
		}
		step->check_ids = c->ids;
		step->ncheck_ids = c->nids;
		if (!ledger_worker_run_in_transaction(check_target_ids, step, "ledger: checking a sink"))
		{
			*message = pstrdup("could not check the target's rows against the server");
			return false;
		}
		if (step->unexplained != 0)
		{
			*message = psprintf("sink \"%s\": the target holds entry " INT64_FORMAT ", which this server does not have (a failover to a lagging replica, or rows written by somebody else?)",
								sink->name, step->unexplained);
			return false;
		}
		if (c->nids < LEDGER_SINK_SCAN_MAX)
			break;
		after = c->ids[c->nids - 1];
	}
	if (!ledger_worker_run_in_transaction(draw_barrier, step, "ledger: opening a sink"))
	{
		*message = pstrdup("could not draw the export barrier");
		return false;
	}
	st->scanned = sink->position;
	st->resent_upto = c->present ? c->cursor : 0;
	pfree(c);
	return true;
}

static bool
entry_exists(void *arg)
{
	SinkStep   *step = (SinkStep *) arg;
	Datum		args[1] = {Int64GetDatum(step->missing_id)};
	Oid			types[1] = {INT8OID};
	bool		isnull;
	int			rc;

	ledger_spi_connect();
	rc = SPI_execute_with_args("SELECT EXISTS (SELECT 1 FROM ledger.entries e WHERE e.id OPERATOR(pg_catalog.=) $1)",
							   1, types, args, NULL, true, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "entry check");
	step->missing_exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return true;
}

/*
 * Wait for the batch in flight and record it; false when it failed (the
 * sink is then in error).  An update of an entry the target lacks is
 * dropped when the entry was trimmed since the batch was read.
 */
static bool
finish_flight(SinkRow *sink, SinkState *st, TimestampTz *next_retry)
{
	SinkCall   *c = st->flight;
	SinkStep	step;

	memset(&step, 0, sizeof(step));
	step.sink = sink;
	step.state = st;
	ledger_sink_thread_wait(st->thread);
	step.rows = st->flight_rows;
	step.nrows = c->nrows;
	step.ninserts = st->flight_inserts;
	while (c->rc != 0)
	{
		int			k = c->failure.index;

		if (c->failure.kind == LEDGER_SINK_MISSING && k >= 0 && k < step.nrows)
		{
			step.missing_id = step.rows[k].id;
			if (ledger_worker_run_in_transaction(entry_exists, &step, "ledger: checking an entry") &&
				!step.missing_exists)
			{
				memmove(&step.rows[k], &step.rows[k + 1], sizeof(LedgerExportRow) * (step.nrows - k - 1));
				step.nrows--;
				if (step.nrows == 0)
					break;
				c->rows = step.rows;
				c->nrows = step.nrows;
				(void) sink_call(st, c);
				continue;
			}
		}
		st->flight = NULL;
		sink_failed(&step, c->err, next_retry);
		pfree(c);
		return false;
	}
	st->flight = NULL;
	pfree(c);
	st->failures = 0;
	if (step.nrows > 0 || strcmp(sink->state, "error") == 0)
		(void) ledger_worker_run_in_transaction(record_success, &step, "ledger: recording sink position");
	MemoryContextReset(st->batch_cxt[st->flight_cxt]);
	return true;
}

/*
 * Move one sink on by a batch; true when it has more to do now.  The next
 * batch is read while the helper thread still applies the previous one,
 * so reading the log and writing the target overlap; the previous one is
 * recorded (or its failure handled) before the next is handed over.
 * *next_retry is lowered to the sink's retry time when it waits for one.
 */
static bool
export_step(SinkRow *sink, MemoryContext cxt, TimestampTz *next_retry)
{
	SinkState  *st = sink_state_for(sink);
	SinkStep	step;
	SinkCall   *c;
	char	   *message;
	int			free_cxt;

	if (st->ops == NULL)
		return false;
	memset(&step, 0, sizeof(step));
	step.sink = sink;
	step.state = st;

	/* a paused sink lets go of its target; resuming checks it again */
	if (strcmp(sink->state, "paused") == 0)
	{
		close_sink(st);
		st->failures = 0;
		st->retry_at = 0;
		return false;
	}
	/* resume_sink() sets the state back to active: retry at once */
	if (strcmp(sink->state, "active") == 0 && st->failures > 0 && st->handle == NULL)
		st->retry_at = 0;
	if (st->retry_at > GetCurrentTimestamp())
	{
		if (*next_retry == 0 || st->retry_at < *next_retry)
			*next_retry = st->retry_at;
		return false;
	}

	if (st->handle == NULL && !open_sink(&step, &message))
	{
		sink_failed(&step, message, next_retry);
		return false;
	}

	free_cxt = st->flight != NULL ? 1 - st->flight_cxt : 0;
	MemoryContextReset(st->batch_cxt[free_cxt]);
	step.cxt = st->batch_cxt[free_cxt];
	if (!ledger_worker_run_in_transaction(fetch_batch, &step, "ledger: reading an export batch"))
		return st->flight != NULL && finish_flight(sink, st, next_retry);
	if (st->flight != NULL && !finish_flight(sink, st, next_retry))
		return false;			/* what was read next is dropped with it */

	if (step.nrows == 0)
	{
		if (strcmp(sink->state, "error") == 0)
			(void) ledger_worker_run_in_transaction(record_success, &step, "ledger: recording sink position");
		st->failures = 0;
		st->scanned = Max(st->scanned, step.scanned_to);
		return step.scanned_to > 0 && step.scanned_to < step.horizon - 1 &&
			step.horizon > st->barrier;
	}

	/* hand the batch over; it is recorded on the next step */
	c = MemoryContextAllocZero(TopMemoryContext, sizeof(SinkCall));
	c->kind = CALL_APPLY;
	c->rows = step.rows;
	c->nrows = step.nrows;
	c->st = st;
	st->flight = c;
	st->flight_rows = step.rows;
	st->flight_inserts = step.ninserts;
	st->flight_cxt = free_cxt;
	st->scanned = Max(st->scanned, step.scanned_to);
	pgstat_report_activity(STATE_RUNNING, psprintf("ledger: writing to sink %s", st->name));
	ledger_sink_thread_submit(st->thread, run_call, c);
	return true;
}

static bool
prune_changes(void *arg)
{
	ledger_mirror_prune();
	return true;
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
	if (list.sinks != NIL)
		(void) ledger_worker_run_in_transaction(prune_changes, NULL, "ledger: pruning changes");
}
