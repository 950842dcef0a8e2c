/*-------------------------------------------------------------------------
 *
 * src/stat.c
 *		What a stream holds, without scanning it: count(), stat() and
 *		streams().
 *
 * count = last_seq - trimmed_seq of the stream's row, and the first and
 * last entries are point lookups on (stream_id, seq), so the cost is the
 * same for a stream of ten entries and one of ten million, whatever the
 * other streams hold.  These functions are STABLE and read with the
 * transaction's snapshot (SPI read-only).
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(ledger_count);
PG_FUNCTION_INFO_V1(ledger_stat);
PG_FUNCTION_INFO_V1(ledger_streams);

Datum
ledger_count(PG_FUNCTION_ARGS)
{
	char	   *stream_name;
	LedgerStream stream;
	int64		count = 0;

	stream_name = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	ledger_spi_connect();
	if (ledger_stream_lookup(stream_name, true, &stream))
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
	if (!ledger_stream_lookup(stream_name, true, &stream))
	{
		values[1] = Int64GetDatum(0);
		values[5] = Int64GetDatum(0);
		values[6] = Int32GetDatum(ledger_current_version(stream_name));
		nulls[1] = nulls[5] = nulls[6] = false;
	}
	else
	{
		count = stream.last_seq - stream.trimmed_seq;
		values[1] = Int64GetDatum(count);
		values[5] = Int64GetDatum(stream.last_seq);
		values[6] = Int32GetDatum(ledger_current_version(stream_name));
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
			rc = SPI_execute_plan(entry_at_plan, args, NULL, true, 1);
			ledger_spi_check(rc, SPI_OK_SELECT, "stat");
			if (SPI_processed == 1)
			{
				values[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
				nulls[2] = false;
			}
			args[1] = Int64GetDatum(stream.last_seq);
			rc = SPI_execute_plan(entry_at_plan, args, NULL, true, 1);
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
	rc = SPI_execute_plan(plan, args, argnulls, true, limit);
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

