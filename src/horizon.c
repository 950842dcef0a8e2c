/*-------------------------------------------------------------------------
 *
 * src/horizon.c
 *		The commit-order horizon behind read_all() and the export worker:
 *		the lowest id that some open transaction may still commit.  Every
 *		id below it is settled (committed and visible to a new snapshot, or
 *		gone for good).
 *
 * Ids come from a CACHE 1 sequence, so they are handed out in real-time
 * order.  Before a transaction draws its first id it publishes a floor
 * F = last_value + 1 of that sequence; every id it draws later is >= F.
 * A reader first reads the sequence's last_value L, then scans the floors:
 *
 *		horizon = min(L + 1, every published floor of this database)
 *
 * A floor the reader does not see was published after it read L, so its
 * ids are all > L and excluded anyway.  Floors are cleared at the end of
 * the transaction (xact.c), after the commit (or abort) has become visible
 * to new snapshots; readers take their snapshot after computing the
 * horizon, so they see every committed entry below it.  No lock is taken
 * on the append path: the floor is a per-backend atomic in shared memory.
 *
 * Without shared_preload_libraries there is no shared memory of ours, so
 * the floor is published as a transaction-scoped share lock on an advisory
 * lock tag of our own class instead, and readers find floors in the lock
 * table.  Slower to read, but just as exact.
 *
 * Prepared transactions would keep their floor after the backend moves on,
 * so PREPARE TRANSACTION after an append is refused.
 *
 * Hot standbys (standby.c) get the horizon from a WAL record that each
 * transaction that drew ids logs at PRE_COMMIT.  Its value is computed
 * here, while catalog access is still allowed, as min(L + 1, the floors of
 * the other transactions): every id below it is settled, or is ours and
 * settled by our commit.  If the transaction aborts, one more record goes
 * after the abort; the sequence can no longer be read then, so the drawn
 * ids that backends published in their slots stand in for L: each one was
 * handed out before it was published, and the same ordering argument as
 * above holds with "the largest drawn id seen" for L.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_sequence.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "shmem.h"

/* field4 of our advisory lock tags; pg_advisory_* use 1 and 2 */
#define LEDGER_FLOOR_LOCK_CLASS 0x4c47

/* The floor this backend's open transaction published, 0 if none. */
static int64 xact_floor = 0;


static int64 last_value_of(Oid seq);

/* ledger.entries_id_seq, InvalidOid if it is gone */
static Oid
id_sequence(void)
{
	Oid			nsp = get_namespace_oid(LEDGER_SCHEMA, true);

	return OidIsValid(nsp) ? get_relname_relid("entries_id_seq", nsp) : InvalidOid;
}

/* last_value of ledger.entries_id_seq, 0 before its first nextval */
static int64
sequence_last_value(void)
{
	Oid			seq = id_sequence();

	if (!OidIsValid(seq))
		elog(ERROR, "ledger: sequence ledger.entries_id_seq is missing");
	return last_value_of(seq);
}

/*
 * How far apart consecutive ids are: 1, or 2^node_bits after
 * ledger.set_node().  Scans that bound a batch by a range of ids (the
 * export's window) scale it by this, so a batch still holds as many entries
 * on a node whose ids stride by 1024.
 */
int64
ledger_id_increment(void)
{
	Oid			seq = id_sequence();
	HeapTuple	tuple;
	int64		increment = 1;

	if (!OidIsValid(seq))
		return 1;
	tuple = SearchSysCache1(SEQRELID, ObjectIdGetDatum(seq));
	if (HeapTupleIsValid(tuple))
	{
		increment = Max(((Form_pg_sequence) GETSTRUCT(tuple))->seqincrement, 1);
		ReleaseSysCache(tuple);
	}
	return increment;
}

static int64
last_value_of(Oid seq)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(seq);
	fcinfo->args[0].isnull = false;
	result = pg_sequence_last_value(fcinfo);
	return fcinfo->isnull ? 0 : DatumGetInt64(result);
}

