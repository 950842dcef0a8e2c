/*-------------------------------------------------------------------------
 *
 * src/horizon.c
 *		The commit-order horizon behind read_all(): the lowest id that some
 *		open transaction may still commit.  Every id below it is settled
 *		(committed and visible to a new snapshot, or gone for good).
 *
 * Ids come from a CACHE 1 sequence, so they are handed out in real-time
 * order.  Before a transaction draws its first id it publishes a floor
 * F = last_value + 1 of that sequence; every id it draws later is >= F.
 * A reader first reads the sequence's last_value L, then scans the floors:
 *
 *		horizon = min(L + 1, every published floor of this database)
 *
 * A floor the reader does not see was published after it read L, so its
 * ids are all > L and excluded anyway.  Floors are cleared by the
 * transaction callback, which runs after the commit (or abort) has become
 * visible to new snapshots; read_all takes its snapshot after computing the
 * horizon, so it sees every committed entry below it.  No lock is taken on
 * the append path: the floor is a per-backend atomic in shared memory.
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

#include "access/twophase.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "shmem.h"

/* field4 of our advisory lock tags; pg_advisory_* use 1 and 2 */
#define LEDGER_FLOOR_LOCK_CLASS 0x4c47

LedgerShared *ledger_shared = NULL;

/* Per-transaction state of this backend. */
static int64 xact_floor = 0;
static int32 *xact_streams = NULL;
static int	xact_nstreams = 0;
static int	xact_maxstreams = 0;

static Size
shared_size(void)
{
	int			nprocs = MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;

	return add_size(offsetof(LedgerShared, slots),
					mul_size(nprocs, sizeof(LedgerProcSlot)));
}

void
ledger_horizon_shmem_request(void)
{
	RequestAddinShmemSpace(shared_size());
}

void
ledger_horizon_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ledger_shared = ShmemInitStruct("ledger", shared_size(), &found);
	if (!found)
	{
		int			i;

		SpinLockInit(&ledger_shared->worker_mutex);
		memset(ledger_shared->workers, 0, sizeof(ledger_shared->workers));
		ledger_shared->launcher_pid = 0;
		ledger_shared->nslots = MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
		pg_atomic_init_u32(&ledger_shared->nwaiters, 0);
		for (i = 0; i < ledger_shared->nslots; i++)
		{
			LedgerProcSlot *slot = &ledger_shared->slots[i];

			pg_atomic_init_u64(&slot->floor, 0);
			pg_atomic_init_u32(&slot->waiting, 0);
			slot->dboid = InvalidOid;
			slot->pid = 0;
			slot->floor_since = 0;
			slot->wait_dboid = InvalidOid;
			slot->wait_stream = 0;
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

LedgerProcSlot *
ledger_my_slot(void)
{
	Assert(ledger_shared != NULL && MyProc != NULL);
	Assert(MyProc->pgprocno < ledger_shared->nslots);
	return &ledger_shared->slots[MyProc->pgprocno];
}

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
 * Called by append before it draws its first id in this transaction.
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

		slot->dboid = MyDatabaseId;
		slot->pid = MyProcPid;
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

/* Remember a stream this transaction appended to, for commit wake-ups. */
void
ledger_horizon_appended(int32 stream_id)
{
	int			i;

	for (i = 0; i < xact_nstreams; i++)
		if (xact_streams[i] == stream_id)
			return;
	if (xact_nstreams == xact_maxstreams)
	{
		int			newmax = Max(8, xact_maxstreams * 2);

		if (xact_streams == NULL)
			xact_streams = MemoryContextAlloc(TopMemoryContext, newmax * sizeof(int32));
		else
			xact_streams = repalloc(xact_streams, newmax * sizeof(int32));
		xact_maxstreams = newmax;
	}
	xact_streams[xact_nstreams++] = stream_id;
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
			if (slot->dboid == MyDatabaseId && (int64) floor < horizon)
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
		if (slot->dboid != MyDatabaseId)
			continue;
		if (!found || (int64) floor < *floor_id)
		{
			*floor_id = (int64) floor;
			*pid = slot->pid;
			*since = slot->floor_since;
			found = true;
		}
	}
	return found;
}

static void
clear_floor(void)
{
	if (xact_floor != 0 && ledger_shared != NULL)
		pg_atomic_write_u64(&ledger_my_slot()->floor, 0);
	xact_floor = 0;
	xact_nstreams = 0;
}

static void
horizon_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (xact_floor != 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that appended to a ledger stream"),
						 errdetail("A prepared append would hold back every read_all() consumer until COMMIT PREPARED.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (xact_floor != 0)
			{
				int			nstreams = xact_nstreams;

				/* Our commit is visible by now: drop the floor, then wake. */
				clear_floor();
				pg_memory_barrier();
				ledger_wait_wake(xact_streams, nstreams, true);
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			{
				bool		had_floor = (xact_floor != 0);

				ledger_entries_writable(false);
				ledger_wait_unregister();
				clear_floor();
				pg_memory_barrier();
				if (had_floor)
					ledger_wait_wake(NULL, 0, true);
			}
			break;
		default:
			break;
	}
}

void
ledger_horizon_init(void)
{
	/*
	 * A backend that exits mid-transaction aborts it on the way out, so the
	 * abort branch also covers pg_terminate_backend().
	 */
	RegisterXactCallback(horizon_xact_callback, NULL);
}
