/*-------------------------------------------------------------------------
 *
 * src/standby.c
 *		read_all and waits on hot standbys: the primary's horizon travels in
 *		WAL records of ledger's own resource manager, whose redo gives the
 *		standby its horizon and wakes its waiters.
 *
 * A hot standby replays the primary's commits but not its floors, and the
 * sequence it replays runs ahead of the ids handed out (sequences log 32
 * values in advance), so it cannot compute a horizon of its own.  Instead
 * the primary logs a horizon record in every transaction that drew ids,
 * at PRE_COMMIT, just before its commit record: (database, horizon H, time,
 * streams appended to), with the transaction's xid in the record header.
 * horizon.c computes H so that every id below it is settled on the primary
 * -- its transaction's commit or abort record lies earlier in WAL -- or is
 * one of this transaction's own.  So H holds on the standby as soon as
 * this transaction's commit (or abort) is replayed too.  Being before the
 * commit record, the record is flushed and sent with it: no second flush.
 * A transaction that aborts after drawing ids logs one more record after
 * its abort record, so that the horizon moves on without waiting for the
 * next append.
 *
 * On the standby the startup process replays the record: if the
 * transaction is still in progress (its commit comes next), H is kept as
 * pending on that xid; otherwise it raises the database's standby horizon
 * (never lowers it).  Each replay also settles the pending horizons whose
 * transactions are done.  read_all uses the largest settled horizon,
 * counting the pending ones whose transactions readers find done, and
 * takes its snapshot after that, as on the primary.  The replay wakes the
 * read(wait) waiters of the record's streams and the read_all waiters;
 * since the commit is replayed a moment later, a woken waiter whose attempt
 * saw a recent pending transaction in progress naps a millisecond at a
 * time and looks again once it is done (ledger_standby_wait_hint()).
 * After promotion the server is out of
 * recovery and its own floors take over.  Nothing is logged below
 * wal_level = replica.
 *
 * The standby horizons live in shared memory (shmem.h), written only by
 * the startup process, which also saves them, at most once a second and
 * when it exits, to the file pg_ledger_standby_horizons in the data
 * directory, each with the position of its record.  A restarted standby
 * has none in memory until the primary's next record; until then a backend
 * reads the file and uses a saved horizon once replay has passed its record
 * again (on the same timeline), so a restart does not stall read_all on an
 * idle primary.  A standby must preload ledger: replaying these records
 * needs the resource manager.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "access/xlogrecovery.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/procarray.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "shmem.h"

/*
 * Custom resource manager ids are assigned by the PostgreSQL wiki's
 * registry (wiki.postgresql.org/wiki/CustomWALResourceManagers); one
 * server cannot load two extensions that use the same id.
 */
#define LEDGER_RMGR_ID			197
/* Before the commit record: holds once xid's commit or abort is replayed. */
#define XLOG_LEDGER_HORIZON		0x00
/* After an abort record: holds at once. */
#define XLOG_LEDGER_HORIZON_DONE	0x10

typedef struct xl_ledger_horizon
{
	int64		horizon;
	TimestampTz logged_at;
	TransactionId xid;			/* the transaction it belongs to */
	Oid			dboid;
	int32		nstreams;		/* -1: too many to list, wake every stream */
	int32		streams[FLEXIBLE_ARRAY_MEMBER];
} xl_ledger_horizon;

#define SizeOfLedgerHorizon offsetof(xl_ledger_horizon, streams)

/* The file a standby saves its horizons in (see the header), and its entries. */
#define LEDGER_STANDBY_FILE "pg_ledger_standby_horizons"

typedef struct SavedHorizon
{
	Oid			dboid;
	TimeLineID	tli;
	XLogRecPtr	lsn;
	int64		horizon;
} SavedHorizon;

/* startup process only */
static TimestampTz last_saved_at = 0;
static bool save_at_exit = false;

static XLogRecPtr
log_horizon(uint8 info, int64 horizon, const int32 *streams, int nstreams)
{
	xl_ledger_horizon rec;

	rec.xid = GetTopTransactionIdIfAny();
	rec.dboid = MyDatabaseId;
	rec.nstreams = nstreams;
	rec.horizon = horizon;
	rec.logged_at = GetCurrentTimestamp();
	XLogBeginInsert();
	XLogRegisterData((char *) &rec, SizeOfLedgerHorizon);
	if (nstreams > 0)
		XLogRegisterData((char *) streams, nstreams * sizeof(int32));
	return XLogInsert(LEDGER_RMGR_ID, info);
}

/* xact.c, PRE_COMMIT: the record of a transaction that drew ids. */
void
ledger_standby_pre_commit(void)
{
	int64		horizon;
	const int32 *streams;
	int			nstreams;

	if (ledger_shared == NULL || !XLogStandbyInfoActive() ||
		!ledger_horizon_pre_commit(&horizon))
		return;
	nstreams = ledger_wait_noted_streams(&streams);
	(void) log_horizon(XLOG_LEDGER_HORIZON, horizon, streams, nstreams);
}

