/*-------------------------------------------------------------------------
 *
 * src/read.c
 *		The read side: read(), read_all(), get(), count(), stat(), streams(),
 *		and the two mutable side-data functions set_tags() and
 *		set_annotations().
 *
 * Reads are keyset scans over the (stream_id, id) index (or the primary
 * key for read_all), so a page after a cursor costs the same in a stream of
 * ten entries and one of ten million.  Each combination of optional filters
 * gets its own plan, prepared on first use, so that the planner sees only
 * the predicates actually asked for.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "access/xlog.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(ledger_read);
PG_FUNCTION_INFO_V1(ledger_read_all);
PG_FUNCTION_INFO_V1(ledger_get);
PG_FUNCTION_INFO_V1(ledger_count);
PG_FUNCTION_INFO_V1(ledger_stat);
PG_FUNCTION_INFO_V1(ledger_streams);
PG_FUNCTION_INFO_V1(ledger_set_tags);
PG_FUNCTION_INFO_V1(ledger_set_annotations);

/* Columns of ledger.entry, in order, for a query over entries e. */
#define ENTRY_COLUMNS(stream_expr) \
	"e.id, " stream_expr ", e.seq, e.payload, e.order_key::pg_catalog.text," \
	" e.dedup_key::pg_catalog.text, e.schema_version, e.metadata," \
	" e.tags::pg_catalog.text[], e.annotations, e.created_at, e.updated_at"

#define ENTRY_NATTS			12
#define ENTRY_ATT_PAYLOAD	3	/* zero-based */
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
	 * One statement: the stream's id and current version come from
	 * once-evaluated subqueries, and ORDER BY names the index's leading
	 * column so that only (stream_id, [order_key,] id) can serve it -- never
	 * a scan of the primary key filtered by stream.
	 */
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT " ENTRY_COLUMNS("$1") ","
						   " (SELECT s.schema_version FROM ledger.streams s"
						   " WHERE s.name OPERATOR(pg_catalog.=) $1)"
						   " FROM ledger.entries e"
						   " WHERE e.stream_id OPERATOR(pg_catalog.=) (SELECT s.stream_id"
						   " FROM ledger.streams s WHERE s.name OPERATOR(pg_catalog.=) $1)");
	appendStringInfoString(&sql, desc ? " AND e.id OPERATOR(pg_catalog.<) $2" :
						   " AND e.id OPERATOR(pg_catalog.>) $2");
	if (variant & READ_ORDER_KEY)
		appendStringInfoString(&sql, " AND e.order_key OPERATOR(pg_catalog.=) $4");
	if (variant & READ_TAG)
		appendStringInfoString(&sql, " AND e.tags OPERATOR(pg_catalog.@>) ARRAY[$5]");
	if (variant & READ_ALL_TAGS)
		appendStringInfoString(&sql, " AND e.tags OPERATOR(pg_catalog.@>) $6");
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

		plans[variant] = ledger_prepare_plan(sql.data, READ_NARGS, types);
	}
	pfree(sql.data);
	return plans[variant];
}

/*
 * Copies entries from an SPI result into a tuplestore, upcasting payloads
 * whose version differs from the target.  Upcast plans are resolved once
 * per stream per call.
 */
typedef struct EntrySink
{
	Tuplestorestate *store;
	TupleDesc	desc;
	bool		explicit_target;	/* as_version given: no per-stream target */
	int32		target;
	/* read_all meets many streams: remember each one's plan */
	char	   *plan_stream;
	int32		plan_target;
	LedgerUpcastPlan *plan;
	MemoryContext row_cxt;		/* upcasting scratch, reset per entry */
} EntrySink;

