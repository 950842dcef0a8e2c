/*-------------------------------------------------------------------------
 *
 * src/read.c
 *		The entry readers: read(), read_all() and get(), and the wait loop
 *		that read and read_all share.
 *
 * Reads are keyset scans over the (stream_id, id) index (or the primary
 * key for read_all of every stream; per-stream scans merged by id for a
 * prefix), so a page after a cursor costs the same in a stream of ten
 * entries and one of ten million, and whatever the size of other streams.
 * The executor hands rows straight to the result tuplestore (a
 * DestReceiver, no SPI tuple table), which spills to disk past work_mem.
 * Each combination of optional filters gets its own plan, prepared on first
 * use, so that the planner sees only the predicates actually asked for.
 *
 * Waiting (wait => interval): each attempt registers the backend as a
 * waiter before its query takes a snapshot, so no commit slips between the
 * query and the sleep (wait.c).  The registration is undone under
 * PG_ENSURE_ERROR_CLEANUP, so a cancel or statement_timeout -- inside a
 * savepoint or not -- never leaves it behind.  Each attempt runs in its own
 * SPI connection and memory context, so a call that sleeps through 20,000
 * commits uses as much memory as one that sleeps through none.
 *
 * Isolation: read_all (always) and read with wait read the latest committed
 * entries, whatever the transaction's isolation level.  They are cursors
 * over a log: read_all must see every settled id below the horizon, or a
 * consumer would step over an entry for good, and a blocking tail exists to
 * see what commits while it waits.  Other reads use the transaction's
 * snapshot.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(ledger_read);
PG_FUNCTION_INFO_V1(ledger_read_all);
PG_FUNCTION_INFO_V1(ledger_get);
PG_FUNCTION_INFO_V1(ledger_tag_keys);

/* Columns of ledger.entry, in order, for a query over entries e. */
#define ENTRY_COLUMNS(stream_expr) \
	"e.id, " stream_expr ", e.seq, e.payload, e.order_key::pg_catalog.text," \
	" e.dedup_key::pg_catalog.text, e.schema_version, e.metadata," \
	" e.tags::pg_catalog.text[], e.annotations, e.created_at, e.updated_at"

/*
 * "e.stream_id is the stream's id", written as a closed range rather than
 * with =.  Equality with a parameter (or an initplan's or a lateral
 * reference's value) makes the planner treat stream_id as constant and drop
 * it from ORDER BY stream_id, id as redundant; the primary key then serves
 * ORDER BY id as well, and the planner -- estimating a stream's share as
 * 1/(number of streams), spread evenly -- scans it filtered by stream, which
 * costs as much as the entries of every other stream appended since.  With
 * a range, only the (stream_id, ...) indexes give that order, a generic plan
 * included, and the btree still starts at (stream_id, after): >= and <=
 * keys on the leading column let the next column position the scan too.
 */
#define STREAM_IS(id_expr) \
	"e.stream_id OPERATOR(pg_catalog.>=) " id_expr \
	" AND e.stream_id OPERATOR(pg_catalog.<=) " id_expr

/* The id of the stream named by parameter n, NULL (no rows) if none. */
#define STREAM_ID_OF(param) \
	"(SELECT s.stream_id FROM ledger.streams s WHERE s.name OPERATOR(pg_catalog.=) " param ")"

#define ENTRY_NATTS			12
#define ENTRY_ATT_STREAM	1	/* zero-based */
#define ENTRY_ATT_PAYLOAD	3
#define ENTRY_ATT_VERSION	6

/* Optional filters of read(); each combination has its own plan. */
#define READ_DESCENDING		(1 << 0)
#define READ_ORDER_KEY		(1 << 1)
#define READ_TAG			(1 << 2)
#define READ_ALL_TAGS		(1 << 3)
#define READ_METADATA		(1 << 4)
#define READ_ANNOTATIONS	(1 << 5)
#define READ_VARIANTS		(1 << 6)

