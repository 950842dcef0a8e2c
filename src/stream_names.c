/*-------------------------------------------------------------------------
 *
 * src/stream_names.c
 *		Stream names for the output plugin (decoder.c): the trigger that
 *		copies each new stream's name into ledger.stream_names, and the
 *		decoding session's cache that reads them back under the historic
 *		snapshot.
 *
 * Entries carry a stream_id.  ledger.stream_names is a user catalog table
 * (user_catalog_table = true), so an index scan by stream_id under the
 * decoding's historic snapshot sees it as it was when the decoded change
 * was made, even a row inserted earlier in the same transaction; nothing
 * depends on the decoded transaction touching the stream's ledger.streams
 * row.  Names never change, so the cache keeps them for the session until
 * the decoder says that ledger's tables are other relations now (the
 * extension was dropped and created again).
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
 * Decoded ledger.streams rows feed the cache too, while the decoded
 * history has no ledger.stream_names (WAL written by ledger 0.1, which
 * wrote a stream's row on every append), and name the streams of an
 * extension dropped since, whose ledger.stream_names can no longer be
 * opened.
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
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "stream_names.h"

struct LedgerStreamNames
{
	MemoryContext context;		/* the hash table and its strings */
	HTAB	   *names;			/* stream_id -> StreamName */
	Oid			namespace_oid;	/* schema ledger the names belong to */
	Oid			table_relid;	/* its ledger.stream_names, once it has one */
};

typedef struct StreamName
{
	int32		stream_id;		/* hash key */
	char	   *name;			/* in the cache's context */
} StreamName;

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

/* ---------------------------------------------------------------------
 * The decoding session's cache
 * ---------------------------------------------------------------------
 */

LedgerStreamNames *
ledger_stream_names_create(MemoryContext parent)
{
	MemoryContext context;
	LedgerStreamNames *names;
	HASHCTL		hctl;

	context = AllocSetContextCreate(parent, "ledger decoder stream names",
									ALLOCSET_SMALL_SIZES);
	names = MemoryContextAllocZero(context, sizeof(LedgerStreamNames));
	names->context = context;
	hctl.keysize = sizeof(int32);
	hctl.entrysize = sizeof(StreamName);
	hctl.hcxt = context;
	names->names = hash_create("ledger decoder stream names", 64, &hctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return names;
}

void
ledger_stream_names_reset(LedgerStreamNames *names, Oid namespace_oid)
{
	HASH_SEQ_STATUS status;
	StreamName *entry;

	hash_seq_init(&status, names->names);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		pfree(entry->name);
		hash_search(names->names, &entry->stream_id, HASH_REMOVE, NULL);
	}
	names->namespace_oid = namespace_oid;
	names->table_relid = InvalidOid;
}

static const char *
cache_name(LedgerStreamNames *names, int32 stream_id, const char *name)
{
	StreamName *entry;
	bool		found;

	entry = hash_search(names->names, &stream_id, HASH_ENTER, &found);
	if (!found)
		entry->name = MemoryContextStrdup(names->context, name);
	return entry->name;
}

void
ledger_stream_names_remember(LedgerStreamNames *names, int32 stream_id,
							 const char *name)
{
	(void) cache_name(names, stream_id, name);
}

/*
 * Does the decoded history have ledger.stream_names yet?  Not in WAL
 * written by ledger 0.1, before ALTER EXTENSION UPDATE created it.
 */
static bool
have_table(LedgerStreamNames *names)
{
	if (!OidIsValid(names->table_relid) && OidIsValid(names->namespace_oid))
		names->table_relid = get_relname_relid("stream_names",
											   names->namespace_oid);
	return OidIsValid(names->table_relid);
}

/*
 * Does the relation exist now, not just in the decoded past?  Opening a
 * user catalog table rereads its current pg_class row (for its file after
 * a rewrite), which fails for a table dropped since, and a decoding ERROR
 * comes back at every retry.
 */
static bool
relation_exists_now(Oid relid)
{
	Relation	pg_class;
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	pg_class = table_open(RelationRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_class_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(pg_class, ClassOidIndexId, true,
							  GetNonHistoricCatalogSnapshot(RelationRelationId),
							  1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(pg_class, AccessShareLock);
	return found;
}

/* The name in ledger.stream_names under the historic snapshot, or NULL. */
static char *
read_name(LedgerStreamNames *names, int32 stream_id)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *name = NULL;

	if (!have_table(names))
		return NULL;

	/* locked first, so that it cannot be dropped between check and open */
	LockRelationOid(names->table_relid, AccessShareLock);
	if (!relation_exists_now(names->table_relid))
	{
		UnlockRelationOid(names->table_relid, AccessShareLock);
		return NULL;
	}
	rel = table_open(names->table_relid, NoLock);
	if (RelationIsUsedAsCatalogTable(rel))
	{
		bool		isnull;
		Datum		value;

		/* RelationGetIndexList() is what sets rd_pkindex */
		list_free(RelationGetIndexList(rel));
		if (!OidIsValid(rel->rd_pkindex))
			elog(ERROR, "ledger.stream_names has no primary key");
		ScanKeyInit(&key, column_number(rel, "stream_id"), BTEqualStrategyNumber,
					F_INT4EQ, Int32GetDatum(stream_id));
		scan = systable_beginscan(rel, rel->rd_pkindex, true, NULL, 1, &key);
		tuple = systable_getnext(scan);
		if (HeapTupleIsValid(tuple))
		{
			value = heap_getattr(tuple, column_number(rel, "name"),
								 RelationGetDescr(rel), &isnull);
			if (!isnull && !VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value)))
				name = TextDatumGetCString(value);
		}
		systable_endscan(scan);
	}
	table_close(rel, NoLock);
	UnlockRelationOid(names->table_relid, AccessShareLock);
	return name;
}

const char *
ledger_stream_names_get(LedgerStreamNames *names, int32 stream_id)
{
	StreamName *entry;
	char	   *name;

	entry = hash_search(names->names, &stream_id, HASH_FIND, NULL);
	if (entry != NULL)
		return entry->name;
	name = read_name(names, stream_id);
	if (name == NULL)
	{
		ereport(WARNING,
				(errmsg("ledger decoder has no name for stream_id %d", stream_id),
				 errdetail("The stream's row in ledger.stream_names is not visible to the decoded transaction.")));
		return NULL;
	}
	return cache_name(names, stream_id, name);
}