static void
emit_entry(EntrySink *sink, HeapTuple tuple, TupleDesc spidesc, int32 target)
{
	/* read_all's query carries the stream's version as one extra column */
	Datum		values[ENTRY_NATTS + 1];
	bool		nulls[ENTRY_NATTS + 1];
	int32		version;
	MemoryContext old;

	Assert(spidesc->natts <= ENTRY_NATTS + 1);
	heap_deform_tuple(tuple, spidesc, values, nulls);
	version = DatumGetInt32(values[ENTRY_ATT_VERSION]);
	/*
	 * Upcast to the target; by default (no as_version) an entry stamped
	 * with a version newer than the stream's current one is returned as
	 * stored, since only an explicit as_version asks for a way down.
	 */
	if (version != target && (sink->explicit_target || version < target))
	{
		text	   *stream = DatumGetTextPP(values[1]);
		int			len = VARSIZE_ANY_EXHDR(stream);

		/* one plan per stream (and target) met in this call */
		if (sink->plan == NULL || sink->plan_target != target ||
			strlen(sink->plan_stream) != (size_t) len ||
			memcmp(sink->plan_stream, VARDATA_ANY(stream), len) != 0)
		{
			sink->plan_stream = text_to_cstring(stream);
			sink->plan_target = target;
			sink->plan = ledger_upcast_plan(sink->plan_stream, target, sink->explicit_target);
		}
		if (sink->row_cxt == NULL)
			sink->row_cxt = AllocSetContextCreate(CurrentMemoryContext, "ledger upcast row",
												  ALLOCSET_DEFAULT_SIZES);
		else
			MemoryContextReset(sink->row_cxt);

		/* the tuplestore copies the row, so the scratch can go right after */
		old = MemoryContextSwitchTo(sink->row_cxt);
		values[ENTRY_ATT_PAYLOAD] =
			PointerGetDatum(ledger_upcast(sink->plan,
										  DatumGetJsonbP(values[ENTRY_ATT_PAYLOAD]),
										  version,
										  DatumGetInt64(values[0])));
		values[ENTRY_ATT_VERSION] = Int32GetDatum(target);
		tuplestore_putvalues(sink->store, sink->desc, values, nulls);
		MemoryContextSwitchTo(old);
		return;
	}
	tuplestore_putvalues(sink->store, sink->desc, values, nulls);
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

Datum
ledger_read(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *stream_name;
	int64		after;
	int32		limit;
	bool		descending;
	int			variant = 0;
	Datum		args[READ_NARGS];
	char		argnulls[READ_NARGS];
	bool		waiting;
	TimestampTz deadline = 0;
	EntrySink	sink;

	stream_name = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	limit = PG_ARGISNULL(2) ? 100 : ledger_check_limit(PG_GETARG_INT32(2));
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

	memset(argnulls, ' ', sizeof(argnulls));
	args[0] = CStringGetTextDatum(stream_name);
	args[1] = Int64GetDatum(after);
	args[2] = Int64GetDatum(limit);
	if (descending)
		variant |= READ_DESCENDING;
	/* each filter given selects its own plan */
	for (int i = 0; i < 5; i++)
	{
		int			arg = READ_FIRST_FILTER_ARG + i;

		if (PG_ARGISNULL(arg))
		{
			args[3 + i] = (Datum) 0;
			argnulls[3 + i] = 'n';
		}
		else
		{
			args[3 + i] = PG_GETARG_DATUM(arg);
			variant |= READ_ORDER_KEY << i;
		}
	}

	InitMaterializedSRF(fcinfo, 0);
	memset(&sink, 0, sizeof(sink));
	sink.store = rsinfo->setResult;
	sink.desc = rsinfo->setDesc;
	sink.explicit_target = !PG_ARGISNULL(9);

	ledger_spi_connect();

	for (;;)
	{
		SPITupleTable *tuptable;
		uint64		nrows;
		uint64		r;
		int			rc;

		/*
		 * A waiter registers before its query takes a snapshot, so no commit
		 * slips between; a stream that does not exist yet is waited for as
		 * "anything in this database".  A waiting read also uses a fresh
		 * snapshot, to see commits made after its transaction began.
		 */
		if (waiting)
		{
			LedgerStream stream;

			ledger_wait_register(ledger_stream_lookup(stream_name, &stream) ? stream.stream_id : 0);
			PushActiveSnapshot(GetLatestSnapshot());
		}
		rc = SPI_execute_plan(read_plan(variant), args, argnulls, waiting, limit);
		if (waiting)
			PopActiveSnapshot();
		ledger_spi_check(rc, SPI_OK_SELECT, "read");

		/* emit_entry may run queries of its own: keep our result */
		tuptable = SPI_tuptable;
		nrows = SPI_processed;
		for (r = 0; r < nrows; r++)
		{
			HeapTuple	tup = tuptable->vals[r];
			bool		isnull;
			int32		target = sink.explicit_target ? PG_GETARG_INT32(9) :
				DatumGetInt32(SPI_getbinval(tup, tuptable->tupdesc, ENTRY_NATTS + 1, &isnull));

			emit_entry(&sink, tup, tuptable->tupdesc, target);
		}
		if (nrows > 0 || !waiting || !ledger_wait_sleep(deadline))
			break;
	}
	if (waiting)
		ledger_wait_unregister();

	SPI_finish();
	return (Datum) 0;
}

/*
 * read_all: entries of every stream below the commit-order horizon, so that
 * an id is returned only once every lower id is settled.
 */
Datum
ledger_read_all(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plans[3];
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		after;
	int32		limit;
	int			variant = 0;
	char	   *pattern = NULL;
	bool		waiting;
	TimestampTz deadline = 0;
	Datum		args[4];
	EntrySink	sink;

	after = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT64(0);
	limit = PG_ARGISNULL(1) ? 100 : ledger_check_limit(PG_GETARG_INT32(1));
	if (!PG_ARGISNULL(2))
	{
		bool		is_prefix;

		pattern = ledger_check_pattern(PG_GETARG_TEXT_PP(2), &is_prefix);
		if (is_prefix)
		{
			pattern[strlen(pattern) - 1] = '\0';
			variant = pattern[0] ? 2 : 0;	/* '*' is every stream */
		}
		else
			variant = 1;
	}
	waiting = !PG_ARGISNULL(3);
	if (waiting)
	{
		ledger_require_preload("read_all with wait");
		deadline = wait_deadline(PG_GETARG_INTERVAL_P(3));
	}

	InitMaterializedSRF(fcinfo, 0);
	memset(&sink, 0, sizeof(sink));
	sink.store = rsinfo->setResult;
	sink.desc = rsinfo->setDesc;

	args[0] = Int64GetDatum(after);
	args[2] = CStringGetTextDatum(pattern ? pattern : "");
	args[3] = Int64GetDatum(limit);

	ledger_spi_connect();
	if (plans[variant] == NULL)
	{
		static const char *const filters[3] = {
			"",
			" AND s.name OPERATOR(pg_catalog.=) $3",
			" AND pg_catalog.starts_with(s.name, $3)"
		};
		Oid			types[4] = {INT8OID, INT8OID, TEXTOID, INT8OID};
		char	   *sql = psprintf("SELECT " ENTRY_COLUMNS("s.name::pg_catalog.text") ", s.schema_version"
								   " FROM ledger.entries e"
								   " JOIN ledger.streams s ON s.stream_id OPERATOR(pg_catalog.=) e.stream_id"
								   " WHERE e.id OPERATOR(pg_catalog.>) $1 AND e.id OPERATOR(pg_catalog.<) $2%s"
								   " ORDER BY e.id LIMIT $4",
								   filters[variant]);

		plans[variant] = ledger_prepare_plan(sql, 4, types);
	}


	for (;;)
	{
		int64		horizon;
		SPITupleTable *tuptable;
		uint64		nrows;
		int			rc;
		uint64		r;

		if (waiting)
			ledger_wait_register(0);
		/* The horizon is computed before the query takes its snapshot. */
		horizon = ledger_horizon();
		if (horizon > after + 1)
		{
			args[1] = Int64GetDatum(horizon);

			/*
			 * Read with a snapshot taken after the horizon, even in a
			 * REPEATABLE READ transaction: an older snapshot could miss an
			 * entry below the horizon that committed since, and the next
			 * call (after a higher id) would skip it for good.
			 */
			PushActiveSnapshot(GetLatestSnapshot());
			rc = SPI_execute_plan(plans[variant], args, NULL, true, limit);
			PopActiveSnapshot();
			ledger_spi_check(rc, SPI_OK_SELECT, "read_all");
			tuptable = SPI_tuptable;
			nrows = SPI_processed;
			for (r = 0; r < nrows; r++)
			{
				HeapTuple	tup = tuptable->vals[r];
				bool		isnull;
				int32		target = DatumGetInt32(SPI_getbinval(tup, tuptable->tupdesc,
																 ENTRY_NATTS + 1, &isnull));

				emit_entry(&sink, tup, tuptable->tupdesc, target);
			}
			if (nrows > 0)
				break;
		}
		if (!waiting || !ledger_wait_sleep(deadline))
			break;
	}
	if (waiting)
		ledger_wait_unregister();

	SPI_finish();
	return (Datum) 0;
}

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

	if (!ledger_stream_lookup(stream_name, &stream))
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
	rc = SPI_execute_plan(plan, args, NULL, false, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "get");
	if (SPI_processed == 0)
		seq_out_of_range(stream_name, seq, &stream);

	heap_deform_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, values, nulls);
	if (DatumGetInt32(values[ENTRY_ATT_VERSION]) < stream.schema_version)
	{
		LedgerUpcastPlan *up = ledger_upcast_plan(stream_name, stream.schema_version, false);

		values[ENTRY_ATT_PAYLOAD] =
			PointerGetDatum(ledger_upcast(up, DatumGetJsonbP(values[ENTRY_ATT_PAYLOAD]),
										  DatumGetInt32(values[ENTRY_ATT_VERSION]),
										  DatumGetInt64(values[0])));
		values[ENTRY_ATT_VERSION] = Int32GetDatum(stream.schema_version);
	}
	result = SPI_returntuple(heap_form_tuple(desc, values, nulls), desc);
	SPI_finish();
	PG_RETURN_HEAPTUPLEHEADER(result);
}

