/*-------------------------------------------------------------------------
 *
 * src/launcher.c
 *		The launcher, and the registry of per-database workers: which
 *		database wants a worker, which one runs, which one failed and when
 *		to try again.
 *
 * Only the launcher starts workers.  A worker runs only while its database
 * has sinks or retention limits (worker.c), and leaves when it has none; a
 * backend that commits new work (a sink, a retention limit) asks for the
 * worker after commit: it wakes a running one, or marks the database
 * REQUESTED and wakes the launcher.  The launcher connects to no database,
 * so it never blocks DROP DATABASE.
 *
 * Workers are registered with BGW_NEVER_RESTART and the launcher as their
 * notify process: the postmaster never restarts a worker by itself (which is
 * how 0.1 kept restarting workers of dropped databases forever).  A worker
 * that stops without having left cleanly -- an error, pg_terminate_backend,
 * DROP DATABASE ... WITH (FORCE), a failed start -- is marked FAILED and
 * tried again after a growing delay, but only if its database still exists
 * and accepts connections; otherwise it is forgotten.  A failed
 * registration (max_worker_processes exhausted) is retried the same way.
 *
 * Shared memory does not survive a restart, and which databases have work
 * is only known inside them, so when the launcher starts it probes each
 * connectable database once, at most LAUNCHER_MAX_STARTING at a time: the
 * worker of a database without the extension or without work leaves at
 * once and is not started again until a backend asks for it.
 *
 * Registry entries are protected by ledger_shared->registry_lock (see
 * shmem.h), held only to read or change entries.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(ledger_wake_worker);

PGDLLEXPORT void ledger_launcher_main(Datum arg);

/* A failed worker is tried again after 5 s, doubling up to 60 s. */
#define RETRY_FIRST_MS		5000
#define RETRY_MAX_MS		60000
/* Workers registered but not yet running, at most. */
#define LAUNCHER_MAX_STARTING 2
/* The launcher's longest sleep: it also re-checks its handles then. */
#define LAUNCHER_NAPTIME_MS 10000

/* ------------------------------------------------------------------------
 * Registry (any process; caller holds registry_lock as noted)
 * ------------------------------------------------------------------------
 */

/* Caller holds registry_lock (shared or exclusive). */
static LedgerDbWorker *
registry_find(Oid dboid)
{
	int			i;

	for (i = 0; i < LEDGER_MAX_DB_WORKERS; i++)
	{
		LedgerDbWorker *w = &ledger_shared->workers[i];

		if (w->state != LEDGER_WORKER_FREE && w->dboid == dboid)
			return w;
	}
	return NULL;
}

/* Caller holds registry_lock exclusively. */
static LedgerDbWorker *
registry_add(Oid dboid)
{
	int			i;

	for (i = 0; i < LEDGER_MAX_DB_WORKERS; i++)
	{
		LedgerDbWorker *w = &ledger_shared->workers[i];

		if (w->state == LEDGER_WORKER_FREE)
		{
			memset(w, 0, sizeof(*w));
			w->dboid = dboid;
			w->state = LEDGER_WORKER_REQUESTED;
			w->procno = -1;
			return w;
		}
	}
	return NULL;
}

static void
wake_launcher(void)
{
	int			procno = ledger_shared->launcher_procno;

	if (procno >= 0)
		SetLatch(&ledger_proc_by_number(procno)->procLatch);
}

/*
 * Make sure dboid's worker runs and looks at its work again: wake it if it
 * runs, else have the launcher start it.
 */
static void
request_worker(Oid dboid)
{
	LedgerDbWorker *w;
	int			poke = -1;
	bool		launcher = false;
	bool		full = false;

	LWLockAcquire(ledger_shared->registry_lock, LW_EXCLUSIVE);
	w = registry_find(dboid);
	if (w == NULL)
	{
		w = registry_add(dboid);
		launcher = (w != NULL);
		full = (w == NULL);
	}
	else if (w->state == LEDGER_WORKER_RUNNING)
	{
		w->rerequested = true;
		poke = w->procno;
	}
	else if (w->state == LEDGER_WORKER_FAILED)
	{
		/* new work is a reason to try again now */
		w->state = LEDGER_WORKER_REQUESTED;
		launcher = true;
	}
	else
		w->rerequested = true;	/* starting: it will look at everything */
	LWLockRelease(ledger_shared->registry_lock);

	if (poke >= 0)
		ledger_wait_poke(poke);
	if (launcher)
		wake_launcher();
	if (full)
		ereport(WARNING,
				(errmsg("ledger serves at most %d databases with a background worker; this one gets none",
						LEDGER_MAX_DB_WORKERS),
				 errdetail("Its sinks and retention limits are not served until another database's worker leaves.")));
}

