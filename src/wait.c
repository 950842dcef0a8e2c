/*-------------------------------------------------------------------------
 *
 * src/wait.c
 *		Blocking reads: read(wait => …), read_all(wait => …) and the
 *		background worker sleep on their own latch and are woken by the
 *		commit of what they watch, never by polling.
 *
 * A waiter publishes (database, pid, stream) in its slot and then sets
 * "waiting"; only after that does it take the snapshot of its next query.
 * A committer, after its commit is visible and its floor withdrawn, scans
 * the slots and sets the latch of every waiter on one of the streams it
 * wrote (or on stream 0, "anything in this database", which read_all and
 * the background worker use).  Either the committer sees the waiter, or the
 * waiter's snapshot sees the commit: no wake-up is lost.  A transaction
 * that aborts after drawing ids wakes the stream-0 waiters too, since its
 * floor no longer holds the horizon back.  Waiters on other streams are
 * never woken, so idle tails cost nothing.
 *
 * A registration belongs to one waiting call: read.c undoes it under
 * PG_ENSURE_ERROR_CLEANUP, every (sub)transaction abort undoes it, and an
 * exit callback undoes it when the process leaves by any path.  A committer
 * also skips a slot whose pid is no longer its proc's, and nwaiters (which
 * lets committers skip the scan altogether) counts each registration once.
 *
 * Every wake-up bumps the slot's wakeups counter, so the background worker
 * can tell a wake-up from a timeout and skip a pass when nothing happened.
 *
 * On a hot standby the primary's committers are not here: the startup
 * process wakes the waiters when it replays the horizon record that the
 * primary logs just before each such commit (standby.c).  That is a moment
 * early, so a waiter that finds a transaction of a recent record still in
 * progress naps for a millisecond instead of sleeping, and looks again once
 * it is done.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "shmem.h"

/*
 * Streams this transaction appended to, to wake at commit.  Past
 * WAKE_MAX_STREAMS distinct streams every waiter of the database is woken
 * instead, which is correct and keeps the list small.
 */
#define WAKE_MAX_STREAMS 32
static int32 wake_streams[WAKE_MAX_STREAMS];
static int	wake_nstreams = 0;
static bool wake_every_stream = false;

static bool exit_callback_registered = false;

/* The background worker's registration outlives its aborted transactions. */
static bool registration_is_permanent = false;

void
ledger_wait_note_append(int32 stream_id)
{
	int			i;

	if (wake_every_stream)
		return;
	for (i = 0; i < wake_nstreams; i++)
		if (wake_streams[i] == stream_id)
			return;
	if (wake_nstreams == WAKE_MAX_STREAMS)
		wake_every_stream = true;
	else
		wake_streams[wake_nstreams++] = stream_id;
}

static void
wait_exit_callback(int code, Datum arg)
{
	registration_is_permanent = false;
	ledger_wait_unregister();
}

/*
 * Arrange for the registration to be undone when the process exits.  Called
 * before a waiting read enters its PG_ENSURE_ERROR_CLEANUP block, whose own
 * exit callback must stay the latest one registered.
 */
void
ledger_wait_prepare(void)
{
	if (ledger_shared != NULL && !exit_callback_registered)
	{
		before_shmem_exit(wait_exit_callback, (Datum) 0);
		exit_callback_registered = true;
	}
}

/*
 * For the background worker: wait for any commit in the database from now
 * until the process exits, whatever its transactions do.
 */
void
ledger_wait_register_permanently(void)
{
	registration_is_permanent = true;
	ledger_wait_register(0);
}

void
ledger_wait_register(int32 stream_id)
{
	LedgerProcSlot *slot;

	if (ledger_shared == NULL)
		return;
	ledger_wait_prepare();
	slot = ledger_my_slot();
	slot->wait_dboid = MyDatabaseId;
	slot->wait_pid = MyProcPid;
	slot->wait_stream = stream_id;
	if (RecoveryInProgress())
		ledger_standby_wait_begin();
	pg_write_barrier();
	if (pg_atomic_exchange_u32(&slot->waiting, 1) == 0)
		pg_atomic_fetch_add_u32(&ledger_shared->nwaiters, 1);
	/* Registration must be visible before our next snapshot is taken. */
	pg_memory_barrier();
}

