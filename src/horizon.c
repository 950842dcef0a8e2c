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
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "catalog/namespace.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "shmem.h"

/* field4 of our advisory lock tags; pg_advisory_* use 1 and 2 */
#define LEDGER_FLOOR_LOCK_CLASS 0x4c47

/* The floor this backend's open transaction published, 0 if none. */
static int64 xact_floor = 0;

/* last_value of ledger.entries_id_seq, 0 before its first nextval */
static int64
sequence_last_value(void)
{
	Oid			nsp = get_namespace_oid(LEDGER_SCHEMA, false);
	Oid			seq = get_relname_relid("entries_id_seq", nsp);
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;

	if (!OidIsValid(seq))
		elog(ERROR, "ledger: sequence ledger.entries_id_seq is missing");
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
 * The exclusive upper bound of ids that read_all may return now.
 */
int64
ledger_horizon(void)
{
	int64		horizon = sequence_last_value() + 1;

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