/*
 * Plan parameters: $1 stream name, $2 after, $3 limit, then the filters
 * order_key, tag, all_tags, metadata, annotations as $4..$8 -- the same
 * order as read()'s arguments 4..8 and as the READ_* bits above.
 */
#define READ_NARGS 8
#define READ_FIRST_FILTER_ARG 4

static SPIPlanPtr
read_plan(int variant)
{
	static SPIPlanPtr plans[READ_VARIANTS];
	bool		desc = (variant & READ_DESCENDING) != 0;
	StringInfoData sql;

	if (plans[variant] != NULL)
		return plans[variant];

	/*
	 * One statement: the stream's id comes from once-evaluated subqueries
	 * (initplans), and ORDER BY names the index's leading column, which
	 * STREAM_IS keeps from being redundant, so that only (stream_id,
	 * [order_key,] id) can serve it -- never a scan of the primary key
	 * filtered by stream.
	 */
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT " ENTRY_COLUMNS("$1")
						   " FROM ledger.entries e"
						   " WHERE " STREAM_IS(STREAM_ID_OF("$1")));
	appendStringInfoString(&sql, desc ? " AND e.id OPERATOR(pg_catalog.<) $2" :
						   " AND e.id OPERATOR(pg_catalog.>) $2");
	if (variant & READ_ORDER_KEY)
		/* a range too, so that only (stream_id, order_key, id) gives the order */
		appendStringInfoString(&sql, " AND e.order_key OPERATOR(pg_catalog.>=) $4"
							   " AND e.order_key OPERATOR(pg_catalog.<=) $4");
	/*
	 * Tag filters: the keys of ledger.tag_keys() let the GIN index
	 * entries_tag_keys_idx find the stream's tagged entries without a scan
	 * of the stream (its predicate, tags <> '{}', is spelled out so that
	 * the planner can prove it); the exact filter stays for correctness.
	 * COLLATE "C" matches the index's collation, that of entries.tags.
	 */
	if (variant & (READ_TAG | READ_ALL_TAGS))
		appendStringInfoString(&sql, " AND e.tags OPERATOR(pg_catalog.<>) '{}'");
	if (variant & READ_TAG)
		appendStringInfoString(&sql, " AND e.tags OPERATOR(pg_catalog.@>) ARRAY[$5]"
							   " AND ledger.tag_keys(e.stream_id, e.tags) OPERATOR(pg_catalog.@>)"
							   " ledger.tag_keys(" STREAM_ID_OF("$1") ", ARRAY[$5 COLLATE pg_catalog.\"C\"])");
	if (variant & READ_ALL_TAGS)
		appendStringInfoString(&sql, " AND e.tags OPERATOR(pg_catalog.@>) $6"
							   " AND ledger.tag_keys(e.stream_id, e.tags) OPERATOR(pg_catalog.@>)"
							   " ledger.tag_keys(" STREAM_ID_OF("$1") ", $6 COLLATE pg_catalog.\"C\")");
	if (variant & READ_METADATA)
		appendStringInfoString(&sql, " AND e.metadata OPERATOR(pg_catalog.@>) $7");
	if (variant & READ_ANNOTATIONS)
		appendStringInfoString(&sql, " AND e.annotations OPERATOR(pg_catalog.@>) $8");
	if (variant & READ_ORDER_KEY)
		appendStringInfoString(&sql, desc ?
							   " ORDER BY e.stream_id DESC, e.order_key DESC, e.id DESC" :
							   " ORDER BY e.stream_id, e.order_key, e.id");
	else
		appendStringInfoString(&sql, desc ? " ORDER BY e.stream_id DESC, e.id DESC" :
							   " ORDER BY e.stream_id, e.id");
	appendStringInfoString(&sql, " LIMIT $3");

	{
		Oid			types[READ_NARGS] = {TEXTOID, INT8OID, INT8OID, TEXTOID,
		TEXTOID, TEXTARRAYOID, JSONBOID, JSONBOID};

		plans[variant] = ledger_prepare_plan_options(sql.data, READ_NARGS, types,
													 CURSOR_OPT_GENERIC_PLAN);
	}
	pfree(sql.data);
	return plans[variant];
}

