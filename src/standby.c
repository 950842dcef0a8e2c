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
 * the primary logs a horizon record after every transaction that drew ids
 * ends: (database, horizon H, time, streams appended to).  horizon.c works
 * out H so that every id below it is settled on the primary and belongs to
 * a transaction whose commit or abort record precedes this record in WAL.
 * Replay is in WAL order, so when the startup process replays the record,
 * all those commits are replayed and visible to new snapshots; it raises
 * the database's standby horizon to H (never lowers it) and wakes the
 * read(wait) waiters of the streams and, if H moved, the read_all waiters.
 * On the standby, read_all uses that horizon and takes its snapshot after
 * reading it, exactly as on the primary.  After promotion the server is no
 * longer in recovery and the primary's floors take over.
 *
 * The record follows the commit record, so the commit's flush does not
 * carry it, and a walsender sends only flushed WAL.  A synchronous commit
 * therefore flushes its record too while a walsender is connected, so that
 * the standby learns of the commit at once (the price of standbys, measured
 * in docs/standby.md); otherwise -- no walsender, or an asynchronous commit
 * -- the WAL writer flushes it with its next round, as it would the commit
 * itself.  Nothing is logged below wal_level = replica.
 *
 * The standby horizons live in shared memory (shmem.h), written only by
 * the startup process, which also saves them, at most once a second and
 * when it exits, to the file pg_ledger_standby_horizons in the data
 * directory, each with the position of its record.  A restarted standby has none in memory until the
 * primary's next record; until then a backend reads the file and uses a
 * saved horizon once replay has passed its record again (on the same
 * timeline), so a restart does not stall read_all on an idle primary.
 * A standby must preload ledger: replaying these records needs the
 * resource manager.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "access/xlogrecovery.h"
#include "miscadmin.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "shmem.h"

/*
 * Custom resource manager ids are assigned by the PostgreSQL wiki's
 * registry (wiki.postgresql.org/wiki/CustomWALResourceManagers); one
 * server cannot load two extensions that use the same id.
 */
#define LEDGER_RMGR_ID			197
#define XLOG_LEDGER_HORIZON		0x00

typedef struct xl_ledger_horizon
{
	Oid			dboid;
	int32		nstreams;		/* -1: too many to list, wake every stream */
	int64		horizon;
	TimestampTz logged_at;
	int32		streams[FLEXIBLE_ARRAY_MEMBER];
} xl_ledger_horizon;

#define SizeOfLedgerHorizon offsetof(xl_ledger_horizon, streams)

/* The startup process's copy of the standby horizons, and its entries. */
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

/* Does any walsender run (a standby, or a logical consumer, may wait)? */
static bool
walsender_connected(void)
{
	int			i;

	if (WalSndCtl == NULL)
		return false;
	for (i = 0; i < max_wal_senders; i++)
	{
		WalSnd	   *walsnd = &WalSndCtl->walsnds[i];
		pid_t		pid;

		SpinLockAcquire(&walsnd->mutex);
		pid = walsnd->pid;
		SpinLockRelease(&walsnd->mutex);
		if (pid != 0)
			return true;
	}
	return false;
}

/*
 * Log the horizon record of a transaction that drew ids and has just ended
 * (xact.c, after its commit or abort record).  A committed one lists the
 * streams it appended to, for the standby's read(wait) waiters.
 */
void
ledger_standby_xact_end(bool committed)
{
	xl_ledger_horizon rec;
	const int32 *streams = NULL;
	int			nstreams = 0;
	XLogRecPtr	lsn;

	if (ledger_shared == NULL || !XLogStandbyInfoActive())
		return;
	if (committed)
		nstreams = ledger_wait_noted_streams(&streams);
	rec.dboid = MyDatabaseId;
	rec.nstreams = nstreams;
	rec.horizon = ledger_horizon_settled(committed);
	rec.logged_at = GetCurrentTimestamp();
	XLogBeginInsert();
	XLogRegisterData((char *) &rec, SizeOfLedgerHorizon);
	if (nstreams > 0)
		XLogRegisterData((char *) streams, nstreams * sizeof(int32));
	lsn = XLogInsert(LEDGER_RMGR_ID, XLOG_LEDGER_HORIZON);

	if (synchronous_commit > SYNCHRONOUS_COMMIT_OFF && walsender_connected())
		XLogFlush(lsn);
	else
		XLogSetAsyncXactLSN(lsn);
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
 * read_all's horizon on a hot standby: ids below it are settled on the
 * primary and replayed here.  1 (nothing) until a record has been replayed.
 */
int64
ledger_standby_horizon(void)
{
	LedgerStandbyDb *db = standby_db(MyDatabaseId, false);
	XLogRecPtr	lsn;
	int64		horizon = db ? (int64) pg_atomic_read_u64(&db->horizon) : saved_horizon(MyDatabaseId, &lsn);

	/* the snapshot read_all takes next must see what the horizon admits */
	pg_memory_barrier();
	return Max(horizon, 1);
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
	*horizon = (int64) pg_atomic_read_u64(&db->horizon);
	SpinLockAcquire(&db->mutex);
	*lsn = db->lsn;
	*primary_at = db->primary_at;
	*replayed_at = db->replayed_at;
	SpinLockRelease(&db->mutex);
	return *horizon != 0;
}

static void
ledger_rmgr_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;
	xl_ledger_horizon *rec;
	LedgerStandbyDb *db;
	bool		moved = false;

	if (info != XLOG_LEDGER_HORIZON)
		elog(PANIC, "ledger_rmgr_redo: unknown op code %u", info);
	rec = (xl_ledger_horizon *) XLogRecGetData(record);

	db = standby_db(rec->dboid, true);
	if (db == NULL)
	{
		/* more databases than entries: read_all there stays behind */
		elog(DEBUG1, "ledger: no standby horizon entry left for database %u", rec->dboid);
		return;
	}
	if ((uint64) rec->horizon > pg_atomic_read_u64(&db->horizon))
	{
		pg_atomic_write_u64(&db->horizon, (uint64) rec->horizon);
		moved = true;
	}
	SpinLockAcquire(&db->mutex);
	db->lsn = record->EndRecPtr;
	db->primary_at = rec->logged_at;
	db->replayed_at = GetCurrentTimestamp();
	SpinLockRelease(&db->mutex);

	/* the horizon before the wake-up, so that a woken read_all finds it moved */
	pg_memory_barrier();
	ledger_wait_wake_replayed(rec->dboid, rec->streams, rec->nstreams, moved);

	if (!save_at_exit)
	{
		before_shmem_exit(save_horizons_at_exit, (Datum) 0);
		save_at_exit = true;
	}
	if (moved && TimestampDifferenceExceeds(last_saved_at, GetCurrentTimestamp(), 1000))
	{
		save_horizons();
		last_saved_at = GetCurrentTimestamp();
	}
}

static void
ledger_rmgr_desc(StringInfo buf, XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;

	if (info == XLOG_LEDGER_HORIZON)
	{
		xl_ledger_horizon *rec = (xl_ledger_horizon *) XLogRecGetData(record);

		appendStringInfo(buf, "db %u horizon " INT64_FORMAT " streams %d at %s",
						 rec->dboid, rec->horizon, rec->nstreams,
						 timestamptz_to_str(rec->logged_at));
	}
}

static const char *
ledger_rmgr_identify(uint8 info)
{
	if ((info & ~XLR_INFO_MASK) == XLOG_LEDGER_HORIZON)
		return "HORIZON";
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
