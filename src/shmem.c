/*-------------------------------------------------------------------------
 *
 * src/shmem.c
 *		All of ledger's shared memory: one request hook, one startup hook.
 *		What lives there, and what protects it, is described in shmem.h.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/twophase.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"

#include "compat.h"
#include "shmem.h"

LedgerShared *ledger_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* One slot per PGPROC: backends, auxiliary processes, prepared xacts. */
static int
slot_count(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

static Size
shared_size(void)
{
	return add_size(offsetof(LedgerShared, slots),
					mul_size(slot_count(), sizeof(LedgerProcSlot)));
}

static void
ledger_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche("ledger registry", 1);
}

static void
ledger_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ledger_shared = ShmemInitStruct("ledger", shared_size(), &found);
	if (!found)
	{
		int			i;

		ledger_shared->registry_lock = &(GetNamedLWLockTranche("ledger registry"))->lock;
		ledger_shared->launcher_procno = -1;
		memset(ledger_shared->workers, 0, sizeof(ledger_shared->workers));
		for (i = 0; i < LEDGER_MAX_STANDBY_DBS; i++)
		{
			LedgerStandbyDb *db = &ledger_shared->standby[i];

			pg_atomic_init_u32(&db->dboid, InvalidOid);
			pg_atomic_init_u64(&db->horizon, 0);
			SpinLockInit(&db->mutex);
			db->lsn = InvalidXLogRecPtr;
			db->primary_at = 0;
			db->replayed_at = 0;
			db->npending = 0;
		}
		ledger_shared->nslots = slot_count();
		pg_atomic_init_u32(&ledger_shared->nwaiters, 0);
		for (i = 0; i < ledger_shared->nslots; i++)
		{
			LedgerProcSlot *slot = &ledger_shared->slots[i];

			pg_atomic_init_u64(&slot->floor, 0);
			slot->floor_dboid = InvalidOid;
			slot->floor_pid = 0;
			slot->floor_since = 0;
			pg_atomic_init_u32(&slot->waiting, 0);
			slot->wait_dboid = InvalidOid;
			slot->wait_pid = 0;
			slot->wait_stream = 0;
			pg_atomic_init_u64(&slot->wakeups, 0);
			pg_atomic_init_u64(&slot->drawn, 0);
			slot->drawn_dboid = InvalidOid;
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries are loaded. */
void
ledger_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ledger_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ledger_shmem_startup;
}

LedgerProcSlot *
ledger_my_slot(void)
{
	Assert(ledger_shared != NULL && MyProc != NULL);
	Assert(ledger_my_procno() < ledger_shared->nslots);
	return &ledger_shared->slots[ledger_my_procno()];
}