/*
 * Where one call's entries go: the result tuplestore, upcasting payloads
 * whose version differs from the target.  The target version and upcast
 * plan of each stream met are resolved once per call and kept in a small
 * hash in the call's context (read_all interleaves streams).
 */
typedef struct StreamUpcast
{
	char		name[LEDGER_MAX_STREAM_BYTES + 1];	/* hash key */
	int32		target;
	LedgerUpcastPlan *plan;		/* NULL until an entry needs it */
} StreamUpcast;

typedef struct EntrySink
{
	Tuplestorestate *store;
	TupleDesc	desc;
	bool		explicit_target;	/* as_version given */
	int32		as_version;
	MemoryContext call_cxt;		/* lives as long as the call */
	MemoryContext row_cxt;		/* upcasting scratch, reset per entry */
	HTAB	   *streams;		/* name -> StreamUpcast */
} EntrySink;

static void
entry_sink_init(EntrySink *sink, FunctionCallInfo fcinfo, bool explicit_target, int32 as_version)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASHCTL		ctl;

	InitMaterializedSRF(fcinfo, 0);
	memset(sink, 0, sizeof(*sink));
	sink->store = rsinfo->setResult;
	sink->desc = rsinfo->setDesc;
	sink->explicit_target = explicit_target;
	sink->as_version = as_version;
	sink->call_cxt = CurrentMemoryContext;
	sink->row_cxt = AllocSetContextCreate(CurrentMemoryContext, "ledger upcast row",
										  ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = LEDGER_MAX_STREAM_BYTES + 1;
	ctl.entrysize = sizeof(StreamUpcast);
	ctl.hcxt = CurrentMemoryContext;
	sink->streams = hash_create("ledger read streams", 16, &ctl,
								HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

static StreamUpcast *
stream_upcast(EntrySink *sink, text *stream)
{
	char		name[LEDGER_MAX_STREAM_BYTES + 1];
	int			len = Min(VARSIZE_ANY_EXHDR(stream), LEDGER_MAX_STREAM_BYTES);
	StreamUpcast *su;
	bool		found;

	memcpy(name, VARDATA_ANY(stream), len);
	name[len] = '\0';
	su = hash_search(sink->streams, name, HASH_ENTER, &found);
	if (!found)
	{
		su->target = sink->explicit_target ? sink->as_version : ledger_current_version(name);
		su->plan = NULL;
	}
	return su;
}

/* Add one entry (a row of ENTRY_COLUMNS) to the result, upcast as asked. */
static void
emit_entry(EntrySink *sink, Datum *row_values, bool *nulls)
{
	Datum		values[ENTRY_NATTS];
	StreamUpcast *su;
	int32		version;
	MemoryContext old;

	su = stream_upcast(sink, DatumGetTextPP(row_values[ENTRY_ATT_STREAM]));
	version = DatumGetInt32(row_values[ENTRY_ATT_VERSION]);

	/*
	 * Upcast to the target; by default (no as_version) an entry stamped
	 * with a version newer than the stream's current one is returned as
	 * stored, since only an explicit as_version asks for a way down.
	 */
	if (version == su->target || (!sink->explicit_target && version > su->target))
	{
		tuplestore_putvalues(sink->store, sink->desc, row_values, nulls);
		return;
	}
	if (su->plan == NULL)
	{
		old = MemoryContextSwitchTo(sink->call_cxt);
		su->plan = ledger_upcast_plan(su->name, su->target, sink->explicit_target);
		MemoryContextSwitchTo(old);
	}
	/* the tuplestore copies the row, so the scratch can go right after */
	MemoryContextReset(sink->row_cxt);
	old = MemoryContextSwitchTo(sink->row_cxt);
	memcpy(values, row_values, sizeof(values));
	values[ENTRY_ATT_PAYLOAD] =
		PointerGetDatum(ledger_upcast(su->plan, DatumGetJsonbP(values[ENTRY_ATT_PAYLOAD]),
									  version, DatumGetInt64(values[0])));
	values[ENTRY_ATT_VERSION] = Int32GetDatum(su->target);
	tuplestore_putvalues(sink->store, sink->desc, values, nulls);
	MemoryContextSwitchTo(old);
}

/*
 * The executor hands a read's rows straight to emit_entry through this
 * receiver: no SPI tuple table, no copy of each row before the tuplestore's
 * own.  The query streams (its LIMIT stops it), and the result tuplestore
 * spills to disk past work_mem, so a read of millions of entries costs as
 * much memory as one of a thousand.
 */
typedef struct EntryReceiver
{
	DestReceiver pub;
	EntrySink  *sink;
	uint64		received;
	ErrorContextCallback *caller_context;	/* error context of the read */
} EntryReceiver;

static bool
entry_receive_slot(TupleTableSlot *slot, DestReceiver *self)
{
	EntryReceiver *receiver = (EntryReceiver *) self;
	ErrorContextCallback *query_context = error_context_stack;

	Assert(slot->tts_tupleDescriptor->natts == ENTRY_NATTS);
	/* the executor checks for interrupts itself as it produces rows */
	slot_getallattrs(slot);

	/*
	 * An entry that cannot be upcast is the read's error, not its query's:
	 * leave out SPI's "SQL statement" context (an error's longjmp restores
	 * the stack, so only the normal path puts it back).
	 */
	error_context_stack = receiver->caller_context;
	emit_entry(receiver->sink, slot->tts_values, slot->tts_isnull);
	error_context_stack = query_context;
	receiver->received++;
	return true;
}

static void
entry_receive_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
entry_receive_shutdown(DestReceiver *self)
{
}

static void
entry_receive_destroy(DestReceiver *self)
{
}

/*
 * Run plan with args (nulls as SPI takes them, NULL for none), emitting its
 * rows.  It reads with the active snapshot (read_only), which the caller
 * sets.  Returns the number of rows emitted.
 */
static uint64
emit_plan(EntrySink *sink, SPIPlanPtr plan, Datum *args, const char *nulls)
{
	EntryReceiver receiver;
	SPIExecuteOptions options;
	int			nargs = SPI_getargcount(plan);
	ParamListInfo params = makeParamList(nargs);
	int			rc;

	for (int i = 0; i < nargs; i++)
	{
		ParamExternData *prm = &params->params[i];

		prm->value = args[i];
		prm->isnull = nulls != NULL && nulls[i] == 'n';
		prm->pflags = PARAM_FLAG_CONST;
		prm->ptype = SPI_getargtypeid(plan, i);
	}
	memset(&receiver, 0, sizeof(receiver));
	receiver.pub.receiveSlot = entry_receive_slot;
	receiver.pub.rStartup = entry_receive_startup;
	receiver.pub.rShutdown = entry_receive_shutdown;
	receiver.pub.rDestroy = entry_receive_destroy;
	/* not DestNone, which SPI takes for "result discarded" */
	receiver.pub.mydest = DestTuplestore;
	receiver.sink = sink;
	receiver.caller_context = error_context_stack;

	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = true;
	options.dest = &receiver.pub;
	rc = SPI_execute_plan_extended(plan, &options);
	ledger_spi_check(rc, SPI_OK_SELECT, "read");
	pfree(params);
	return receiver.received;
}

static TimestampTz
wait_deadline(Interval *wait)
{
	TimestampTz now = GetCurrentTimestamp();

	if (wait->month < 0 || wait->day < 0 || wait->time < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait must not be negative")));
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(now),
												   IntervalPGetDatum(wait)));
}

/*
 * One attempt of a read: register as a waiter (when waiting) before the
 * query's snapshot, query, emit.  Returns the number of entries emitted.
 */
typedef uint64 (*ReadAttempt) (void *arg, bool waiting);

static void
wait_cleanup(int code, Datum arg)
{
	ledger_wait_unregister();
}

/*
 * Run attempt until it finds something or, when waiting, the deadline
 * passes; sleep on the latch in between.
 */
static void
read_until(ReadAttempt attempt, void *arg, bool waiting, TimestampTz deadline)
{
	MemoryContext attempt_cxt;
	MemoryContext old;

	if (!waiting)
	{
		(void) attempt(arg, false);
		return;
	}

	attempt_cxt = AllocSetContextCreate(CurrentMemoryContext, "ledger read attempt",
										ALLOCSET_DEFAULT_SIZES);
	ledger_wait_prepare();
	PG_ENSURE_ERROR_CLEANUP(wait_cleanup, (Datum) 0);
	{
		for (;;)
		{
			uint64		found;

			old = MemoryContextSwitchTo(attempt_cxt);
			found = attempt(arg, true);
			MemoryContextSwitchTo(old);
			MemoryContextReset(attempt_cxt);
			if (found > 0 || !ledger_wait_sleep(deadline))
				break;
		}
	}
	PG_END_ENSURE_ERROR_CLEANUP(wait_cleanup, (Datum) 0);
	ledger_wait_unregister();
	MemoryContextDelete(attempt_cxt);
}

/* --- read() -------------------------------------------------------------- */

typedef struct ReadArgs
{
	EntrySink	sink;
	char	   *stream_name;
	int			variant;
	int32		limit;
	Datum		args[READ_NARGS];
	char		argnulls[READ_NARGS];
} ReadArgs;

static uint64
read_attempt(void *arg, bool waiting)
{
	ReadArgs   *ra = (ReadArgs *) arg;
	uint64		n;

	ledger_spi_connect();
	if (waiting)
	{
		LedgerStream stream;

		/*
		 * A stream that does not exist yet is waited for as "anything in
		 * this database"; once it exists, as itself.  A waiting read uses a
		 * fresh snapshot, to see commits made after its transaction began.
		 */
		ledger_wait_register(ledger_stream_lookup(ra->stream_name, false, &stream) ? stream.stream_id : 0);
		PushActiveSnapshot(GetLatestSnapshot());
	}
	n = emit_plan(&ra->sink, read_plan(ra->variant), ra->args, ra->argnulls);
	if (waiting)
		PopActiveSnapshot();
	SPI_finish();
	return n;
}

Datum
ledger_read(PG_FUNCTION_ARGS)
{
	ReadArgs	ra;
	bool		descending;
	int64		after;
	bool		waiting;
	TimestampTz deadline = 0;

	memset(&ra, 0, sizeof(ra));
	ra.stream_name = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	ra.limit = PG_ARGISNULL(2) ? 100 : ledger_check_limit(PG_GETARG_INT32(2));
	descending = PG_ARGISNULL(3) ? false : PG_GETARG_BOOL(3);
	after = PG_ARGISNULL(1) ? (descending ? PG_INT64_MAX : 0) : PG_GETARG_INT64(1);
	waiting = !PG_ARGISNULL(10);
	if (!PG_ARGISNULL(9) && PG_GETARG_INT32(9) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_version must be at least 1, not %d", PG_GETARG_INT32(9))));
	if (!PG_ARGISNULL(6))
		ledger_check_tags(PG_GETARG_ARRAYTYPE_P(6), "all_tags");
	if (waiting)
	{
		ledger_require_preload("read with wait");
		deadline = wait_deadline(PG_GETARG_INTERVAL_P(10));
	}

	memset(ra.argnulls, ' ', sizeof(ra.argnulls));
	ra.args[0] = CStringGetTextDatum(ra.stream_name);
	ra.args[1] = Int64GetDatum(after);
	ra.args[2] = Int64GetDatum(ra.limit);
	if (descending)
		ra.variant |= READ_DESCENDING;
	/* each filter given selects its own plan */
	for (int i = 0; i < 5; i++)
	{
		int			arg = READ_FIRST_FILTER_ARG + i;

		/*
		 * all_tags => '{}' holds for every entry: no filter (the tag index
		 * leaves untagged entries out, so it must not be asked).
		 */
		if (PG_ARGISNULL(arg) ||
			((READ_ORDER_KEY << i) == READ_ALL_TAGS &&
			 ArrayGetNItems(ARR_NDIM(PG_GETARG_ARRAYTYPE_P(arg)),
							ARR_DIMS(PG_GETARG_ARRAYTYPE_P(arg))) == 0))
		{
			ra.args[3 + i] = (Datum) 0;
			ra.argnulls[3 + i] = 'n';
		}
		else
		{
			ra.args[3 + i] = PG_GETARG_DATUM(arg);
			ra.variant |= READ_ORDER_KEY << i;
		}
	}

	entry_sink_init(&ra.sink, fcinfo, !PG_ARGISNULL(9), PG_ARGISNULL(9) ? 0 : PG_GETARG_INT32(9));
	read_until(read_attempt, &ra, waiting, deadline);
	return (Datum) 0;
}

/* --- read_all() ---------------------------------------------------------- */

typedef struct ReadAllArgs
{
	EntrySink	sink;
	int			variant;		/* 0 every stream, 1 exact name, 2 prefix */
	int64		after;
	int32		limit;
	Datum		args[4];
} ReadAllArgs;

static SPIPlanPtr
read_all_plan(int variant)
{
	static SPIPlanPtr plans[3];

	/*
	 * Every stream: the primary key's id range.  One stream: its (stream_id,
	 * id) range, as read() scans it.  A prefix: the first $4 entries of
	 * each matching stream, each from its own (stream_id, id) range scan,
	 * merged by id -- the cost is (matching streams x limit), whatever the
	 * size of the other streams.  $1 after, $2 horizon, $3 name or prefix,
	 * $4 limit.
	 */
	static const char *const sql[3] = {
		"SELECT " ENTRY_COLUMNS("s.name::pg_catalog.text")
		" FROM ledger.entries e"
		" JOIN ledger.streams s ON s.stream_id OPERATOR(pg_catalog.=) e.stream_id"
		" WHERE e.id OPERATOR(pg_catalog.>) $1 AND e.id OPERATOR(pg_catalog.<) $2"
		" ORDER BY e.id LIMIT $4",

		"SELECT " ENTRY_COLUMNS("$3")
		" FROM ledger.entries e"
		" WHERE " STREAM_IS(STREAM_ID_OF("$3"))
		" AND e.id OPERATOR(pg_catalog.>) $1 AND e.id OPERATOR(pg_catalog.<) $2"
		" ORDER BY e.stream_id, e.id LIMIT $4",

		"SELECT " ENTRY_COLUMNS("s.name::pg_catalog.text")
		" FROM ledger.streams s CROSS JOIN LATERAL"
		" (SELECT e.* FROM ledger.entries e"
		"   WHERE " STREAM_IS("s.stream_id")
		"   AND e.id OPERATOR(pg_catalog.>) $1 AND e.id OPERATOR(pg_catalog.<) $2"
		"   ORDER BY e.stream_id, e.id LIMIT $4) e"
		" WHERE pg_catalog.starts_with(s.name, $3)"
		" ORDER BY e.id LIMIT $4"
	};

	if (plans[variant] == NULL)
	{
		Oid			types[4] = {INT8OID, INT8OID, TEXTOID, INT8OID};

		/*
		 * The prefix form keeps the plan cache's choice: only a custom plan
		 * can turn starts_with() into a range scan of the stream names.
		 */
		plans[variant] = ledger_prepare_plan_options(sql[variant], 4, types,
													 variant == 2 ? 0 : CURSOR_OPT_GENERIC_PLAN);
	}
	return plans[variant];
}

static uint64
read_all_attempt(void *arg, bool waiting)
{
	ReadAllArgs *ra = (ReadAllArgs *) arg;
	int64		horizon;
	uint64		n = 0;

	if (waiting)
		ledger_wait_register(0);
	ledger_spi_connect();
	/* The horizon is computed before the query takes its snapshot. */
	horizon = ledger_horizon();
	if (horizon > ra->after + 1)
	{
		ra->args[1] = Int64GetDatum(horizon);

		/*
		 * Read with a snapshot taken after the horizon, even in a
		 * REPEATABLE READ transaction: an older snapshot could miss an entry
		 * below the horizon that committed since, and the next call (after
		 * a higher id) would skip it for good.  The snapshot stays active
		 * while the query runs.
		 */
		PushActiveSnapshot(GetLatestSnapshot());
		n = emit_plan(&ra->sink, read_all_plan(ra->variant), ra->args, NULL);
		PopActiveSnapshot();
	}
	SPI_finish();
	return n;
}

/*
 * read_all: entries of every stream below the commit-order horizon, so that
 * an id is returned only once every lower id is settled.
 */
Datum
ledger_read_all(PG_FUNCTION_ARGS)
{
	ReadAllArgs ra;
	char	   *pattern = NULL;
	bool		waiting;
	TimestampTz deadline = 0;

	memset(&ra, 0, sizeof(ra));
	ra.after = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT64(0);
	ra.limit = PG_ARGISNULL(1) ? 100 : ledger_check_limit(PG_GETARG_INT32(1));
	if (!PG_ARGISNULL(2))
	{
		bool		is_prefix;

		pattern = ledger_check_pattern(PG_GETARG_TEXT_PP(2), &is_prefix);
		if (is_prefix)
		{
			pattern[strlen(pattern) - 1] = '\0';
			ra.variant = pattern[0] ? 2 : 0;	/* '*' is every stream */
		}
		else
			ra.variant = 1;
	}
	waiting = !PG_ARGISNULL(3);
	if (waiting)
	{
		ledger_require_preload("read_all with wait");
		deadline = wait_deadline(PG_GETARG_INTERVAL_P(3));
	}

	ra.args[0] = Int64GetDatum(ra.after);
	ra.args[2] = CStringGetTextDatum(pattern ? pattern : "");
	ra.args[3] = Int64GetDatum(ra.limit);

	entry_sink_init(&ra.sink, fcinfo, false, 0);
	read_until(read_all_attempt, &ra, waiting, deadline);
	return (Datum) 0;
}

/* --- get() --------------------------------------------------------------- */

static void
seq_out_of_range(const char *stream_name, int64 seq, const LedgerStream *stream)
{
	if (seq > stream->last_seq)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("seq " INT64_FORMAT " of stream \"%s\" is beyond its last entry",
						seq, stream_name),
				 errdetail("The stream's last seq is " INT64_FORMAT ".", stream->last_seq)));
	ereport(ERROR,
			(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
			 errmsg("seq " INT64_FORMAT " of stream \"%s\" is out of range", seq, stream_name),
			 stream->trimmed_seq > 0 ?
			 errdetail("Entries up to seq " INT64_FORMAT " were trimmed; the first seq is " INT64_FORMAT ".",
					   stream->trimmed_seq, stream->trimmed_seq + 1) :
			 errdetail("Seqs start at 1.")));
}

