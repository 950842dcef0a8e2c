/*-------------------------------------------------------------------------
 *
 * src/append.c
 *		append() and both append_batch() forms: argument unpacking, dedup,
 *		expected_seq, id/seq assignment and the insert itself.
 *
 * One append (or batch) is: validate everything; lock the stream row while
 * reserving n seqs; look the batch's dedup keys up in one index probe; give
 * back the seqs of duplicates; check expected_seq; take ids; insert all new
 * rows with one statement.  Concurrent appends with the same dedup key meet
 * on the stream row lock, so the second one finds the first one's entry
 * instead of raising a unique violation.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "compat.h"
#include "executor/executor.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/typcache.h"

PG_FUNCTION_INFO_V1(ledger_append);
PG_FUNCTION_INFO_V1(ledger_append_batch);
PG_FUNCTION_INFO_V1(ledger_append_batch_jsonb);

static text *
empty_text(void)
{
	return cstring_to_text("");
}

static Jsonb *
empty_object(void)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
}

static ArrayType *
empty_tags(void)
{
	return construct_empty_array(TEXTOID);
}

/* Fill NULL optional fields with their defaults and validate the item. */
static void
complete_item(LedgerAppendItem *item, int ordinal)
{
	ledger_check_payload(item->payload, ordinal);
	if (item->order_key == NULL)
		item->order_key = empty_text();
	if (item->dedup_key == NULL)
		item->dedup_key = empty_text();
	if (item->metadata == NULL)
		item->metadata = empty_object();
	else
		ledger_check_string_object(item->metadata, "metadata", false);
	if (item->tags == NULL)
		item->tags = empty_tags();
	else
		ledger_check_tags(item->tags, "tags");
	ledger_check_entry_size(item->payload, item->metadata, item->tags, NULL, ordinal);
	item->id = 0;
	item->seq = 0;
	item->duplicate = false;
}

/* A batch item's dedup key, for sorting the batch by key. */
typedef struct DedupRef
{
	text	   *key;
	int			item;			/* index into the batch */
} DedupRef;

/* Order by key bytes (length first: only equality matters), then position. */
static int
dedup_key_cmp(const text *a, const text *b)
{
	Size		la = VARSIZE_ANY_EXHDR(a);
	Size		lb = VARSIZE_ANY_EXHDR(b);

	if (la != lb)
		return la < lb ? -1 : 1;
	return memcmp(VARDATA_ANY(a), VARDATA_ANY(b), la);
}

static int
dedup_ref_cmp(const void *a, const void *b)
{
	const DedupRef *ra = (const DedupRef *) a;
	const DedupRef *rb = (const DedupRef *) b;
	int			c = dedup_key_cmp(ra->key, rb->key);

	if (c != 0)
		return c;
	return ra->item < rb->item ? -1 : ra->item > rb->item ? 1 : 0;
}

