/*-------------------------------------------------------------------------
 *
 * src/stream.c
 *		The per-stream row of ledger.streams: lookup, creation on first
 *		append, and the UPDATE that both numbers and serializes appends.
 *
 * Appending to a stream starts with
 *		UPDATE ledger.streams SET last_seq = last_seq + n WHERE name = $1
 * The row lock it takes is held to commit, so appends to one stream are
 * numbered gaplessly in commit order, and appends to different streams never
 * touch the same row.  The update is HOT (no indexed column changes).  It
 * is done in C (stream_bump_direct), with the UPDATE's semantics, since an
 * SQL statement per append was a quarter of an append's time, and without
 * locking the row before updating it unless a concurrent appender got
 * there first (a lock is a WAL record and a buffer write of its own); the SQL
 * UPDATE remains for a streams table someone gave UPDATE triggers.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "compat.h"
#include "executor/executor.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#define STREAM_COLUMNS \
	"stream_id, last_seq, trimmed_seq, created_at, last_appended_at"

static void
stream_from_tuple(HeapTuple tuple, TupleDesc desc, LedgerStream *stream)
{
	bool		isnull;
	Datum		d;

	stream->stream_id = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
	stream->last_seq = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
	stream->trimmed_seq = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
	stream->created_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 4, &isnull));
	d = SPI_getbinval(tuple, desc, 5, &isnull);
	stream->has_last_appended_at = !isnull;
	stream->last_appended_at = isnull ? 0 : DatumGetTimestampTz(d);
}

/*
 * Read a stream's row without locking it; false when it does not exist.
 * read_only (STABLE callers) reads with the current snapshot; otherwise a
 * new one is taken, as for any statement of a VOLATILE function.
 */
bool
ledger_stream_lookup(const char *name, bool read_only, LedgerStream *stream)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	int			rc;

	if (plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		plan = ledger_prepare_plan("SELECT " STREAM_COLUMNS
								   " FROM ledger.streams WHERE name OPERATOR(pg_catalog.=) $1",
								   1, types);
	}
	args[0] = CStringGetTextDatum(name);
	rc = SPI_execute_plan(plan, args, NULL, read_only, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "stream lookup");
	if (SPI_processed == 0)
		return false;
	stream_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, stream);
	return true;
}

/*
 * Create the stream's row if it is missing (a no-op when it exists).  The
 * row carries no schema version: that is read from ledger.stream_settings
 * when needed, so creating a stream locks nothing but its own row.
 */
void
ledger_stream_create(const char *name)
{
	static SPIPlanPtr insert_plan = NULL;
	Datum		args[1];
	int			rc;

	if (insert_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		insert_plan = ledger_prepare_plan("INSERT INTO ledger.streams (name) VALUES ($1)"
										  " ON CONFLICT (name) DO NOTHING",
										  1, types);
	}
	args[0] = CStringGetTextDatum(name);
	rc = SPI_execute_plan(insert_plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_INSERT, "stream creation");
}

/*
 * Take the stream's append lock if nobody holds it; false, without
 * waiting, if an open transaction does.  For the background worker, which
 * must never queue behind an appender that is idle in transaction.
 */
bool
ledger_stream_try_lock(int32 stream_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	int			rc;

	if (plan == NULL)
	{
		Oid			types[1] = {INT4OID};

		plan = ledger_prepare_plan("SELECT 1 FROM ledger.streams"
								   " WHERE stream_id OPERATOR(pg_catalog.=) $1"
								   " FOR UPDATE SKIP LOCKED",
								   1, types);
	}
	args[0] = Int32GetDatum(stream_id);
	rc = SPI_execute_plan(plan, args, NULL, false, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "stream try-lock");
	return SPI_processed == 1;
}

/*
 * The streams table's layout, as stream_bump_direct() reads and writes it.
 * A table that differs, or that has UPDATE triggers, is updated through SPI.
 */
static const char *const stream_columns[] = {
	"stream_id", "name", "last_seq", "trimmed_seq", "created_at", "last_appended_at"
};

#define STREAM_NCOLUMNS lengthof(stream_columns)
#define STREAM_ATT_LAST_SEQ 3
#define STREAM_ATT_TRIMMED_SEQ 4

static bool
streams_direct_ok(Relation rel)
{
	return ledger_relation_has_layout(rel, stream_columns, STREAM_NCOLUMNS, CMD_UPDATE);
}

/*
 * Write the stream row at tid as values/nulls, with its index entries when
 * the update is not HOT.  Waits for a concurrent updater, as UPDATE does.
 */