Datum
ledger_get(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *stream_name;
	int64		seq;
	LedgerStream stream;
	TupleDesc	desc;
	Datum		args[3];
	Datum		values[ENTRY_NATTS];
	bool		nulls[ENTRY_NATTS];
	HeapTupleHeader result;
	int32		target;
	int			rc;

	stream_name = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("seq must not be null")));
	seq = PG_GETARG_INT64(1);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ledger: get() must return a composite type");
	BlessTupleDesc(desc);

	ledger_spi_connect();

	if (!ledger_stream_lookup(stream_name, true, &stream))
	{
		memset(&stream, 0, sizeof(stream));
		seq_out_of_range(stream_name, seq, &stream);
	}
	if (seq <= stream.trimmed_seq || seq > stream.last_seq || seq < 1)
		seq_out_of_range(stream_name, seq, &stream);

	if (plan == NULL)
	{
		Oid			types[3] = {TEXTOID, INT4OID, INT8OID};

		plan = ledger_prepare_plan("SELECT " ENTRY_COLUMNS("$1") " FROM ledger.entries e"
								   " WHERE e.stream_id OPERATOR(pg_catalog.=) $2"
								   " AND e.seq OPERATOR(pg_catalog.=) $3",
								   3, types);
	}
	args[0] = CStringGetTextDatum(stream_name);
	args[1] = Int32GetDatum(stream.stream_id);
	args[2] = Int64GetDatum(seq);
	rc = SPI_execute_plan(plan, args, NULL, true, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "get");
	if (SPI_processed == 0)
		seq_out_of_range(stream_name, seq, &stream);

	heap_deform_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, values, nulls);
	target = ledger_current_version(stream_name);
	if (DatumGetInt32(values[ENTRY_ATT_VERSION]) < target)
	{
		LedgerUpcastPlan *up = ledger_upcast_plan(stream_name, target, false);

		values[ENTRY_ATT_PAYLOAD] =
			PointerGetDatum(ledger_upcast(up, DatumGetJsonbP(values[ENTRY_ATT_PAYLOAD]),
										  DatumGetInt32(values[ENTRY_ATT_VERSION]),
										  DatumGetInt64(values[0])));
		values[ENTRY_ATT_VERSION] = Int32GetDatum(target);
	}
	result = SPI_returntuple(heap_form_tuple(desc, values, nulls), desc);
	SPI_finish();
	PG_RETURN_HEAPTUPLEHEADER(result);
}