/* Ask for this database's worker once the current transaction commits. */
static bool worker_requested = false;

void
ledger_worker_request(void)
{
	worker_requested = true;
}

void
ledger_launcher_xact_commit(void)
{
	if (!worker_requested)
		return;
	worker_requested = false;
	if (ledger_shared != NULL)
		request_worker(MyDatabaseId);
}

void
ledger_launcher_xact_abort(void)
{
	worker_requested = false;
}

/*
 * Statement trigger on ledger.sinks and ledger.stream_settings: new or
 * changed sinks and retention limits (also when pg_restore loads them) need
 * this database's worker.
 */
Datum
ledger_wake_worker(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ledger.wake_worker() must be called as a trigger")));
	ledger_worker_request();
	return PointerGetDatum(NULL);
}

/*
 * DROP EXTENSION ledger and ALTER EXTENSION ledger UPDATE change whether
 * the worker may serve the database, but touch no row a trigger could see;
 * an object access hook notices them and asks for the worker, which then
 * leaves or starts serving.
 */
static object_access_hook_type prev_object_access_hook = NULL;

static void
ledger_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					 int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (classId == ExtensionRelationId &&
		(access == OAT_DROP || access == OAT_POST_ALTER || access == OAT_POST_CREATE) &&
		objectId == get_extension_oid("ledger", true))
		ledger_worker_request();
}

void
ledger_launcher_init(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = ledger_object_access;
}

/* A copy of dboid's registry entry, for health(); false if it has none. */
bool
ledger_launcher_worker_status(Oid dboid, LedgerWorkerStatus *status)
{
	LedgerDbWorker *w;

	if (ledger_shared == NULL)
		return false;
	LWLockAcquire(ledger_shared->registry_lock, LW_SHARED);
	w = registry_find(dboid);
	if (w)
	{
		status->state = (int) w->state;
		status->pid = w->pid;
		status->failures = w->failures;
		status->retry_at = w->retry_at;
	}
	LWLockRelease(ledger_shared->registry_lock);
	status->launcher_running = ledger_shared->launcher_procno >= 0;
	return w != NULL;
}

/* ------------------------------------------------------------------------
 * The worker's side of the registry
 * ------------------------------------------------------------------------
 */

static LedgerDbWorker *my_entry = NULL;
static bool leaving_cleanly = false;

static int
retry_delay_ms(int failures)
{
	int			ms = RETRY_FIRST_MS;

	while (--failures > 0 && ms < RETRY_MAX_MS)
		ms *= 2;
	return Min(ms, RETRY_MAX_MS);
}

/*
 * Exit callback of a worker: an exit that did not go through
 * ledger_launcher_worker_leave() is a failure the launcher retries.
 */
static void
worker_exit_callback(int code, Datum arg)
{
	if (my_entry == NULL)
		return;
	LWLockAcquire(ledger_shared->registry_lock, LW_EXCLUSIVE);
	if (my_entry->state == LEDGER_WORKER_RUNNING && my_entry->pid == MyProcPid)
	{
		if (leaving_cleanly)
			my_entry->state = LEDGER_WORKER_FREE;
		else
		{
			my_entry->state = LEDGER_WORKER_FAILED;
			my_entry->failures++;
			my_entry->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															 retry_delay_ms(my_entry->failures));
		}
		my_entry->pid = 0;
		my_entry->procno = -1;
	}
	LWLockRelease(ledger_shared->registry_lock);
	my_entry = NULL;
	wake_launcher();
}