/* The first ref (lowest position) whose key equals key, or -1. */
static int
dedup_ref_find(DedupRef *refs, int nrefs, text *key)
{
	int			lo = 0,
				hi = nrefs;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (dedup_key_cmp(refs[mid].key, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < nrefs && dedup_key_cmp(refs[lo].key, key) == 0 ? lo : -1;
}

/*
 * Mark duplicates: against the stream's existing entries (one probe for all
 * keys), then against earlier items of the same batch.  The batch's keys are
 * sorted once, so both steps are O(n log n) -- the stream is locked
 * meanwhile, and a batch may carry hundreds of thousands of keys.  Returns
 * the number of duplicates.
 */
static int
resolve_duplicates(int32 stream_id, LedgerAppendItem *items, int nitems)
{
	static SPIPlanPtr plan = NULL;
	DedupRef   *refs;
	Datum	   *keys;
	int			nrefs = 0;
	int			nkeys = 0;
	int			ndup = 0;
	int			run = 0;
	int			i;
	uint64		r;

	refs = palloc(sizeof(DedupRef) * nitems);
	for (i = 0; i < nitems; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (VARSIZE_ANY_EXHDR(items[i].dedup_key) == 0)
			continue;
		refs[nrefs].key = items[i].dedup_key;
		refs[nrefs].item = i;
		nrefs++;
	}
	if (nrefs == 0)
	{
		pfree(refs);
		return 0;
	}
	qsort(refs, nrefs, sizeof(DedupRef), dedup_ref_cmp);

	/* each distinct key once, for the probe */
	keys = palloc(sizeof(Datum) * nrefs);
	for (i = 0; i < nrefs; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (i == 0 || dedup_key_cmp(refs[i - 1].key, refs[i].key) != 0)
			keys[nkeys++] = PointerGetDatum(refs[i].key);
	}

	if (plan == NULL)
	{
		Oid			types[2] = {INT4OID, TEXTARRAYOID};

		plan = ledger_prepare_plan("SELECT dedup_key, id, seq FROM ledger.entries"
								   " WHERE stream_id OPERATOR(pg_catalog.=) $1"
								   " AND dedup_key OPERATOR(pg_catalog.=) ANY ($2)"
								   " AND dedup_key OPERATOR(pg_catalog.<>) ''",
								   2, types);
	}
	{
		Datum		args[2];
		int			rc;

		args[0] = Int32GetDatum(stream_id);
		args[1] = PointerGetDatum(construct_array(keys, nkeys, TEXTOID, -1, false, TYPALIGN_INT));
		rc = SPI_execute_plan(plan, args, NULL, false, 0);
		ledger_spi_check(rc, SPI_OK_SELECT, "dedup probe");
		pfree(DatumGetPointer(args[1]));
	}
	pfree(keys);

	/* Every item whose key the stream already holds is that entry. */
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		text	   *key = DatumGetTextPP(SPI_getbinval(tup, desc, 1, &isnull));
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		int64		seq = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		int			k;

		CHECK_FOR_INTERRUPTS();
		for (k = dedup_ref_find(refs, nrefs, key);
			 k >= 0 && k < nrefs && dedup_key_cmp(refs[k].key, key) == 0;
			 k++)
		{
			LedgerAppendItem *item = &items[refs[k].item];

			if (!item->duplicate)
			{
				item->duplicate = true;
				item->id = id;
				item->seq = seq;
				ndup++;
			}
		}
	}

	/*
	 * Later occurrences of a key inside the batch point at the first one
	 * (the sort puts it first in its run); ids are filled in later.
	 */
	for (i = 1; i < nrefs; i++)
	{
		LedgerAppendItem *item = &items[refs[i].item];

		CHECK_FOR_INTERRUPTS();
		if (dedup_key_cmp(refs[run].key, refs[i].key) != 0)
		{
			run = i;
			continue;
		}
		if (item->duplicate)
			continue;
		item->duplicate = true;
		item->id = -(refs[run].item + 1);	/* resolved after ids are assigned */
		ndup++;
	}
	pfree(refs);
	return ndup;
}

/*
 * The entries table's layout, as the direct insert writes it.  A table that
 * differs (or carries INSERT triggers, CHECK constraints or generated
 * columns that only the executor would honour) is written through SPI.
 */
static const char *const entry_columns[] = {
	"id", "seq", "created_at", "stream_id", "schema_version", "updated_at",
	"order_key", "dedup_key", "payload", "metadata", "tags", "annotations"
};

#define ENTRY_NCOLUMNS	lengthof(entry_columns)

/* Rows formed and inserted per heap_multi_insert() call. */
#define DIRECT_INSERT_CHUNK 1000

static bool
entries_direct_ok(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);

	if (desc->constr != NULL &&
		(desc->constr->num_check > 0 || desc->constr->has_generated_stored))
		return false;
	return ledger_relation_has_layout(rel, entry_columns, ENTRY_NCOLUMNS, CMD_INSERT);
}

/*
 * Insert the batch's new rows straight into the heap and its indexes, as
 * COPY does, instead of planning and running an INSERT: no executor
 * start-up, one heap_multi_insert() per chunk.  The unique indexes
 * ((stream_id, seq), (stream_id, dedup_key)) are still checked by
 * index_insert(), so a violation raises 23505 as the INSERT did.  Returns
 * false (nothing written) when the table needs the executor.
 */