static TM_Result
stream_row_update(Relation rel, ItemPointer tid, Datum *values, bool *nulls,
				  CommandId cid, Snapshot snapshot, TM_FailureData *tmfd)
{
	TupleDesc	desc = RelationGetDescr(rel);
	HeapTuple	newtup = heap_form_tuple(desc, values, nulls);
	TupleTableSlot *newslot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
	LockTupleMode lockmode;
	bool		update_indexes;
	TM_Result	res;

	ExecStoreHeapTuple(newtup, newslot, false);
	res = ledger_table_tuple_update(rel, tid, newslot, cid, snapshot,
									tmfd, &lockmode, &update_indexes);
	if (res == TM_Ok && update_indexes)
	{
		/* not a HOT update: the indexes need the new version */
		EState	   *estate = CreateExecutorState();
		ResultRelInfo *rri = makeNode(ResultRelInfo);

		InitResultRelInfo(rri, rel, 1, NULL, 0);
		ExecOpenIndices(rri, false);

		/*
		 * update = false: true would only hint "unchanged key" to the btree,
		 * and computing it needs a range table we do not have.
		 */
		list_free(ledger_insert_index_tuples(rri, newslot, estate, false));
		ExecCloseIndices(rri);
		FreeExecutorState(estate);
	}
	ExecDropSingleTupleTableSlot(newslot);
	heap_freetuple(newtup);
	return res;
}

/*
 * From the stream row in values/nulls, advanced by delta: the new values
 * (in place) and *stream.  The CHECK streams_seq_check is tested here.
 */
static void
stream_row_advance(Relation rel, Datum *values, bool *nulls, int64 delta, LedgerStream *stream)
{
	int64		last_seq = DatumGetInt64(values[STREAM_ATT_LAST_SEQ - 1]) + delta;
	int64		trimmed_seq = DatumGetInt64(values[STREAM_ATT_TRIMMED_SEQ - 1]);

	if (trimmed_seq < 0 || trimmed_seq > last_seq)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("new row for relation \"%s\" violates check constraint \"%s\"",
						RelationGetRelationName(rel), "streams_seq_check")));
	values[STREAM_ATT_LAST_SEQ - 1] = Int64GetDatum(last_seq);

	stream->stream_id = DatumGetInt32(values[0]);
	stream->last_seq = last_seq;
	stream->trimmed_seq = trimmed_seq;
	stream->created_at = DatumGetTimestampTz(values[4]);
	stream->has_last_appended_at = !nulls[5];
	stream->last_appended_at = nulls[5] ? 0 : DatumGetTimestampTz(values[5]);
}

/*
 * Lock the latest version of the stream row whose version at tid the
 * snapshot sees, waiting for a concurrent appender, and return it in
 * values/nulls and *locked_tid.  Under repeatable read and serializable a
 * concurrent update is a serialization failure.  False when the row is gone.
 */
static bool
stream_row_lock_latest(Relation rel, ItemPointer tid, Snapshot snapshot, CommandId cid,
					   const char *name, Datum *values, bool *nulls, ItemPointer locked_tid)
{
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	TM_FailureData tmfd;
	TM_Result	res;

	res = table_tuple_lock(rel, tid, snapshot, slot, cid, LockTupleNoKeyExclusive,
						   LockWaitBlock,
						   IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
						   &tmfd);
	switch (res)
	{
		case TM_Ok:
			break;
		case TM_Updated:
		case TM_Deleted:
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to concurrent update")));
			if (res == TM_Deleted)
			{
				ExecDropSingleTupleTableSlot(slot);
				return false;
			}
			elog(ERROR, "ledger: unexpected concurrent update of stream \"%s\"", name);
			break;
		default:
			elog(ERROR, "ledger: could not lock the row of stream \"%s\" (%d)", name, (int) res);
	}
	slot_getallattrs(slot);
	memcpy(values, slot->tts_values, sizeof(Datum) * STREAM_NCOLUMNS);
	memcpy(nulls, slot->tts_isnull, sizeof(bool) * STREAM_NCOLUMNS);
	*locked_tid = slot->tts_tid;
	ExecDropSingleTupleTableSlot(slot);
	return true;
}

/*
 * UPDATE ledger.streams SET last_seq = last_seq + delta WHERE name = $1,
 * done in C: no executor start-up, no re-parsed CHECK constraint per call.
 * It behaves as the UPDATE does: a fresh snapshot (read committed) finds
 * the row, and the update waits for a concurrent appender; if that one
 * committed, the latest version is locked and updated (what EvalPlanQual
 * does for an UPDATE); under repeatable read and serializable a concurrent
 * update is a serialization failure.  The uncontended append thus writes
 * the row once, with no lock record before it.  delta 0 (trim) locks the
 * row only.  Sets *found = false when the stream has no row; returns false
 * (nothing done) when the table needs SPI.
 */