void
ledger_wait_unregister(void)
{
	LedgerProcSlot *slot;

	if (ledger_shared == NULL || MyProc == NULL || registration_is_permanent)
		return;
	slot = ledger_my_slot();
	if (pg_atomic_exchange_u32(&slot->waiting, 0) != 0)
		pg_atomic_fetch_sub_u32(&ledger_shared->nwaiters, 1);
}

/* How often this backend has been woken; see the header comment. */
uint64
ledger_wait_wakeups(void)
{
	if (ledger_shared == NULL)
		return 0;
	return pg_atomic_read_u64(&ledger_my_slot()->wakeups);
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
	if (RecoveryInProgress() && ledger_shared != NULL)
	{
		/* see standby.c: a record replayed just before its commit */
		switch (ledger_standby_wait_hint())
		{
			case LEDGER_STANDBY_LOOK_AGAIN:
				CHECK_FOR_INTERRUPTS();
				return true;	/* a fresh attempt, without sleeping */
			case LEDGER_STANDBY_NAP:
				timeout_ms = 1;
				break;
			default:
				break;
		}
	}

	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return true;
}

/* Wake one backend by proc number, counting the wake-up. */
void
ledger_wait_poke(int procno)
{
	if (ledger_shared == NULL || procno < 0 || procno >= ledger_shared->nslots)
		return;
	pg_atomic_fetch_add_u64(&ledger_shared->slots[procno].wakeups, 1);
	SetLatch(&ledger_proc_by_number(procno)->procLatch);
}

/*
 * Wake the waiters of a database on the given streams (every_stream: on
 * any stream), and with horizon_moved also the database-wide waiters.
 */
static void
wake_waiters(Oid dboid, const int32 *streams, int nstreams, bool every_stream,
			 bool horizon_moved)
{
	int			i,
				j;

	if (pg_atomic_read_u32(&ledger_shared->nwaiters) == 0)
		return;

	for (i = 0; i < ledger_shared->nslots; i++)
	{
		LedgerProcSlot *slot = &ledger_shared->slots[i];
		bool		wake = false;

		if (pg_atomic_read_u32(&slot->waiting) == 0)
			continue;
		pg_read_barrier();
		if (slot->wait_dboid != dboid ||
			slot->wait_pid != ledger_proc_by_number(i)->pid)
			continue;
		if (slot->wait_stream == 0)
			wake = horizon_moved;
		else if (every_stream)
			wake = true;
		else
		{
			for (j = 0; j < nstreams && !wake; j++)
				wake = (streams[j] == slot->wait_stream);
		}
		if (wake)
			ledger_wait_poke(i);
	}
}

/*
 * The streams this transaction appended to, for its standby record: their
 * number, or -1 when there were too many to list (wake every stream).
 */
int
ledger_wait_noted_streams(const int32 **streams)
{
	*streams = wake_streams;
	return wake_every_stream ? -1 : wake_nstreams;
}

/*
 * On a hot standby (standby.c, in the startup process): a transaction of
 * the primary that appended to these streams (nstreams -1: to too many to
 * list) is replayed; wake their waiters, and the database-wide ones when
 * the horizon moved.
 */
void
ledger_wait_wake_replayed(Oid dboid, const int32 *streams, int nstreams,
						  bool horizon_moved)
{
	if (ledger_shared != NULL)
		wake_waiters(dboid, streams, Max(nstreams, 0), nstreams < 0, horizon_moved);
}

/* xact.c: the transaction committed, and its commit is visible. */
void
ledger_wait_xact_commit(bool horizon_moved)
{
	if (ledger_shared != NULL && (horizon_moved || wake_nstreams > 0 || wake_every_stream))
		wake_waiters(MyDatabaseId, wake_streams, wake_nstreams, wake_every_stream, horizon_moved);
	wake_nstreams = 0;
	wake_every_stream = false;
}

/* xact.c: the transaction (or a subtransaction, top = false) aborted. */
void
ledger_wait_xact_abort(bool top, bool horizon_moved)
{
	ledger_wait_unregister();
	if (!top)
		return;
	/* Nothing committed, but a withdrawn floor lets read_all move on. */
	wake_nstreams = 0;
	wake_every_stream = false;
	if (ledger_shared != NULL && horizon_moved)
		wake_waiters(MyDatabaseId, NULL, 0, false, true);
}