static bool
insert_direct(Oid relid, int32 stream_id, int32 version,
			  LedgerAppendItem *items, int nitems)
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot **slots;
	MemoryContext chunk_cxt;
	MemoryContext oldcxt;
	CommandId	cid;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	Datum		annotations = PointerGetDatum(empty_object());
	int			nslots;
	int			i = 0;

	rel = table_open(relid, RowExclusiveLock);
	if (!entries_direct_ok(rel))
	{
		table_close(rel, RowExclusiveLock);
		return false;
	}

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	cid = GetCurrentCommandId(true);

	nslots = Min(nitems, DIRECT_INSERT_CHUNK);
	slots = palloc(sizeof(TupleTableSlot *) * nslots);
	for (i = 0; i < nslots; i++)
		slots[i] = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsHeapTuple);

	chunk_cxt = AllocSetContextCreate(CurrentMemoryContext, "ledger append chunk",
									  ALLOCSET_DEFAULT_SIZES);
	i = 0;
	while (i < nitems)
	{
		int			n = 0;
		int			k;

		oldcxt = MemoryContextSwitchTo(chunk_cxt);
		for (; i < nitems && n < nslots; i++)
		{
			LedgerAppendItem *item = &items[i];
			Datum		values[ENTRY_NCOLUMNS];
			bool		nulls[ENTRY_NCOLUMNS] = {false};

			CHECK_FOR_INTERRUPTS();
			if (item->duplicate)
				continue;
			values[0] = Int64GetDatum(item->id);
			values[1] = Int64GetDatum(item->seq);
			values[2] = TimestampTzGetDatum(now);
			values[3] = Int32GetDatum(stream_id);
			values[4] = Int32GetDatum(version);
			values[5] = (Datum) 0;
			nulls[5] = true;	/* updated_at: never changed yet */
			values[6] = PointerGetDatum(item->order_key);
			values[7] = PointerGetDatum(item->dedup_key);
			values[8] = PointerGetDatum(item->payload);
			values[9] = PointerGetDatum(item->metadata);
			values[10] = PointerGetDatum(item->tags);
			values[11] = annotations;
			ExecStoreHeapTuple(heap_form_tuple(RelationGetDescr(rel), values, nulls),
							   slots[n], false);
			n++;
		}

		if (n == 1)
			table_tuple_insert(rel, slots[0], cid, 0, NULL);
		else if (n > 1)
			table_multi_insert(rel, slots, n, cid, 0, NULL);
		for (k = 0; k < n; k++)
		{
			List	   *recheck;

			CHECK_FOR_INTERRUPTS();
			recheck = ledger_insert_index_tuples(rri, slots[k], estate, false);
			list_free(recheck);
			ResetPerTupleExprContext(estate);
			ExecClearTuple(slots[k]);
		}
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(chunk_cxt);
	}

	MemoryContextDelete(chunk_cxt);
	for (i = 0; i < nslots; i++)
		ExecDropSingleTupleTableSlot(slots[i]);
	pfree(slots);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);	/* the lock is held to commit, as an INSERT's */
	return true;
}

static void
insert_one(int32 stream_id, int32 version, LedgerAppendItem *item)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[9];
	int			rc;

	if (plan == NULL)
	{
		Oid			types[9] = {INT8OID, INT8OID, INT4OID, INT4OID, TEXTOID,
		TEXTOID, JSONBOID, JSONBOID, TEXTARRAYOID};

		plan = ledger_prepare_plan("INSERT INTO ledger.entries (id, seq, created_at, stream_id,"
								   " schema_version, order_key, dedup_key, payload, metadata, tags,"
								   " annotations)"
								   " VALUES ($1, $2, pg_catalog.now(), $3, $4, $5, $6, $7, $8, $9, '{}')",
								   9, types);
	}
	args[0] = Int64GetDatum(item->id);
	args[1] = Int64GetDatum(item->seq);
	args[2] = Int32GetDatum(stream_id);
	args[3] = Int32GetDatum(version);
	args[4] = PointerGetDatum(item->order_key);
	args[5] = PointerGetDatum(item->dedup_key);
	args[6] = PointerGetDatum(item->payload);
	args[7] = PointerGetDatum(item->metadata);
	args[8] = PointerGetDatum(item->tags);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_INSERT, "entry insert");
}

/*
 * Insert the new rows of a batch with a single statement over unnest().
 * Per-row tags travel as array literals, since a text[][] must be
 * rectangular.
 */