static bool
stream_bump_direct(const char *name, int64 delta, LedgerStream *stream, bool *found)
{
	Oid			relid = ledger_relid("streams");
	Oid			indexid = ledger_relid("streams_name_key");
	Relation	rel;
	Snapshot	snapshot;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	HeapTuple	visible = NULL;
	TM_FailureData tmfd;
	CommandId	cid;
	Datum		values[STREAM_NCOLUMNS];
	bool		nulls[STREAM_NCOLUMNS];
	bool		updated = false;

	rel = table_open(relid, RowExclusiveLock);
	if (!streams_direct_ok(rel))
	{
		table_close(rel, RowExclusiveLock);
		return false;
	}

	/* as SPI does before each statement: see this transaction's changes */
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	cid = GetCurrentCommandId(true);

	/* systable_beginscan() takes the heap attribute number: name is 2 */
	ScanKeyInit(&key, 2, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(name));
	scan = systable_beginscan(rel, indexid, true, snapshot, 1, &key);
	tup = systable_getnext(scan);
	if (tup != NULL)
		visible = heap_copytuple(tup);
	systable_endscan(scan);
	*found = (visible != NULL);

	if (*found && delta != 0)
	{
		/* the common case: nobody updated the row since our snapshot */
		TM_Result	res;

		heap_deform_tuple(visible, RelationGetDescr(rel), values, nulls);
		stream_row_advance(rel, values, nulls, delta, stream);
		res = stream_row_update(rel, &visible->t_self, values, nulls, cid, snapshot, &tmfd);
		if (res != TM_Ok && res != TM_Updated && res != TM_Deleted)
			elog(ERROR, "ledger: could not update the row of stream \"%s\" (%d)", name, (int) res);
		updated = (res == TM_Ok);
	}
	if (*found && !updated)
	{
		/* trim, or a concurrent appender committed first: lock its version */
		ItemPointerData tid;

		*found = stream_row_lock_latest(rel, &visible->t_self, snapshot, cid, name,
										values, nulls, &tid);
		if (*found)
		{
			stream_row_advance(rel, values, nulls, delta, stream);
			/* locked by us: nobody can have updated it since */
			if (delta != 0 &&
				stream_row_update(rel, &tid, values, nulls, cid, snapshot, &tmfd) != TM_Ok)
				elog(ERROR, "ledger: could not update the row of stream \"%s\"", name);
		}
	}

	if (visible != NULL)
		heap_freetuple(visible);
	UnregisterSnapshot(snapshot);
	/* a row written or locked holds the table to commit, as an UPDATE's */
	table_close(rel, *found ? NoLock : RowExclusiveLock);
	return true;
}

/*
 * Lock a stream for appending (creating it on first use) and advance its
 * last_seq by seq_delta, which may be 0 to lock only.  On return
 * stream->last_seq is the value after the bump.
 */
void
ledger_stream_lock(const char *name, int64 seq_delta, LedgerStream *stream)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	int			attempt;

	if (plan == NULL)
	{
		Oid			types[2] = {TEXTOID, INT8OID};

		plan = ledger_prepare_plan("UPDATE ledger.streams SET last_seq = last_seq OPERATOR(pg_catalog.+) $2"
								   " WHERE name OPERATOR(pg_catalog.=) $1"
								   " RETURNING " STREAM_COLUMNS,
								   2, types);
	}
	args[0] = CStringGetTextDatum(name);
	args[1] = Int64GetDatum(seq_delta);

	for (attempt = 0; attempt < 2; attempt++)
	{
		bool		found;
		int			rc;

		if (stream_bump_direct(name, seq_delta, stream, &found))
		{
			if (found)
				return;
			ledger_stream_create(name);
			continue;
		}
		rc = SPI_execute_plan(plan, args, NULL, false, 1);

		ledger_spi_check(rc, SPI_OK_UPDATE_RETURNING, "stream lock");
		if (SPI_processed == 1)
		{
			stream_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, stream);
			return;
		}
		ledger_stream_create(name);
	}

	/*
	 * Only a transaction-snapshot isolation level can miss a row that a
	 * concurrent transaction created and committed meanwhile.
	 */
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not serialize access due to concurrent creation of stream \"%s\"", name),
			 errhint("Retry the transaction.")));
}

/* Give back seq numbers reserved by ledger_stream_lock() but not used. */
void
ledger_stream_unbump(int32 stream_id, int64 seq_delta)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	int			rc;

	if (plan == NULL)
	{
		Oid			types[2] = {INT4OID, INT8OID};

		plan = ledger_prepare_plan("UPDATE ledger.streams SET last_seq = last_seq OPERATOR(pg_catalog.-) $2"
								   " WHERE stream_id OPERATOR(pg_catalog.=) $1",
								   2, types);
	}
	args[0] = Int32GetDatum(stream_id);
	args[1] = Int64GetDatum(seq_delta);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_UPDATE, "stream seq release");
}