/*
 * xact.c, after the abort of a transaction that drew ids: its withdrawn
 * floor lets the horizon move.  Flushed by the WAL writer, as the abort.
 */
void
ledger_standby_abort(void)
{
	if (ledger_shared == NULL || !XLogStandbyInfoActive())
		return;
	XLogSetAsyncXactLSN(log_horizon(XLOG_LEDGER_HORIZON_DONE, ledger_horizon_after_abort(), NULL, 0));
}

/* This database's entry, NULL if the standby has none; claim one if asked. */
static LedgerStandbyDb *
standby_db(Oid dboid, bool claim)
{
	int			i;

	if (ledger_shared == NULL)
		return NULL;
	for (i = 0; i < LEDGER_MAX_STANDBY_DBS; i++)
	{
		LedgerStandbyDb *db = &ledger_shared->standby[i];

		if (pg_atomic_read_u32(&db->dboid) == dboid)
			return db;
	}
	if (!claim)
		return NULL;
	/* only the startup process claims, so a free entry stays free for it */
	for (i = 0; i < LEDGER_MAX_STANDBY_DBS; i++)
	{
		LedgerStandbyDb *db = &ledger_shared->standby[i];

		if (pg_atomic_read_u32(&db->dboid) == InvalidOid)
		{
			pg_atomic_write_u64(&db->horizon, 0);
			pg_write_barrier();
			pg_atomic_write_u32(&db->dboid, dboid);
			return db;
		}
	}
	return NULL;
}

/*
 * Startup process, after a redo: write every database's horizon and the
 * end of its record to the file, through a temporary file and a rename so
 * that a reader never sees half of it.  Not fsynced: a lost or old file
 * only means a restarted standby waits for the primary's next record.
 */