static void
insert_many(int32 stream_id, int32 version, LedgerAppendItem *items, int nitems, int nnew)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *ids = palloc(sizeof(Datum) * nnew);
	Datum	   *seqs = palloc(sizeof(Datum) * nnew);
	Datum	   *okeys = palloc(sizeof(Datum) * nnew);
	Datum	   *dkeys = palloc(sizeof(Datum) * nnew);
	Datum	   *payloads = palloc(sizeof(Datum) * nnew);
	Datum	   *metas = palloc(sizeof(Datum) * nnew);
	Datum	   *tags = palloc(sizeof(Datum) * nnew);
	Datum		args[9];
	FmgrInfo	array_out_fn;
	Datum		empty_tags_literal = CStringGetTextDatum("{}");
	int			i,
				k = 0,
				rc;

	fmgr_info(F_ARRAY_OUT, &array_out_fn);
	if (plan == NULL)
	{
		Oid			types[9] = {INT4OID, INT4OID, INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, JSONBARRAYOID, JSONBARRAYOID, TEXTARRAYOID};

		plan = ledger_prepare_plan("INSERT INTO ledger.entries (id, seq, created_at, stream_id,"
								   " schema_version, order_key, dedup_key, payload, metadata, tags,"
								   " annotations)"
								   " SELECT u.id, u.seq, pg_catalog.now(), $1, $2, u.ok, u.dk, u.p, u.m,"
								   " u.t::pg_catalog.text[], '{}'"
								   " FROM ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4),"
								   " pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7),"
								   " pg_catalog.unnest($8), pg_catalog.unnest($9))"
								   " AS u(id, seq, ok, dk, p, m, t)",
								   9, types);
	}

	for (i = 0; i < nitems; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (items[i].duplicate)
			continue;
		ids[k] = Int64GetDatum(items[i].id);
		seqs[k] = Int64GetDatum(items[i].seq);
		okeys[k] = PointerGetDatum(items[i].order_key);
		dkeys[k] = PointerGetDatum(items[i].dedup_key);
		payloads[k] = PointerGetDatum(items[i].payload);
		metas[k] = PointerGetDatum(items[i].metadata);
		tags[k] = ARR_NDIM(items[i].tags) == 0 ? empty_tags_literal :
			CStringGetTextDatum(OutputFunctionCall(&array_out_fn,
												   PointerGetDatum(items[i].tags)));
		k++;
	}
	Assert(k == nnew);

	args[0] = Int32GetDatum(stream_id);
	args[1] = Int32GetDatum(version);
	args[2] = PointerGetDatum(construct_array(ids, nnew, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_array(seqs, nnew, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[4] = PointerGetDatum(construct_array(okeys, nnew, TEXTOID, -1, false, TYPALIGN_INT));
	args[5] = PointerGetDatum(construct_array(dkeys, nnew, TEXTOID, -1, false, TYPALIGN_INT));
	args[6] = PointerGetDatum(construct_array(payloads, nnew, JSONBOID, -1, false, TYPALIGN_INT));
	args[7] = PointerGetDatum(construct_array(metas, nnew, JSONBOID, -1, false, TYPALIGN_INT));
	args[8] = PointerGetDatum(construct_array(tags, nnew, TEXTOID, -1, false, TYPALIGN_INT));
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_INSERT, "batch insert");
	if (SPI_processed != (uint64) nnew)
		elog(ERROR, "ledger: batch insert wrote " UINT64_FORMAT " rows, expected %d",
			 SPI_processed, nnew);
}

/*
 * Append items to a stream.  On return each item carries its id and seq,
 * and duplicate = true when its dedup key was already taken (by an existing
 * entry or an earlier item of the batch), with that entry's id and seq.
 */
void
LedgerAppend(const char *stream_name, LedgerAppendItem *items, int nitems,
			 bool has_version, int32 schema_version,
			 bool has_expected_seq, int64 expected_seq)
{
	LedgerStream stream;
	int64		prev_last_seq;
	int			ndup;
	int			nnew;
	int32		version;
	Oid			seqoid;
	int			i;

	for (i = 0; i < nitems; i++)
	{
		CHECK_FOR_INTERRUPTS();
		complete_item(&items[i], nitems > 1 ? i + 1 : 0);
	}
	if (has_version && schema_version < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema_version must be at least 1, not %d", schema_version)));
	if (has_expected_seq && expected_seq < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected_seq must not be negative, not " INT64_FORMAT, expected_seq),
				 errhint("Use 0 to require an empty stream.")));
	if (nitems == 0)
		return;

	ledger_spi_connect();
	version = has_version ? schema_version : ledger_current_version(stream_name);

	seqoid = ledger_relid("entries_id_seq");

	ledger_stream_lock(stream_name, nitems, &stream);
	prev_last_seq = stream.last_seq - nitems;

	ndup = resolve_duplicates(stream.stream_id, items, nitems);
	nnew = nitems - ndup;
	if (ndup > 0)
		ledger_stream_unbump(stream.stream_id, ndup);

	if (nnew > 0 && has_expected_seq && expected_seq != prev_last_seq)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("stream \"%s\" is at seq " INT64_FORMAT ", not at the expected seq " INT64_FORMAT,
						stream_name, prev_last_seq, expected_seq),
				 errdetail("The stream's last seq is " INT64_FORMAT ".", prev_last_seq)));

	if (nnew > 0)
	{
		int64		next_seq = prev_last_seq;

		/* The horizon must know our floor before we draw an id. */
		ledger_horizon_before_id();
		for (i = 0; i < nitems; i++)
		{
			CHECK_FOR_INTERRUPTS();
			if (items[i].duplicate)
				continue;
			items[i].id = nextval_internal(seqoid, false);
			items[i].seq = ++next_seq;
		}
		if (!insert_direct(ledger_relid("entries"), stream.stream_id, version,
						   items, nitems))
		{
			/* the table needs the executor (e.g. an INSERT trigger) */
			if (nitems == 1)
				insert_one(stream.stream_id, version, &items[0]);
			else
				insert_many(stream.stream_id, version, items, nitems, nnew);
		}
		ledger_wait_note_append(stream.stream_id);
	}

	/* In-batch duplicates point at the item that came first. */
	for (i = 0; i < nitems; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (items[i].duplicate && items[i].id < 0)
		{
			LedgerAppendItem *first = &items[-items[i].id - 1];

			items[i].id = first->id;
			items[i].seq = first->seq;
		}
	}

	SPI_finish();
}