static void
set_floor_locktag(LOCKTAG *tag, int64 floor)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId,
						 (uint32) ((uint64) floor >> 32), (uint32) floor,
						 LEDGER_FLOOR_LOCK_CLASS);
}

/*
 * Called before the transaction draws its first id (an entry's or a change
 * record's).
 */
void
ledger_horizon_before_id(void)
{
	int64		floor;

	if (xact_floor != 0)
		return;

	floor = sequence_last_value() + 1;
	if (ledger_shared != NULL)
	{
		LedgerProcSlot *slot = ledger_my_slot();

		slot->floor_dboid = MyDatabaseId;
		slot->floor_pid = MyProcPid;
		slot->floor_since = GetCurrentTimestamp();
		pg_write_barrier();
		pg_atomic_write_u64(&slot->floor, (uint64) floor);
		/* The floor must be visible before nextval() hands us an id. */
		pg_memory_barrier();
	}
	else
	{
		LOCKTAG		tag;
		ResourceOwner save = CurrentResourceOwner;

		/*
		 * The floor belongs to the whole transaction: a rolled-back
		 * subtransaction must not release it while later appends of the
		 * same transaction rely on it.
		 */
		set_floor_locktag(&tag, floor);
		CurrentResourceOwner = TopTransactionResourceOwner;
		(void) LockAcquire(&tag, ShareLock, false, false);
		CurrentResourceOwner = save;
	}
	xact_floor = floor;
}

/* Lowest floor published through the lock table (no preload). */
static int64
lowest_locked_floor(void)
{
	LockData   *locks = GetLockStatusData();
	int64		lowest = 0;
	int			i;

	for (i = 0; i < locks->nelements; i++)
	{
		LockInstanceData *inst = &locks->locks[i];
		int64		floor;

		if (inst->locktag.locktag_type != LOCKTAG_ADVISORY ||
			inst->locktag.locktag_field4 != LEDGER_FLOOR_LOCK_CLASS ||
			inst->locktag.locktag_field1 != MyDatabaseId ||
			inst->holdMask == 0)
			continue;
		floor = (int64) (((uint64) inst->locktag.locktag_field2 << 32) |
						 inst->locktag.locktag_field3);
		if (lowest == 0 || floor < lowest)
			lowest = floor;
	}
	return lowest;
}

/*
 * The exclusive upper bound of ids that read_all may return now.  On a hot
 * standby: the horizon the primary's records have brought.
 */
int64
ledger_horizon(void)
{
	int64		horizon;

	if (RecoveryInProgress())
		return ledger_standby_horizon();

	horizon = sequence_last_value() + 1;

	pg_memory_barrier();
	if (ledger_shared != NULL)
	{
		int			i;

		for (i = 0; i < ledger_shared->nslots; i++)
		{
			LedgerProcSlot *slot = &ledger_shared->slots[i];
			uint64		floor = pg_atomic_read_u64(&slot->floor);

			if (floor == 0)
				continue;
			pg_read_barrier();
			if (slot->floor_dboid == MyDatabaseId && (int64) floor < horizon)
				horizon = (int64) floor;
		}
	}
	else
	{
		int64		floor = lowest_locked_floor();

		if (floor != 0 && floor < horizon)
			horizon = floor;
	}
	return horizon;
}

/*
 * The open transaction that holds the horizon back the longest in this
 * database, for health().  Only available with shared memory.
 */
bool
ledger_horizon_oldest(int *pid, TimestampTz *since, int64 *floor_id)
{
	bool		found = false;
	int			i;

	if (ledger_shared == NULL)
		return false;
	for (i = 0; i < ledger_shared->nslots; i++)
	{
		LedgerProcSlot *slot = &ledger_shared->slots[i];
		uint64		floor = pg_atomic_read_u64(&slot->floor);

		if (floor == 0)
			continue;
		pg_read_barrier();
		if (slot->floor_dboid != MyDatabaseId)
			continue;
		if (!found || (int64) floor < *floor_id)
		{
			*floor_id = (int64) floor;
			*pid = slot->floor_pid;
			*since = slot->floor_since;
			found = true;
		}
	}
	return found;
}