/* --- tag_keys() ---------------------------------------------------------- */

/*
 * ledger.tag_keys(stream_id, tags): each tag prefixed with "<stream_id>:",
 * the keys of the GIN index that serves tag filters within one stream (a
 * plain index on tags would find every stream's entries with the tag).  The
 * stream id holds no ':', so the first one ends it whatever the tag holds.
 * IMMUTABLE: it depends on its arguments only.
 */
Datum
ledger_tag_keys(PG_FUNCTION_ARGS)
{
	int32		stream_id = PG_GETARG_INT32(0);
	ArrayType  *tags = PG_GETARG_ARRAYTYPE_P(1);
	char		prefix[16];
	int			plen;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;
	Datum	   *keys;
	int			nkeys = 0;

	plen = snprintf(prefix, sizeof(prefix), "%d:", stream_id);
	deconstruct_array(tags, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elem_nulls, &nelems);
	if (nelems == 0)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(TEXTOID));
	keys = palloc(nelems * sizeof(Datum));
	for (int i = 0; i < nelems; i++)
	{
		text	   *tag;
		text	   *key;
		int			len;

		CHECK_FOR_INTERRUPTS();
		if (elem_nulls[i])
			continue;
		tag = DatumGetTextPP(elems[i]);
		len = VARSIZE_ANY_EXHDR(tag);
		key = palloc(VARHDRSZ + plen + len);
		SET_VARSIZE(key, VARHDRSZ + plen + len);
		memcpy(VARDATA(key), prefix, plen);
		memcpy(VARDATA(key) + plen, VARDATA_ANY(tag), len);
		keys[nkeys++] = PointerGetDatum(key);
	}
	PG_RETURN_ARRAYTYPE_P(nkeys == 0 ? construct_empty_array(TEXTOID) :
						  construct_array(keys, nkeys, TEXTOID, -1, false, TYPALIGN_INT));
}