Datum
ledger_append(PG_FUNCTION_ARGS)
{
	char	   *stream;
	LedgerAppendItem item;

	stream = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	memset(&item, 0, sizeof(item));
	item.payload = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	item.order_key = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	item.dedup_key = PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3);
	item.metadata = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
	item.tags = PG_ARGISNULL(5) ? NULL : PG_GETARG_ARRAYTYPE_P(5);

	LedgerAppend(stream, &item, 1,
				 !PG_ARGISNULL(6), PG_ARGISNULL(6) ? 0 : PG_GETARG_INT32(6),
				 !PG_ARGISNULL(7), PG_ARGISNULL(7) ? 0 : PG_GETARG_INT64(7));

	PG_RETURN_INT64(item.id);
}

/* Emit (ord, id, seq, duplicate) rows for a finished batch. */
static void
return_batch(FunctionCallInfo fcinfo, LedgerAppendItem *items, int nitems)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < nitems; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		CHECK_FOR_INTERRUPTS();
		values[0] = Int32GetDatum(i + 1);
		values[1] = Int64GetDatum(items[i].id);
		values[2] = Int64GetDatum(items[i].seq);
		values[3] = BoolGetDatum(items[i].duplicate);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

static void
append_batch_common(FunctionCallInfo fcinfo, const char *stream,
					LedgerAppendItem *items, int nitems)
{
	LedgerAppend(stream, items, nitems,
				 !PG_ARGISNULL(2), PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2),
				 !PG_ARGISNULL(3), PG_ARGISNULL(3) ? 0 : PG_GETARG_INT64(3));
	return_batch(fcinfo, items, nitems);
}

Datum
ledger_append_batch(PG_FUNCTION_ARGS)
{
	char	   *stream;
	ArrayType  *arr;
	Oid			elemtype;
	Datum	   *elems;
	bool	   *elemnulls;
	int			nitems;
	LedgerAppendItem *items;
	TupleDesc	desc = NULL;
	int			i;

	stream = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("entries must not be null")));
	arr = PG_GETARG_ARRAYTYPE_P(1);
	elemtype = ARR_ELEMTYPE(arr);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("entries must be a one-dimensional array")));
	deconstruct_array(arr, elemtype, -1, false, TYPALIGN_DOUBLE, &elems, &elemnulls, &nitems);

	items = palloc0(sizeof(LedgerAppendItem) * Max(nitems, 1));
	for (i = 0; i < nitems; i++)
	{
		HeapTupleHeader th;
		HeapTupleData tuple;
		Datum		values[5];
		bool		nulls[5];

		CHECK_FOR_INTERRUPTS();
		if (elemnulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("batch entry %d must not be null", i + 1)));
		th = DatumGetHeapTupleHeader(elems[i]);
		if (desc == NULL)
		{
			desc = lookup_rowtype_tupdesc_copy(HeapTupleHeaderGetTypeId(th),
											   HeapTupleHeaderGetTypMod(th));
			if (desc->natts != 5)
				elog(ERROR, "ledger: unexpected ledger.append_input layout");
		}
		tuple.t_len = HeapTupleHeaderGetDatumLength(th);
		ItemPointerSetInvalid(&tuple.t_self);
		tuple.t_tableOid = InvalidOid;
		tuple.t_data = th;
		heap_deform_tuple(&tuple, desc, values, nulls);

		items[i].payload = nulls[0] ? NULL : DatumGetJsonbP(values[0]);
		items[i].order_key = nulls[1] ? NULL : DatumGetTextPP(values[1]);
		items[i].dedup_key = nulls[2] ? NULL : DatumGetTextPP(values[2]);
		items[i].metadata = nulls[3] ? NULL : DatumGetJsonbP(values[3]);
		items[i].tags = nulls[4] ? NULL : DatumGetArrayTypeP(values[4]);
	}

	append_batch_common(fcinfo, stream, items, nitems);
	return (Datum) 0;
}