static void
save_horizons(void)
{
	SavedHorizon saved[LEDGER_MAX_STANDBY_DBS];
	TimeLineID	tli;
	int			n = 0;
	int			i;
	int			fd;
	bool		ok;

	(void) GetXLogReplayRecPtr(&tli);
	for (i = 0; i < LEDGER_MAX_STANDBY_DBS; i++)
	{
		LedgerStandbyDb *db = &ledger_shared->standby[i];
		Oid			dboid = pg_atomic_read_u32(&db->dboid);

		if (dboid == InvalidOid)
			continue;
		saved[n].dboid = dboid;
		saved[n].tli = tli;
		saved[n].horizon = (int64) pg_atomic_read_u64(&db->horizon);
		SpinLockAcquire(&db->mutex);
		saved[n].lsn = db->lsn;
		SpinLockRelease(&db->mutex);
		n++;
	}
	fd = OpenTransientFile(LEDGER_STANDBY_FILE ".tmp", O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
	{
		elog(LOG, "ledger: could not write \"%s\": %m", LEDGER_STANDBY_FILE ".tmp");
		return;
	}
	ok = (write(fd, saved, n * sizeof(SavedHorizon)) == (ssize_t) (n * sizeof(SavedHorizon)));
	if (CloseTransientFile(fd) != 0)
		ok = false;
	if (!ok || rename(LEDGER_STANDBY_FILE ".tmp", LEDGER_STANDBY_FILE) != 0)
		elog(LOG, "ledger: could not write \"%s\": %m", LEDGER_STANDBY_FILE);
}

static void
save_horizons_at_exit(int code, Datum arg)
{
	save_horizons();
}

/*
 * A backend on a standby that has replayed no record for its database
 * since it started: the saved horizon, if replay has passed its record on
 * the same timeline; else 0.  *lsn is set to its record's end.
 */
static int64
saved_horizon(Oid dboid, XLogRecPtr *lsn)
{
	SavedHorizon saved[LEDGER_MAX_STANDBY_DBS];
	TimeLineID	replay_tli;
	XLogRecPtr	replayed = GetXLogReplayRecPtr(&replay_tli);
	int64		horizon = 0;
	ssize_t		len;
	int			fd;
	int			i;

	*lsn = InvalidXLogRecPtr;
	fd = OpenTransientFile(LEDGER_STANDBY_FILE, O_RDONLY | PG_BINARY);
	if (fd < 0)
		return 0;
	len = read(fd, saved, sizeof(saved));
	CloseTransientFile(fd);
	for (i = 0; len > 0 && i < len / (ssize_t) sizeof(SavedHorizon); i++)
	{
		if (saved[i].dboid == dboid && saved[i].tli == replay_tli && saved[i].lsn <= replayed)
		{
			horizon = saved[i].horizon;
			*lsn = saved[i].lsn;
		}
	}
	return horizon;
}

/*
 * Has the standby replayed the end of this primary transaction, and do new
 * snapshots see it?  Its commit or abort must be in pg_xact (set by their
 * redo) and it must be gone from the running transactions (removed right
 * after).  A transaction that never ended (the primary crashed) never
 * qualifies; the startup process drops its record after a minute.
 */
static bool
xact_replayed(TransactionId xid)
{
	if (!TransactionIdIsValid(xid))
		return true;
	return (TransactionIdDidCommit(xid) || TransactionIdDidAbort(xid)) &&
		!TransactionIdIsInProgress(xid);
}

/* A copy of a database's pending horizons, taken under its spinlock. */
static int
copy_pending(LedgerStandbyDb *db, LedgerStandbyPending *out)
{
	int			n;

	SpinLockAcquire(&db->mutex);
	n = db->npending;
	memcpy(out, db->pending, n * sizeof(LedgerStandbyPending));
	SpinLockRelease(&db->mutex);
	return n;
}

/*
 * read_all's horizon on a hot standby: ids below it are settled on the
 * primary and replayed here.  1 (nothing) until a record has been replayed.
 */
int64
ledger_standby_horizon(void)
{
	LedgerStandbyDb *db = standby_db(MyDatabaseId, false);
	int64		horizon;

	if (db == NULL)
	{
		XLogRecPtr	lsn;

		horizon = saved_horizon(MyDatabaseId, &lsn);
	}
	else
	{
		LedgerStandbyPending pending[LEDGER_STANDBY_PENDING];
		int			n;
		int			i;

		/*
		 * Settled first, then the pending ones: an entry the startup process
		 * settles in between is missed, which only holds read_all back.
		 */
		horizon = (int64) pg_atomic_read_u64(&db->horizon);
		pg_read_barrier();
		n = copy_pending(db, pending);
		for (i = 0; i < n; i++)
			if (pending[i].horizon > horizon && xact_replayed(pending[i].xid))
				horizon = pending[i].horizon;
	}
	/* the snapshot read_all takes next must see what the horizon admits */
	pg_memory_barrier();
	return Max(horizon, 1);
}

/*
 * Waits on a standby.  The replay of a record wakes its waiters a moment
 * before the commit it belongs to is replayed, so a woken waiter may look
 * too early.  So each attempt of a waiting read notes, before it takes its
 * snapshot, the pending transactions of records replayed in the last
 * second that are still in progress; when it is about to sleep and one of
 * them is done, what its snapshot missed may be there now: it looks again;
 * while one is still in progress it naps for a millisecond.  A transaction
 * done before the attempt noted anything is in its snapshot; a record
 * replayed after it sets the waiter's latch.
 */
static TransactionId noted[LEDGER_STANDBY_PENDING];
static int	nnoted = 0;

/* wait.c: an attempt of a waiting read registered; its snapshot follows. */
void
ledger_standby_wait_begin(void)
{
	LedgerStandbyDb *db = standby_db(MyDatabaseId, false);
	LedgerStandbyPending pending[LEDGER_STANDBY_PENDING];
	TimestampTz now = GetCurrentTimestamp();
	int			n;
	int			i;

	nnoted = 0;
	if (db == NULL)
		return;
	n = copy_pending(db, pending);
	for (i = 0; i < n; i++)
		if (!TimestampDifferenceExceeds(pending[i].replayed_at, now, 1000) &&
			!xact_replayed(pending[i].xid))
			noted[nnoted++] = pending[i].xid;
}

/*
 * wait.c, before a waiter sleeps on a standby: LEDGER_STANDBY_LOOK_AGAIN if
 * a transaction its last attempt noted is done now, LEDGER_STANDBY_NAP if
 * one is still in progress, else LEDGER_STANDBY_SLEEP.
 */
int
ledger_standby_wait_hint(void)
{
	bool		in_progress = false;
	int			i;

	for (i = 0; i < nnoted; i++)
	{
		if (xact_replayed(noted[i]))
		{
			nnoted = 0;
			return LEDGER_STANDBY_LOOK_AGAIN;
		}
		in_progress = true;
	}
	return in_progress ? LEDGER_STANDBY_NAP : LEDGER_STANDBY_SLEEP;
}

/*
 * For health() on a standby: the horizon, the end of the record that set
 * it, and when it was logged and replayed (0 when it came from the saved
 * file after a restart).  False when there is none.
 */
bool
ledger_standby_status(int64 *horizon, XLogRecPtr *lsn, TimestampTz *primary_at,
					  TimestampTz *replayed_at)
{
	LedgerStandbyDb *db = standby_db(MyDatabaseId, false);

	if (db == NULL)
	{
		*horizon = saved_horizon(MyDatabaseId, lsn);
		*primary_at = *replayed_at = 0;
		return *horizon != 0;
	}
	*horizon = ledger_standby_horizon();
	SpinLockAcquire(&db->mutex);
	*lsn = db->lsn;
	*primary_at = db->primary_at;
	*replayed_at = db->replayed_at;
	SpinLockRelease(&db->mutex);
	return *horizon > 1;
}

/* Startup process: raise a database's settled horizon. */
static bool
settle(LedgerStandbyDb *db, int64 horizon)
{
	if ((uint64) horizon <= pg_atomic_read_u64(&db->horizon))
		return false;
	pg_atomic_write_u64(&db->horizon, (uint64) horizon);
	return true;
}

static void
ledger_rmgr_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;
	xl_ledger_horizon *rec;
	LedgerStandbyDb *db;
	LedgerStandbyPending pending[LEDGER_STANDBY_PENDING];
	int			npending;
	int			kept = 0;
	bool		settled_some = false;
	bool		moved = false;
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	if (info != XLOG_LEDGER_HORIZON && info != XLOG_LEDGER_HORIZON_DONE)
		elog(PANIC, "ledger_rmgr_redo: unknown op code %u", info);
	rec = (xl_ledger_horizon *) XLogRecGetData(record);

	db = standby_db(rec->dboid, true);
	if (db == NULL)
	{
		/* more databases than entries: read_all there stays behind */
		elog(DEBUG1, "ledger: no standby horizon entry left for database %u", rec->dboid);
		return;
	}

	/* settle what was pending on transactions that are done by now */
	npending = copy_pending(db, pending);
	for (i = 0; i < npending; i++)
	{
		if (TimestampDifferenceExceeds(pending[i].replayed_at, now, 60 * 1000))
			continue;			/* its commit never came: the primary crashed */
		if (!xact_replayed(pending[i].xid))
			pending[kept++] = pending[i];
		else
			settled_some |= settle(db, pending[i].horizon);
	}
	/*
	 * A record logged before its commit holds once that is replayed (the
	 * commit record is next, so always pending here); one logged after an
	 * abort holds now.
	 */
	if (info == XLOG_LEDGER_HORIZON && TransactionIdIsValid(rec->xid))
	{
		if (kept == LEDGER_STANDBY_PENDING)
		{
			/* no room: forget the oldest, which only holds read_all back */
			memmove(pending, pending + 1, (kept - 1) * sizeof(LedgerStandbyPending));
			kept--;
		}
		pending[kept].xid = rec->xid;
		pending[kept].horizon = rec->horizon;
		pending[kept].replayed_at = now;
		kept++;
		moved = true;			/* it will have, in a moment */
	}
	else
		moved = settle(db, rec->horizon);

	SpinLockAcquire(&db->mutex);
	memcpy(db->pending, pending, kept * sizeof(LedgerStandbyPending));
	db->npending = kept;
	db->lsn = record->EndRecPtr;
	db->primary_at = rec->logged_at;
	db->replayed_at = now;
	SpinLockRelease(&db->mutex);

	/* the horizon before the wake-ups, so that a woken read_all finds it moved */
	pg_memory_barrier();
	if (settled_some)
		ledger_wait_wake_replayed(rec->dboid, NULL, -1, true);
	ledger_wait_wake_replayed(rec->dboid, rec->streams, rec->nstreams, moved);

	if (!save_at_exit)
	{
		before_shmem_exit(save_horizons_at_exit, (Datum) 0);
		save_at_exit = true;
	}
	if ((moved || settled_some) && TimestampDifferenceExceeds(last_saved_at, now, 1000))
	{
		save_horizons();
		last_saved_at = now;
	}
}

