/*-------------------------------------------------------------------------
 *
 * src/shmem.h
 *		Layout of ledger's shared memory, shared by horizon.c (which owns
 *		it) and wait.c.
 *
 * One LedgerProcSlot per PGPROC, indexed by pgprocno, so a backend finds
 * its own slot without a lock and a committer can set a waiter's latch.
 * No LWLock is involved: each slot is written only by its own backend, and
 * readers tolerate a slot changing under them because of the publication
 * order described in horizon.c and wait.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LEDGER_SHMEM_H
#define LEDGER_SHMEM_H

#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"

typedef struct LedgerProcSlot
{
	/* read_all horizon: written by the owner, read by everybody */
	pg_atomic_uint64 floor;		/* 0, or lowest id the open xact may hold */
	Oid			dboid;			/* database of the floor */
	int			pid;
	TimestampTz floor_since;	/* when the floor was published */

	/* blocking reads: a registered waiter and what wakes it */
	pg_atomic_uint32 waiting;	/* 1 while registered */
	Oid			wait_dboid;
	int32		wait_stream;	/* 0 = any commit in the database */
} LedgerProcSlot;

/* One background worker per database that has the extension. */
#define LEDGER_MAX_DB_WORKERS 64

typedef struct LedgerDbWorker
{
	Oid			dboid;			/* InvalidOid = free */
	int			pid;			/* 0 while a requested worker is starting */
	int			pgprocno;
	TimestampTz requested_at;	/* when a backend asked for it */
} LedgerDbWorker;

typedef struct LedgerShared
{
	slock_t		worker_mutex;	/* protects workers[] */
	LedgerDbWorker workers[LEDGER_MAX_DB_WORKERS];
	int			launcher_pid;
	int			nslots;
	pg_atomic_uint32 nwaiters;	/* lets committers skip the scan */
	LedgerProcSlot slots[FLEXIBLE_ARRAY_MEMBER];
} LedgerShared;

extern LedgerShared *ledger_shared;

extern LedgerProcSlot *ledger_my_slot(void);

#endif							/* LEDGER_SHMEM_H */
