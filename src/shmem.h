/*-------------------------------------------------------------------------
 *
 * src/shmem.h
 *		Layout of ledger's shared memory.  shmem.c allocates it; each part
 *		is used by one file only: the proc slots' floor and drawn id by
 *		horizon.c, their wait fields by wait.c, the standby horizons by
 *		standby.c, the worker registry by launcher.c.
 *
 * Proc slots: one LedgerProcSlot per PGPROC, indexed by proc number, so a
 * backend finds its own slot without a lock and a committer can set a
 * waiter's latch.  No lock protects them: each slot is written only by its
 * own backend, and readers tolerate a slot changing under them because of
 * the publication order that horizon.c and wait.c describe.  A backend
 * clears its slot when it exits (wait.c registers the exit callback), and a
 * reader also checks that the slot's pid is still the proc's, so a slot of
 * a backend that is gone never counts.
 *
 * A slot's "drawn" (horizon.c) is an id its backend saw the sequence hand
 * out, with the database it belongs to; it outlives the backend, which is
 * harmless, since it only ever names an id that was drawn.
 *
 * Standby horizons (standby.c): one LedgerStandbyDb per database whose
 * horizon records a hot standby has replayed.  Only the startup process
 * writes them: it claims an entry by setting dboid (once), raises horizon
 * (an atomic, read without a lock) and updates the times and the pending
 * horizons under the entry's spinlock, which readers take to copy them.
 *
 * Worker registry: one LedgerDbWorker per database that wants a background
 * worker, protected by the LWLock "ledger registry" (LW_EXCLUSIVE to change
 * an entry, LW_SHARED to read one), held only while an entry is read or
 * written, never across a wait.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LEDGER_SHMEM_H
#define LEDGER_SHMEM_H

#include "access/transam.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/spin.h"

typedef struct LedgerProcSlot
{
	/* read_all horizon (horizon.c): written by the owner, read by all */
	pg_atomic_uint64 floor;		/* 0, or lowest id the open xact may hold */
	Oid			floor_dboid;
	int			floor_pid;
	TimestampTz floor_since;	/* when the floor was published */

	/* blocking reads (wait.c): a registered waiter and what wakes it */
	pg_atomic_uint32 waiting;	/* 1 while registered */
	Oid			wait_dboid;
	int			wait_pid;
	int32		wait_stream;	/* 0 = any commit in the database */
	pg_atomic_uint64 wakeups;	/* bumped by every committer that woke us */

	/* the last id this backend saw drawn (horizon.c), 0 if none */
	pg_atomic_uint64 drawn;
	Oid			drawn_dboid;
} LedgerProcSlot;

/* At most this many databases have a horizon on a hot standby. */
#define LEDGER_MAX_STANDBY_DBS 64
/* Horizons replayed before their transaction's commit, per database. */
#define LEDGER_STANDBY_PENDING 128

typedef struct LedgerStandbyPending
{
	TransactionId xid;			/* the primary transaction it waits for */
	int64		horizon;		/* holds once xid is no longer in progress */
	TimestampTz replayed_at;
} LedgerStandbyPending;

typedef struct LedgerStandbyDb
{
	pg_atomic_uint32 dboid;		/* 0 = free; set once */
	pg_atomic_uint64 horizon;	/* ids below it are settled and replayed */
	slock_t		mutex;			/* protects the fields below */
	XLogRecPtr	lsn;			/* end of the last record replayed */
	TimestampTz primary_at;		/* when the primary logged it */
	TimestampTz replayed_at;	/* when this standby replayed it */
	int			npending;
	LedgerStandbyPending pending[LEDGER_STANDBY_PENDING];
} LedgerStandbyDb;

/* At most this many databases get a background worker. */
#define LEDGER_MAX_DB_WORKERS 64

typedef enum LedgerWorkerState
{
	LEDGER_WORKER_FREE = 0,		/* entry unused */
	LEDGER_WORKER_REQUESTED,	/* the launcher is to start one */
	LEDGER_WORKER_STARTING,		/* registered with the postmaster */
	LEDGER_WORKER_RUNNING,		/* pid/procno are valid */
	LEDGER_WORKER_FAILED		/* stopped abnormally; retry at retry_at */
} LedgerWorkerState;

typedef struct LedgerDbWorker
{
	Oid			dboid;
	LedgerWorkerState state;
	int			pid;
	int			procno;
	int			failures;		/* consecutive abnormal stops */
	TimestampTz retry_at;		/* FAILED: when the launcher tries again */
	bool		rerequested;	/* a request came while it was leaving */
} LedgerDbWorker;

typedef struct LedgerShared
{
	LWLock	   *registry_lock;
	int			launcher_procno;	/* -1 while no launcher runs */
	LedgerDbWorker workers[LEDGER_MAX_DB_WORKERS];

	LedgerStandbyDb standby[LEDGER_MAX_STANDBY_DBS];

	int			nslots;
	pg_atomic_uint32 nwaiters;	/* lets committers skip the slot scan */
	LedgerProcSlot slots[FLEXIBLE_ARRAY_MEMBER];
} LedgerShared;

/* NULL unless ledger is in shared_preload_libraries */
extern LedgerShared *ledger_shared;

extern void ledger_shmem_init(void);
extern LedgerProcSlot *ledger_my_slot(void);

#endif							/* LEDGER_SHMEM_H */