/* The lowest floor of another backend of this database, PG_INT64_MAX if none. */
static int64
lowest_other_floor(void)
{
	int64		lowest = PG_INT64_MAX;
	int			me = ledger_my_procno();
	int			i;

	pg_memory_barrier();
	for (i = 0; i < ledger_shared->nslots; i++)
	{
		LedgerProcSlot *slot = &ledger_shared->slots[i];
		uint64		floor = pg_atomic_read_u64(&slot->floor);

		if (floor == 0 || i == me)
			continue;
		pg_read_barrier();
		if (slot->floor_dboid == MyDatabaseId && (int64) floor < lowest)
			lowest = (int64) floor;
	}
	return lowest;
}

/*
 * A slot's drawn id if it belongs to this database, else 0.  Its writer
 * zeroes it before changing the database, so a value read the same before
 * and after the database cannot be another database's.
 */
static int64
read_drawn(LedgerProcSlot *slot)
{
	uint64		before = pg_atomic_read_u64(&slot->drawn);
	Oid			dboid;

	if (before == 0)
		return 0;
	pg_read_barrier();
	dboid = slot->drawn_dboid;
	pg_read_barrier();
	if (dboid != MyDatabaseId || pg_atomic_read_u64(&slot->drawn) != before)
		return 0;
	return (int64) before;
}

/*
 * PRE_COMMIT of a transaction that drew ids: the horizon of its standby
 * record (see the header comment); false if it drew none, or the extension
 * went away in this transaction.  Publishes the sequence's last value as an
 * id drawn in this database.
 */
bool
ledger_horizon_pre_commit(int64 *horizon)
{
	LedgerProcSlot *slot;
	LedgerSavedUser saved;
	Oid			seq;
	int64		last;

	if (xact_floor == 0 || ledger_shared == NULL)
		return false;
	seq = id_sequence();
	if (!OidIsValid(seq))
		return false;
	/* the committing role need not be allowed to read the sequence */
	ledger_become_owner(&saved);
	last = last_value_of(seq);
	ledger_restore_user(&saved);
	slot = ledger_my_slot();
	if (slot->drawn_dboid != MyDatabaseId)
	{
		/* a slot of another database's backend before us: see read_drawn() */
		pg_atomic_write_u64(&slot->drawn, 0);
		pg_write_barrier();
		slot->drawn_dboid = MyDatabaseId;
		pg_write_barrier();
	}
	pg_atomic_write_u64(&slot->drawn, (uint64) last);
	/* last is read before the floors, as in ledger_horizon() */
	*horizon = Min(last + 1, lowest_other_floor());
	return true;
}

/*
 * After a transaction that drew ids aborted and withdrew its floor: the
 * horizon of its standby record.  Shared memory only, since an aborting
 * transaction can no longer read the sequence.
 */
int64
ledger_horizon_after_abort(void)
{
	int64		drawn = 0;
	int			i;

	for (i = 0; i < ledger_shared->nslots; i++)
	{
		int64		id = read_drawn(&ledger_shared->slots[i]);

		if (id > drawn)
			drawn = id;
	}
	/* the drawn ids are read before the floors */
	return Min(drawn + 1, lowest_other_floor());
}

/* PREPARE TRANSACTION would keep the floor published without a backend. */
void
ledger_horizon_check_prepare(void)
{
	if (xact_floor != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that appended to a ledger stream"),
				 errdetail("A prepared append would hold back every read_all() consumer until COMMIT PREPARED.")));
}

/*
 * At the end of the transaction (its outcome already visible): withdraw
 * the floor.  Returns whether there was one, i.e. whether the horizon may
 * have moved.  The lock-table floor goes with the transaction's locks.
 */
bool
ledger_horizon_release(void)
{
	if (xact_floor == 0)
		return false;
	if (ledger_shared != NULL)
		pg_atomic_write_u64(&ledger_my_slot()->floor, 0);
	xact_floor = 0;
	pg_memory_barrier();
	return true;
}
