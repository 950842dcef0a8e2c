/*-------------------------------------------------------------------------
 *
 * src/wait.c
 *		Blocking reads: read(wait => …) and read_all(wait => …) sleep on
 *		their own latch and are woken by the commit of an append to what
 *		they watch, never by polling.
 *
 * A waiter publishes (database, stream) in its slot and then sets
 * "waiting"; only after that does it take the snapshot of its next query.
 * A committer, after its commit is visible and its floor cleared, scans the
 * slots and sets the latch of every waiter on one of the streams it wrote
 * (or on stream 0, "anything in this database", which read_all and the
 * background worker use).  Either the committer sees the waiter, or the
 * waiter's snapshot sees the commit: no wake-up is lost.  A transaction
 * that aborts after appending wakes the stream-0 waiters too, since its
 * floor no longer holds the horizon back.  Waiters on other streams are
 * never woken, so idle tails cost nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/wait_event.h"

#include "shmem.h"

void
ledger_wait_register(int32 stream_id)
{
	LedgerProcSlot *slot;

	if (ledger_shared == NULL)
		return;
	slot = ledger_my_slot();
	if (pg_atomic_read_u32(&slot->waiting) == 0)
	{
		slot->wait_dboid = MyDatabaseId;
		slot->wait_stream = stream_id;
		pg_write_barrier();
		pg_atomic_write_u32(&slot->waiting, 1);
		pg_atomic_fetch_add_u32(&ledger_shared->nwaiters, 1);
	}
	else if (slot->wait_stream != stream_id)
	{
		/* a stream that did not exist at first has appeared */
		slot->wait_stream = stream_id;
	}
	/* Registration must be visible before our next snapshot is taken. */
	pg_memory_barrier();
}

void
ledger_wait_unregister(void)
{
	LedgerProcSlot *slot;

	if (ledger_shared == NULL || MyProc == NULL)
		return;
	slot = ledger_my_slot();
	if (pg_atomic_read_u32(&slot->waiting) != 0)
	{
		pg_atomic_write_u32(&slot->waiting, 0);
		pg_atomic_fetch_sub_u32(&ledger_shared->nwaiters, 1);
	}
}

/*
 * Sleep until woken or the deadline passes.  Returns false once the
 * deadline has passed.  Cancel requests and statement_timeout interrupt the
 * sleep at once through CHECK_FOR_INTERRUPTS.
 */
bool
ledger_wait_sleep(TimestampTz deadline)
{
	long		timeout_ms;
	TimestampTz now = GetCurrentTimestamp();

	if (now >= deadline)
		return false;
	timeout_ms = TimestampDifferenceMilliseconds(now, deadline);
	if (timeout_ms <= 0)
		timeout_ms = 1;

	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return true;
}

/*
 * Wake the waiters of this database on any of the given streams, and with
 * horizon_moved also the database-wide waiters.
 */
void
ledger_wait_wake(const int32 *stream_ids, int nstreams, bool horizon_moved)
{
	int			i,
				j;

	if (ledger_shared == NULL || pg_atomic_read_u32(&ledger_shared->nwaiters) == 0)
		return;

	for (i = 0; i < ledger_shared->nslots; i++)
	{
		LedgerProcSlot *slot = &ledger_shared->slots[i];
		bool		wake = false;

		if (pg_atomic_read_u32(&slot->waiting) == 0)
			continue;
		pg_read_barrier();
		if (slot->wait_dboid != MyDatabaseId)
			continue;
		if (slot->wait_stream == 0)
			wake = horizon_moved;
		else
		{
			for (j = 0; j < nstreams && !wake; j++)
				wake = (stream_ids[j] == slot->wait_stream);
		}
		if (wake)
			SetLatch(&ProcGlobal->allProcs[i].procLatch);
	}
}
