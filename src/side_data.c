/*-------------------------------------------------------------------------
 *
 * src/side_data.c
 *		The only mutable parts of an entry: set_tags() replaces its tags,
 *		set_annotations() merges into its annotations (a JSON null deletes a
 *		key).  Both stamp updated_at.
 *
 * The UPDATE goes through the guard trigger's door (guard.c) for exactly
 * one statement.  Each change writes a transactional "ledger.annotate"
 * logical message naming the call ("op": "tags" or "annotations"), so the
 * output plugin (decoder.c) can tell decoding consumers which it was.  The entry's
 * payload, metadata, tags and annotations together stay within
 * ledger.max_payload_bytes.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/detoast.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "compat.h"

PG_FUNCTION_INFO_V1(ledger_set_tags);
PG_FUNCTION_INFO_V1(ledger_set_annotations);

/*
 * The updated row (columns 2..5 of the RETURNING list: payload, metadata,
 * tags, annotations) must stay within ledger.max_payload_bytes, measured
 * as append measures it, without detoasting anything.  An error here
 * rolls the update back.
 */
static void
check_updated_size(HeapTuple tuple, TupleDesc desc, int64 id)
{
	Size		size = 0;
	int			col;

	for (col = 2; col <= 5; col++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(tuple, desc, col, &isnull);

		if (!isnull)
			size += toast_raw_datum_size(d) - VARHDRSZ;
	}
	if (size > (Size) ledger_max_payload_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("entry " INT64_FORMAT " would be %zu bytes, over ledger.max_payload_bytes (%d)",
						id, size, ledger_max_payload_bytes),
				 errdetail("Payload, metadata, tags and annotations count together.")));
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
				 errmsg("entry " INT64_FORMAT " not found in stream \"%s\"", id,
						ledger_quote_value(stream_name, strlen(stream_name)))));
	check_updated_size(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, id);
	ledger_mirror_note_update(id);
	if (XLogLogicalInfoActive())
	{
		char	   *msg = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		ledger_log_logical_message("ledger.annotate", msg, strlen(msg));
	}
}

/* op names the call in the message, for the output plugin's line kind */
#define SIDE_DATA_SQL(op, set_clause) \
	"UPDATE ledger.entries e SET " set_clause ", updated_at = pg_catalog.now()" \
	" WHERE e.id OPERATOR(pg_catalog.=) $1 AND e.stream_id OPERATOR(pg_catalog.=)" \
	" (SELECT s.stream_id FROM ledger.streams s WHERE s.name OPERATOR(pg_catalog.=) $2)" \
	" RETURNING pg_catalog.jsonb_build_object('op', '" op "', 'stream', $2, 'id', e.id," \
	" 'tags', pg_catalog.to_jsonb(e.tags), 'annotations', e.annotations)::pg_catalog.text," \
	" e.payload, e.metadata, e.tags, e.annotations"

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

		plan = ledger_prepare_plan(SIDE_DATA_SQL("tags", "tags = $3"), 3, types);
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
		plan = ledger_prepare_plan(SIDE_DATA_SQL("annotations", "annotations = pg_catalog.jsonb_strip_nulls(e.annotations OPERATOR(pg_catalog.||) $3)"),
								   3, types);
	}
	update_side_data(plan, stream_name, PG_GETARG_INT64(1), PointerGetDatum(annotations));
	SPI_finish();
	PG_RETURN_VOID();
}