static void
ledger_rmgr_desc(StringInfo buf, XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;

	if (info == XLOG_LEDGER_HORIZON || info == XLOG_LEDGER_HORIZON_DONE)
	{
		xl_ledger_horizon *rec = (xl_ledger_horizon *) XLogRecGetData(record);

		appendStringInfo(buf, "xid %u db %u horizon " INT64_FORMAT " streams %d at %s",
						 rec->xid, rec->dboid, rec->horizon, rec->nstreams,
						 timestamptz_to_str(rec->logged_at));
	}
}

static const char *
ledger_rmgr_identify(uint8 info)
{
	switch (info & ~XLR_INFO_MASK)
	{
		case XLOG_LEDGER_HORIZON:
			return "HORIZON";
		case XLOG_LEDGER_HORIZON_DONE:
			return "HORIZON_DONE";
	}
	return NULL;
}

static RmgrData ledger_rmgr = {
	.rm_name = "ledger",
	.rm_redo = ledger_rmgr_redo,
	.rm_desc = ledger_rmgr_desc,
	.rm_identify = ledger_rmgr_identify,
};

/* _PG_init, while shared_preload_libraries are loaded */
void
ledger_standby_init(void)
{
	RegisterCustomRmgr(LEDGER_RMGR_ID, &ledger_rmgr);
}