/*
 * Called by a starting worker: take over this database's entry.  False if
 * another worker serves the database (then this one just exits).
 */
bool
ledger_launcher_worker_claim(void)
{
	LedgerDbWorker *w;

	LWLockAcquire(ledger_shared->registry_lock, LW_EXCLUSIVE);
	w = registry_find(MyDatabaseId);
	if (w != NULL && w->state == LEDGER_WORKER_RUNNING && w->pid != MyProcPid)
		w = NULL;
	else if (w == NULL)
		w = registry_add(MyDatabaseId);
	if (w != NULL)
	{
		w->state = LEDGER_WORKER_RUNNING;
		w->pid = MyProcPid;
		w->procno = ledger_my_procno();
		w->rerequested = false;
		my_entry = w;
	}
	LWLockRelease(ledger_shared->registry_lock);
	if (my_entry == NULL)
		return false;
	before_shmem_exit(worker_exit_callback, (Datum) 0);
	return true;
}

/*
 * Called by the worker before it loads its work: requests from now on are
 * for work it will see.
 */
void
ledger_launcher_worker_begin_pass(void)
{
	LWLockAcquire(ledger_shared->registry_lock, LW_EXCLUSIVE);
	my_entry->rerequested = false;
	my_entry->failures = 0;
	LWLockRelease(ledger_shared->registry_lock);
}

/*
 * The worker found no work.  It may leave unless a request came since its
 * last pass began (that request is for work it has not seen yet).
 */
bool
ledger_launcher_worker_leave(void)
{
	bool		may_leave;

	LWLockAcquire(ledger_shared->registry_lock, LW_EXCLUSIVE);
	may_leave = !my_entry->rerequested;
	if (may_leave)
		leaving_cleanly = true;
	LWLockRelease(ledger_shared->registry_lock);
	return may_leave;
}

/* ------------------------------------------------------------------------
 * Launcher
 * ------------------------------------------------------------------------
 */

void
ledger_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ledger");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "ledger_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "ledger launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "ledger launcher");
	RegisterBackgroundWorker(&worker);
}

/* The launcher's handles of the workers it registered, by registry index. */
static BackgroundWorkerHandle *handles[LEDGER_MAX_DB_WORKERS];

static bool
register_worker(int index, Oid dboid)
{
	BackgroundWorker worker;
	MemoryContext old;
	bool		ok;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ledger");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "ledger_db_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "ledger worker for database %u", dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "ledger worker");
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;
	if (handles[index] != NULL)
	{
		pfree(handles[index]);
		handles[index] = NULL;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	ok = RegisterDynamicBackgroundWorker(&worker, &handles[index]);
	MemoryContextSwitchTo(old);
	return ok;
}

/* Does the database exist and accept connections? */
static bool
database_is_connectable(Oid dboid)
{
	HeapTuple	tup;
	bool		ok = false;

	StartTransactionCommand();
	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (HeapTupleIsValid(tup))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		ok = db->datallowconn && !db->datistemplate;
		ReleaseSysCache(tup);
	}
	CommitTransactionCommand();
	return ok;
}

/* Request a worker for every connectable database (the start-up probe). */
static void
probe_all_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	Oid		   *dboids;
	int			ndbs = 0;
	int			maxdbs = 16;
	int			i;

	/* read the catalog first: the registry lock is never held across I/O */
	dboids = palloc(sizeof(Oid) * maxdbs);
	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (!db->datallowconn || db->datistemplate)
			continue;
		if (ndbs == maxdbs)
		{
			maxdbs *= 2;
			dboids = repalloc(dboids, sizeof(Oid) * maxdbs);
		}
		dboids[ndbs++] = db->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	LWLockAcquire(ledger_shared->registry_lock, LW_EXCLUSIVE);
	for (i = 0; i < ndbs; i++)
		if (registry_find(dboids[i]) == NULL)
			(void) registry_add(dboids[i]);
	LWLockRelease(ledger_shared->registry_lock);
	pfree(dboids);
}

/*
 * One round of the launcher: notice workers that stopped before claiming
 * their entry, forget dropped databases, start what is due.  Returns how
 * long it may sleep.
 */
