/*-------------------------------------------------------------------------
 *
 * src/stream_names.c
 *		The trigger that copies each new stream's name into
 *		ledger.stream_names, the user catalog table the output plugin
 *		(decoder.c) reads names from under its historic snapshot.
 *
 * The row is inserted with HEAP_INSERT_NO_LOGICAL.  As a user catalog
 * table, ledger.stream_names gets the extra WAL (command ids) that makes
 * the row visible to historic snapshots, but its tuples stay out of the
 * stream of changes that logical decoding replays.  That matters: replaying
 * a change opens its relation, and opening a user catalog table that has
 * since been dropped fails, so ordinary INSERTs here would leave every slot
 * of the database (whatever its plugin) unable to get past them after a
 * DROP EXTENSION ledger.  Rows are never updated or deleted.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/index.h"
#include "commands/trigger.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(ledger_copy_stream_name);

/* The attribute number of a column of our own table. */
static AttrNumber
column_number(Relation rel, const char *name)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(rel), name);

	if (attnum == InvalidAttrNumber)
		elog(ERROR, "relation \"%s\" has no column \"%s\"",
			 RelationGetRelationName(rel), name);
	return attnum;
}

static bool
stream_name_exists(Relation names, int32 stream_id)
{
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	/* RelationGetIndexList() is what sets rd_pkindex */
	list_free(RelationGetIndexList(names));
	ScanKeyInit(&key, column_number(names, "stream_id"), BTEqualStrategyNumber,
				F_INT4EQ, Int32GetDatum(stream_id));
	scan = systable_beginscan(names, names->rd_pkindex, true,
							  GetLatestSnapshot(), 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	return found;
}

/* Insert the row and its index entries, keeping the tuple out of decoding. */
static void
insert_stream_name(Relation names, int32 stream_id, Datum name)
{
	TupleDesc	desc = RelationGetDescr(names);
	Datum	   *values = palloc0(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);
	HeapTuple	tuple;
	List	   *indexes;
	ListCell   *lc;

	memset(nulls, true, sizeof(bool) * desc->natts);
	values[column_number(names, "stream_id") - 1] = Int32GetDatum(stream_id);
	nulls[column_number(names, "stream_id") - 1] = false;
	values[column_number(names, "name") - 1] = name;
	nulls[column_number(names, "name") - 1] = false;
	tuple = heap_form_tuple(desc, values, nulls);

	heap_insert(names, tuple, GetCurrentCommandId(true),
				HEAP_INSERT_NO_LOGICAL, NULL);

	indexes = RelationGetIndexList(names);
	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *info = BuildIndexInfo(index);
		Datum		keys[INDEX_MAX_KEYS];
		bool		key_nulls[INDEX_MAX_KEYS];
		int			i;

		/* plain column keys only: our indexes have no expressions */
		if (info->ii_Expressions != NIL || info->ii_Predicate != NIL)
			elog(ERROR, "unexpected expression index on ledger.stream_names");
		for (i = 0; i < info->ii_NumIndexAttrs; i++)
			keys[i] = heap_getattr(tuple, info->ii_IndexAttrNumbers[i], desc,
								   &key_nulls[i]);
		index_insert(index, keys, key_nulls, &tuple->t_self, names,
					 index->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 false, info);
		index_close(index, NoLock);
	}
	list_free(indexes);
	heap_freetuple(tuple);
}

/*
 * ledger.copy_stream_name(): AFTER INSERT (or, for the upgrade's backfill,
 * UPDATE) FOR EACH ROW on ledger.streams.
 */
Datum
ledger_copy_stream_name(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	streams;
	Relation	names;
	HeapTuple	row;
	Oid			names_relid;
	bool		isnull;
	Datum		stream_id;
	Datum		name;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ledger.copy_stream_name() must be called as an AFTER INSERT or UPDATE row trigger")));

	streams = trigdata->tg_relation;
	row = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;
	stream_id = heap_getattr(row, column_number(streams, "stream_id"),
							 RelationGetDescr(streams), &isnull);
	if (isnull)
		elog(ERROR, "ledger.streams row without stream_id");
	name = heap_getattr(row, column_number(streams, "name"),
						RelationGetDescr(streams), &isnull);
	if (isnull)
		elog(ERROR, "ledger.streams row without name");

	names_relid = get_relname_relid("stream_names", RelationGetNamespace(streams));
	if (!OidIsValid(names_relid))
		elog(ERROR, "ledger.stream_names does not exist");
	names = table_open(names_relid, RowExclusiveLock);
	/* a new stream_id is new here too; an updated row may be known */
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		!stream_name_exists(names, DatumGetInt32(stream_id)))
		insert_stream_name(names, DatumGetInt32(stream_id), name);
	table_close(names, NoLock);

	return PointerGetDatum(NULL);
}