Datum
ledger_count(PG_FUNCTION_ARGS)
{
	char	   *stream_name;
	LedgerStream stream;
	int64		count = 0;

	stream_name = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	ledger_spi_connect();
	if (ledger_stream_lookup(stream_name, &stream))
		count = stream.last_seq - stream.trimmed_seq;
	SPI_finish();
	PG_RETURN_INT64(count);
}

Datum
ledger_stat(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr entry_at_plan = NULL;
	char	   *stream_name;
	LedgerStream stream;
	TupleDesc	desc;
	Datum		values[9];
	bool		nulls[9];
	int64		count = 0;
	HeapTupleHeader th;

	stream_name = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ledger: stat() must return a composite type");
	BlessTupleDesc(desc);
	memset(nulls, true, sizeof(nulls));

	ledger_spi_connect();

	values[0] = CStringGetTextDatum(stream_name);
	nulls[0] = false;
	if (!ledger_stream_lookup(stream_name, &stream))
	{
		values[1] = Int64GetDatum(0);
		values[5] = Int64GetDatum(0);
		values[6] = Int32GetDatum(ledger_resolve_schema_version(stream_name));
		nulls[1] = nulls[5] = nulls[6] = false;
	}
	else
	{
		count = stream.last_seq - stream.trimmed_seq;
		values[1] = Int64GetDatum(count);
		values[5] = Int64GetDatum(stream.last_seq);
		values[6] = Int32GetDatum(stream.schema_version);
		values[7] = TimestampTzGetDatum(stream.created_at);
		nulls[1] = nulls[5] = nulls[6] = nulls[7] = false;
		if (stream.has_last_appended_at)
		{
			values[8] = TimestampTzGetDatum(stream.last_appended_at);
			nulls[8] = false;
		}
		if (count > 0)
		{
			Datum		args[2];
			bool		isnull;
			int			rc;

			/*
			 * The first and last entries are at known seqs: two point
			 * lookups on (stream_id, seq), whatever the other streams hold.
			 */
			if (entry_at_plan == NULL)
			{
				Oid			types[2] = {INT4OID, INT8OID};

				entry_at_plan = ledger_prepare_plan("SELECT e.id, e.created_at FROM ledger.entries e"
												 " WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
												 " AND e.seq OPERATOR(pg_catalog.=) $2", 2, types);
			}
			args[0] = Int32GetDatum(stream.stream_id);
			args[1] = Int64GetDatum(stream.trimmed_seq + 1);
			rc = SPI_execute_plan(entry_at_plan, args, NULL, false, 1);
			ledger_spi_check(rc, SPI_OK_SELECT, "stat");
			if (SPI_processed == 1)
			{
				values[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
				nulls[2] = false;
			}
			args[1] = Int64GetDatum(stream.last_seq);
			rc = SPI_execute_plan(entry_at_plan, args, NULL, false, 1);
			ledger_spi_check(rc, SPI_OK_SELECT, "stat");
			if (SPI_processed == 1)
			{
				values[3] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
				values[8] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
				nulls[3] = nulls[8] = false;
			}
			values[4] = Int64GetDatum(stream.trimmed_seq + 1);
			nulls[4] = false;
		}
	}

	th = SPI_returntuple(heap_form_tuple(desc, values, nulls), desc);
	SPI_finish();
	PG_RETURN_HEAPTUPLEHEADER(th);
}

/*
 * The smallest string greater than every string starting with prefix, in
 * byte order (the streams table uses the "C" collation); NULL if none.
 */
static char *
prefix_upper_bound(const char *prefix)
{
	int			len = strlen(prefix);
	char	   *upper = pstrdup(prefix);

	while (len > 0)
	{
		unsigned char c = (unsigned char) upper[len - 1];

		if (c < 0xff)
		{
			upper[len - 1] = (char) (c + 1);
			upper[len] = '\0';
			return upper;
		}
		len--;
	}
	return NULL;
}

Datum
ledger_streams(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		limit;
	Datum		args[4];
	char		argnulls[4] = {' ', ' ', ' ', ' '};
	uint64		r;
	int			rc;

	limit = PG_ARGISNULL(1) ? 100 : ledger_check_limit(PG_GETARG_INT32(1));
	args[0] = PG_ARGISNULL(0) ? CStringGetTextDatum("") : PG_GETARG_DATUM(0);
	args[1] = PG_ARGISNULL(2) ? CStringGetTextDatum("") : PG_GETARG_DATUM(2);
	args[2] = Int64GetDatum(limit);
	{
		char	   *upper = PG_ARGISNULL(2) ? NULL :
			prefix_upper_bound(text_to_cstring(PG_GETARG_TEXT_PP(2)));

		if (upper)
			args[3] = CStringGetTextDatum(upper);
		else
		{
			args[3] = (Datum) 0;
			argnulls[3] = 'n';
		}
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[4] = {TEXTOID, TEXTOID, INT8OID, TEXTOID};

		plan = ledger_prepare_plan("SELECT s.name::pg_catalog.text FROM ledger.streams s"
								   " WHERE s.name OPERATOR(pg_catalog.>) $1"
								   " AND s.name OPERATOR(pg_catalog.>=) $2"
								   " AND ($4 IS NULL OR s.name OPERATOR(pg_catalog.<) $4)"
								   " AND pg_catalog.starts_with(s.name, $2)"
								   " AND s.last_seq OPERATOR(pg_catalog.>) s.trimmed_seq"
								   " ORDER BY s.name LIMIT $3",
								   4, types);
	}
	rc = SPI_execute_plan(plan, args, argnulls, false, limit);
	ledger_spi_check(rc, SPI_OK_SELECT, "streams");
	for (r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		name = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &name, &isnull);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * Run one of the side-data updates on an entry of a stream; P0002 when no
 * such entry.  The statement returns the JSON text of a "ledger.annotate"
 * logical message, so decoding consumers learn about the change.
 */
static void
update_side_data(SPIPlanPtr plan, const char *stream_name, int64 id, Datum value)
{
	Datum		args[3];
	volatile int rc = 0;

	args[0] = Int64GetDatum(id);
	args[1] = CStringGetTextDatum(stream_name);
	args[2] = value;

	ledger_entries_writable(true);
	PG_TRY();
	{
		rc = SPI_execute_plan(plan, args, NULL, false, 0);
	}
	PG_FINALLY();
	{
		ledger_entries_writable(false);
	}
	PG_END_TRY();
	ledger_spi_check(rc, SPI_OK_UPDATE_RETURNING, "entry side-data update");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("entry " INT64_FORMAT " not found in stream \"%s\"", id, stream_name)));
	if (XLogLogicalInfoActive())
	{
		char	   *msg = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		LogLogicalMessage("ledger.annotate", msg, strlen(msg), true);
	}
}