static long
launcher_round(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = LAUNCHER_NAPTIME_MS;
	int			nstarting = 0;
	int			i;

	for (i = 0; i < LEDGER_MAX_DB_WORKERS; i++)
	{
		LedgerDbWorker *w = &ledger_shared->workers[i];
		LedgerWorkerState state;
		Oid			dboid;
		pid_t		pid;

		CHECK_FOR_INTERRUPTS();

		LWLockAcquire(ledger_shared->registry_lock, LW_SHARED);
		state = w->state;
		dboid = w->dboid;
		LWLockRelease(ledger_shared->registry_lock);

		if (state == LEDGER_WORKER_STARTING)
		{
			BgwHandleStatus status = handles[i] ?
				GetBackgroundWorkerPid(handles[i], &pid) : BGWH_STOPPED;

			if (status == BGWH_POSTMASTER_DIED)
				proc_exit(1);
			if (status != BGWH_STOPPED)
			{
				nstarting++;
				continue;
			}
			/* stopped without claiming the entry: a failed start */
			LWLockAcquire(ledger_shared->registry_lock, LW_EXCLUSIVE);
			if (w->state == LEDGER_WORKER_STARTING && w->dboid == dboid)
			{
				w->state = LEDGER_WORKER_FAILED;
				w->failures++;
				w->retry_at = TimestampTzPlusMilliseconds(now, retry_delay_ms(w->failures));
			}
			state = w->state;
			LWLockRelease(ledger_shared->registry_lock);
		}

		if (state == LEDGER_WORKER_FAILED)
		{
			TimestampTz retry_at;

			LWLockAcquire(ledger_shared->registry_lock, LW_SHARED);
			retry_at = w->retry_at;
			LWLockRelease(ledger_shared->registry_lock);
			if (retry_at > now)
			{
				sleep_ms = Min(sleep_ms, TimestampDifferenceMilliseconds(now, retry_at) + 1);
				continue;
			}
		}
		else if (state != LEDGER_WORKER_REQUESTED)
			continue;

		if (nstarting >= LAUNCHER_MAX_STARTING)
			continue;			/* the next round, when one has started */

		if (!database_is_connectable(dboid))
		{
			LWLockAcquire(ledger_shared->registry_lock, LW_EXCLUSIVE);
			if (w->dboid == dboid && w->state != LEDGER_WORKER_RUNNING)
				w->state = LEDGER_WORKER_FREE;
			LWLockRelease(ledger_shared->registry_lock);
			ereport(DEBUG1,
					(errmsg("ledger launcher forgets database %u, which no longer accepts connections",
							dboid)));
			continue;
		}

		if (register_worker(i, dboid))
		{
			LWLockAcquire(ledger_shared->registry_lock, LW_EXCLUSIVE);
			if (w->dboid == dboid && w->state != LEDGER_WORKER_RUNNING)
				w->state = LEDGER_WORKER_STARTING;
			LWLockRelease(ledger_shared->registry_lock);
			nstarting++;
		}
		else
		{
			int			failures;

			LWLockAcquire(ledger_shared->registry_lock, LW_EXCLUSIVE);
			w->state = LEDGER_WORKER_FAILED;
			failures = ++w->failures;
			w->retry_at = TimestampTzPlusMilliseconds(now, retry_delay_ms(failures));
			LWLockRelease(ledger_shared->registry_lock);
			if (failures == 1)
				ereport(LOG,
						(errmsg("ledger launcher could not start a worker for database %u; retrying",
								dboid),
						 errhint("Raise max_worker_processes.")));
			sleep_ms = Min(sleep_ms, (long) retry_delay_ms(failures));
		}
	}
	return sleep_ms;
}

static void
launcher_exit_callback(int code, Datum arg)
{
	ledger_shared->launcher_procno = -1;
}

void
ledger_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* shared catalogs only: holding no database keeps DROP DATABASE free */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("ledger launcher");

	ledger_shared->launcher_procno = ledger_my_procno();
	before_shmem_exit(launcher_exit_callback, (Datum) 0);

	probe_all_databases();

	for (;;)
	{
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		sleep_ms = launcher_round();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