/* A JSON string or null field of a batch entry, as text (NULL for null). */
static text *
json_string_field(JsonbValue *v, const char *field, int ordinal)
{
	if (v->type == jbvNull)
		return NULL;
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" of batch entry %d must be a string", field, ordinal)));
	return cstring_to_text_with_len(v->val.string.val, v->val.string.len);
}

/* The "tags" field of a batch entry: a JSON array of strings, or null. */
static ArrayType *
json_tags_field(JsonbValue *v, int ordinal)
{
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	ArrayBuildState *abs;

	if (v->type == jbvNull)
		return NULL;
	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"tags\" of batch entry %d must be an array of strings", ordinal)));

	abs = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (elem.type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"tags\" of batch entry %d must be an array of strings", ordinal)));
		accumArrayResult(abs,
						 PointerGetDatum(cstring_to_text_with_len(elem.val.string.val,
																  elem.val.string.len)),
						 false, TEXTOID, CurrentMemoryContext);
	}
	return DatumGetArrayTypeP(makeArrayResult(abs, CurrentMemoryContext));
}

/* Unpack one {"payload":…, "order_key":…, …} object of the jsonb batch form. */
static void
item_from_json(JsonbValue *obj, LedgerAppendItem *item, int ordinal)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;
	bool		has_payload = false;

	if (obj->type != jbvBinary || !JsonContainerIsObject(obj->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch entry %d must be a JSON object", ordinal),
				 errdetail("Each entry looks like {\"payload\": …, \"order_key\": …, \"dedup_key\": …, \"metadata\": {…}, \"tags\": […]}.")));

	it = JsonbIteratorInit(obj->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;

		if (strcmp(key, "payload") == 0)
		{
			item->payload = JsonbValueToJsonb(&v);
			has_payload = true;
		}
		else if (strcmp(key, "order_key") == 0)
			item->order_key = json_string_field(&v, key, ordinal);
		else if (strcmp(key, "dedup_key") == 0)
			item->dedup_key = json_string_field(&v, key, ordinal);
		else if (strcmp(key, "metadata") == 0)
			item->metadata = v.type == jbvNull ? NULL : JsonbValueToJsonb(&v);
		else if (strcmp(key, "tags") == 0)
			item->tags = json_tags_field(&v, ordinal);
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("batch entry %d has unknown key \"%s\"", ordinal, key),
					 errhint("Known keys are payload, order_key, dedup_key, metadata and tags.")));
	}
	if (!has_payload)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch entry %d has no \"payload\"", ordinal)));
}

Datum
ledger_append_batch_jsonb(PG_FUNCTION_ARGS)
{
	char	   *stream;
	Jsonb	   *entries;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	LedgerAppendItem *items;
	int			nitems;
	int			i = 0;

	stream = ledger_check_stream_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	/* also serves append_batch(text, text, …), for untyped literals */
	entries = ledger_jsonb_arg(fcinfo, 1);
	if (entries == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("entries must not be null")));
	if (!JB_ROOT_IS_ARRAY(entries) || JB_ROOT_IS_SCALAR(entries))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("entries must be a JSON array, not %s", ledger_jsonb_kind(entries))));

	nitems = JB_ROOT_COUNT(entries);
	items = palloc0(sizeof(LedgerAppendItem) * Max(nitems, 1));
	it = JsonbIteratorInit(&entries->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		CHECK_FOR_INTERRUPTS();
		if (tok != WJB_ELEM)
			continue;
		item_from_json(&v, &items[i], i + 1);
		i++;
	}
	Assert(i == nitems);

	append_batch_common(fcinfo, stream, items, nitems);
	return (Datum) 0;
}