#define SIDE_DATA_SQL(set_clause) \
	"UPDATE ledger.entries e SET " set_clause ", updated_at = pg_catalog.now()" \
	" WHERE e.id OPERATOR(pg_catalog.=) $1 AND e.stream_id OPERATOR(pg_catalog.=)" \
	" (SELECT s.stream_id FROM ledger.streams s WHERE s.name OPERATOR(pg_catalog.=) $2)" \
	" RETURNING pg_catalog.jsonb_build_object('stream', $2, 'id', e.id," \
	" 'tags', pg_catalog.to_jsonb(e.tags), 'annotations', e.annotations)::pg_catalog.text"

Datum
ledger_set_tags(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *stream_name;
	ArrayType  *tags;

	stream_name = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("id must not be null")));
	tags = PG_ARGISNULL(2) ? construct_empty_array(TEXTOID) : PG_GETARG_ARRAYTYPE_P(2);
	ledger_check_tags(tags, "tags");

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[3] = {INT8OID, TEXTOID, TEXTARRAYOID};

		plan = ledger_prepare_plan(SIDE_DATA_SQL("tags = $3"), 3, types);
	}
	update_side_data(plan, stream_name, PG_GETARG_INT64(1), PointerGetDatum(tags));
	SPI_finish();
	PG_RETURN_VOID();
}

Datum
ledger_set_annotations(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *stream_name;
	Jsonb	   *annotations;

	stream_name = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("id must not be null")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("annotations must not be null"),
				 errhint("Use a JSON null value for a key to delete it.")));
	annotations = PG_GETARG_JSONB_P(2);
	ledger_check_string_object(annotations, "annotations", true);

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[3] = {INT8OID, TEXTOID, JSONBOID};

		/* Stored annotations never hold nulls, so stripping drops only deletions. */
		plan = ledger_prepare_plan(SIDE_DATA_SQL("annotations = pg_catalog.jsonb_strip_nulls(e.annotations OPERATOR(pg_catalog.||) $3)"),
								   3, types);
	}
	update_side_data(plan, stream_name, PG_GETARG_INT64(1), PointerGetDatum(annotations));
	SPI_finish();
	PG_RETURN_VOID();
}
