/*-------------------------------------------------------------------------
 *
 * src/worker.c
 *		The background workers: a launcher, and one worker per database
 *		that has the extension, which enforces retention and fills the
 *		export sinks.
 *
 * The launcher connects to no database (so it never blocks DROP
 * DATABASE); at start it offers a worker to every database.  A worker runs
 * only while its database has sinks or retention limits: it exits when it
 * finds neither (or no extension), so an idle database holds no connection.
 * Creating a sink or a retention limit starts it again after commit (a
 * statement trigger, which also fires when pg_restore loads them), so no
 * restart is ever needed.
 * Both are restarted by the postmaster after a crash, and a worker resumes
 * from the positions stored in ledger.sinks and in each target.
 *
 * A worker sleeps on its latch.  It is registered as a database-wide waiter
 * (wait.c), so every commit of an append wakes it; create/resume/drop_sink
 * wake it too; otherwise it wakes every ledger.worker_naptime.
 *
 * Exactly-once export: entries are read only below the read_all horizon
 * (horizon.c), in id order, in batches.  A batch and the sink's position
 * are written to the target in one target transaction (SQLite) or as
 * idempotent documents whose _id derives from the entry id (MongoDB); the
 * worker then records the position in ledger.sinks.  After a crash it
 * resumes from the larger of the two positions.
 *
 * Registry (LedgerShared.workers): protected by worker_mutex, a spinlock,
 * held only to read or claim a slot.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "datatype/timestamp.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "shmem.h"
#include "sink.h"

PG_FUNCTION_INFO_V1(ledger_wake_worker);

PGDLLEXPORT void ledger_launcher_main(Datum arg);
PGDLLEXPORT void ledger_db_worker_main(Datum arg);

int			ledger_export_batch = 1000;

/* ------------------------------------------------------------------------
 * Registration
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

static bool
start_db_worker(Oid dboid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ledger");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "ledger_db_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "ledger worker for database %u", dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "ledger worker");
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = 0;
	return RegisterDynamicBackgroundWorker(&worker, &handle);
}

/* A requested worker that has not shown up by then is presumed lost. */
#define WORKER_START_TIMEOUT_MS 10000

/*
 * The registry slot of a database's worker, running or starting, or NULL.
 * Caller holds worker_mutex.
 */
static LedgerDbWorker *
registry_lookup(Oid dboid, TimestampTz now)
{
	int			i;

	for (i = 0; i < LEDGER_MAX_DB_WORKERS; i++)
	{
		LedgerDbWorker *w = &ledger_shared->workers[i];

		if (w->dboid != dboid)
			continue;
		if (w->pid == 0 &&
			TimestampDifferenceExceeds(w->requested_at, now, WORKER_START_TIMEOUT_MS))
		{
			w->dboid = InvalidOid;	/* never started: forget it */
			continue;
		}
		return w;
	}
	return NULL;
}

static LedgerDbWorker *
registry_free_slot(void)
{
	int			i;

	for (i = 0; i < LEDGER_MAX_DB_WORKERS; i++)
		if (ledger_shared->workers[i].dboid == InvalidOid)
			return &ledger_shared->workers[i];
	return NULL;
}

/* Is a worker running (pid > 0) or starting (pid 0) for dboid? */
static bool
find_worker(Oid dboid, int *pid, int *pgprocno)
{
	LedgerDbWorker *w;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&ledger_shared->worker_mutex);
	w = registry_lookup(dboid, now);
	if (w)
	{
		*pid = w->pid;
		*pgprocno = w->pgprocno;
	}
	SpinLockRelease(&ledger_shared->worker_mutex);
	return w != NULL;
}

/*
 * Ask for this database's worker once the current transaction commits (a
 * new sink, resume, retention): wake it, or start it if it is not running.
 * After commit, so that the worker is sure to see what asked for it.
 */
static bool worker_requested = false;

void
ledger_worker_request(void)
{
	worker_requested = true;
}

static void
worker_xact_callback(XactEvent event, void *arg)
{
	int			pid,
				pgprocno;

	if (event != XACT_EVENT_COMMIT)
	{
		if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
			worker_requested = false;
		return;
	}
	if (!worker_requested)
		return;
	worker_requested = false;
	if (ledger_shared == NULL)
		return;

	/*
	 * Wake the worker, or reserve its slot as "starting" and start one: the
	 * reservation keeps a burst of commits from starting a worker each.
	 */
	{
		LedgerDbWorker *w;
		bool		start = false;
		TimestampTz now = GetCurrentTimestamp();

		SpinLockAcquire(&ledger_shared->worker_mutex);
		w = registry_lookup(MyDatabaseId, now);
		if (w)
		{
			pid = w->pid;
			pgprocno = w->pgprocno;
		}
		else if ((w = registry_free_slot()) != NULL)
		{
			w->dboid = MyDatabaseId;
			w->pid = 0;
			w->requested_at = now;
			start = true;
		}
		SpinLockRelease(&ledger_shared->worker_mutex);

		if (w && !start && pid > 0)
			SetLatch(&ProcGlobal->allProcs[pgprocno].procLatch);
		if (start && !start_db_worker(MyDatabaseId))
		{
			SpinLockAcquire(&ledger_shared->worker_mutex);
			if (w->dboid == MyDatabaseId && w->pid == 0)
				w->dboid = InvalidOid;
			SpinLockRelease(&ledger_shared->worker_mutex);
			/* health() reports a database with work and no worker */
			ereport(LOG,
					(errmsg("could not start the ledger worker for database %u", MyDatabaseId),
					 errhint("Raise max_worker_processes.")));
		}
	}
}

void
ledger_worker_init(void)
{
	RegisterXactCallback(worker_xact_callback, NULL);
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

/* Does this database have sinks or retention limits?  Caller is in a transaction. */
static bool
work_exists(void)
{
	static SPIPlanPtr plan = NULL;
	bool		exists = false;
	bool		isnull;

	ledger_spi_connect();
	if (plan == NULL)
		plan = ledger_prepare_plan("SELECT EXISTS (SELECT 1 FROM ledger.sinks)"
								   " OR EXISTS (SELECT 1 FROM ledger.stream_settings"
								   " WHERE max_entries IS NOT NULL OR max_age IS NOT NULL)", 0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return exists;
}

void
ledger_health_worker_checks(ReturnSetInfo *rsinfo)
{
	int			pid,
				pgprocno;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (ledger_shared == NULL)
		return;
	values[0] = CStringGetTextDatum("worker");
	if (find_worker(MyDatabaseId, &pid, &pgprocno))
	{
		values[1] = BoolGetDatum(true);
		values[2] = CStringGetTextDatum(pid > 0 ?
										psprintf("ledger worker running as pid %d", pid) :
										pstrdup("ledger worker starting"));
	}
	else if (!work_exists())
	{
		values[1] = BoolGetDatum(true);
		values[2] = CStringGetTextDatum("idle: no sinks and no retention limits; a worker starts when one is set");
	}
	else
	{
		values[1] = BoolGetDatum(false);
		values[2] = CStringGetTextDatum("no ledger worker serves this database; retention and sinks are stalled (check max_worker_processes and the server log)");
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

	/* sinks in error, from the table */
	if (SPI_connect() == SPI_OK_CONNECT)
	{
		int			rc = SPI_execute("SELECT pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) 'error'),"
									 " pg_catalog.count(*), pg_catalog.string_agg(name || ': ' || COALESCE(last_error, ''), '; ')"
									 " FILTER (WHERE state OPERATOR(pg_catalog.=) 'error') FROM ledger.sinks",
									 true, 1);

		if (rc == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;
			int64		nerr = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			int64		nall = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
			char	   *errs = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
			char	   *detail;

			if (nerr == 0)
				detail = psprintf(INT64_FORMAT " sinks, none in error", nall);
			else
				detail = psprintf(INT64_FORMAT " of " INT64_FORMAT " sinks in error: %s", nerr, nall, errs);
			values[0] = CStringGetTextDatum("sinks");
			values[1] = BoolGetDatum(nerr == 0);
			values[2] = CStringGetTextDatum(detail);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		SPI_finish();
	}
}

/* ------------------------------------------------------------------------
 * Launcher
 * ------------------------------------------------------------------------
 */

void
ledger_launcher_main(Datum arg)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	List	   *dbs = NIL;
	ListCell   *lc;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	/* shared catalogs only: holding no database keeps DROP DATABASE free */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("ledger launcher");
	ledger_shared->launcher_pid = MyProcPid;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			dbs = lappend_oid(dbs, db->oid);
			MemoryContextSwitchTo(old);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	foreach(lc, dbs)
	{
		int			pid,
					pgprocno;

		if (!find_worker(lfirst_oid(lc), &pid, &pgprocno) && !start_db_worker(lfirst_oid(lc)))
			ereport(LOG,
					(errmsg("ledger launcher could not start a worker for database %u", lfirst_oid(lc)),
					 errhint("Raise max_worker_processes.")));
	}

	/* Stay, so that a crash restart of the server runs the launcher again. */
	while (!ShutdownRequestPending)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 60 * 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
	proc_exit(0);
}

/* ------------------------------------------------------------------------
 * Per-database worker
 * ------------------------------------------------------------------------
 */

typedef struct SinkState
{
	char	   *name;
	char	   *identity;		/* kind|target|options|created_at: reopen on change */
	const LedgerSinkOps *ops;
	void	   *handle;
	int64		target_position;
	int			failures;
	TimestampTz retry_at;
} SinkState;

static SinkState *sink_states = NULL;
static int	nsink_states = 0;
static LedgerDbWorker *my_registry_slot = NULL;

static void
clear_registry_slot(void)
{
	if (my_registry_slot == NULL)
		return;
	SpinLockAcquire(&ledger_shared->worker_mutex);
	my_registry_slot->dboid = InvalidOid;
	my_registry_slot->pid = 0;
	SpinLockRelease(&ledger_shared->worker_mutex);
	my_registry_slot = NULL;
}

static void
release_registry_slot(int code, Datum arg)
{
	int			i;

	clear_registry_slot();
	for (i = 0; i < nsink_states; i++)
		if (sink_states[i].handle)
			sink_states[i].ops->close(sink_states[i].handle);
	nsink_states = 0;
}

static bool
work_exists_in_transaction(void *arg)
{
	*(bool *) arg = work_exists();
	return true;
}

/*
 * Claim this database's registry slot: adopt the one reserved for us by the
 * backend that asked, or take a free one.  False if another worker has it.
 */
static bool
claim_registry_slot(void)
{
	LedgerDbWorker *w;
	bool		full = false;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&ledger_shared->worker_mutex);
	w = registry_lookup(MyDatabaseId, now);
	if (w && w->pid != 0)
		w = NULL;				/* another worker serves the database */
	else if (w == NULL && (w = registry_free_slot()) == NULL)
		full = true;
	if (w)
	{
		w->dboid = MyDatabaseId;
		w->pid = MyProcPid;
		w->pgprocno = MyProc->pgprocno;
		my_registry_slot = w;
	}
	SpinLockRelease(&ledger_shared->worker_mutex);
	if (full)
		ereport(LOG,
				(errmsg("ledger: more than %d databases use ledger; database %u gets no worker",
						LEDGER_MAX_DB_WORKERS, MyDatabaseId)));
	return my_registry_slot != NULL;
}

static bool
extension_present(void)
{
	bool		present;

	StartTransactionCommand();
	present = OidIsValid(get_extension_oid("ledger", true));
	CommitTransactionCommand();
	return present;
}

/*
 * Run fn in its own transaction; an error is logged and the transaction
 * rolled back, so one failing stream or sink never stops the worker.
 */
static bool
run_in_transaction(bool (*fn) (void *), void *arg, const char *what)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool result = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, what);
	PG_TRY();
	{
		result = fn(arg);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		result = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	pgstat_report_activity(STATE_IDLE, NULL);
	return result;
}

/* --- retention --------------------------------------------------------- */

typedef struct RetentionRule
{
	char	   *stream;
	bool		has_max_entries;
	int64		max_entries;
	Interval   *max_age;
	bool		has_export_floor;
	int64		export_floor;	/* active sinks have exported up to here */
	int64		deleted;
} RetentionRule;

typedef struct RetentionList
{
	MemoryContext cxt;
	List	   *rules;
} RetentionList;

static bool
load_retention_rules(void *arg)
{
	static SPIPlanPtr plan = NULL;
	RetentionList *list = (RetentionList *) arg;
	uint64		r;
	int			rc;

	ledger_spi_connect();
	if (plan == NULL)
		plan = ledger_prepare_plan("SELECT s.name::pg_catalog.text, r.max_entries, r.max_age,"
					 " (SELECT pg_catalog.min(k.position) FROM ledger.sinks k"
					 " WHERE k.state OPERATOR(pg_catalog.=) 'active'"
					 " AND (k.streams OPERATOR(pg_catalog.=) s.name"
					 " OR (pg_catalog.right(k.streams, 1) OPERATOR(pg_catalog.=) '*'"
					 " AND pg_catalog.starts_with(s.name, pg_catalog.left(k.streams, -1)))))"
					 " FROM ledger.streams s"
					 " CROSS JOIN LATERAL (SELECT st.max_entries, st.max_age FROM ledger.stream_settings st"
					 " WHERE (st.max_entries IS NOT NULL OR st.max_age IS NOT NULL)"
					 " AND (st.pattern OPERATOR(pg_catalog.=) s.name"
					 " OR (pg_catalog.right(st.pattern, 1) OPERATOR(pg_catalog.=) '*'"
					 " AND pg_catalog.starts_with(s.name, pg_catalog.left(st.pattern, -1))))"
					 " ORDER BY (st.pattern OPERATOR(pg_catalog.=) s.name) DESC,"
					 " pg_catalog.length(st.pattern) DESC LIMIT 1) r"
					 " WHERE s.last_seq OPERATOR(pg_catalog.>) s.trimmed_seq",
					 0, NULL);
	rc = SPI_execute_plan(plan, NULL, NULL, true, 0);
	ledger_spi_check(rc, SPI_OK_SELECT, "retention rules");
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(list->cxt);
		RetentionRule *rule = palloc0(sizeof(RetentionRule));
		bool		isnull;
		Datum		d;

		rule->stream = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		d = SPI_getbinval(tup, desc, 2, &isnull);
		rule->has_max_entries = !isnull;
		rule->max_entries = isnull ? 0 : DatumGetInt64(d);
		d = SPI_getbinval(tup, desc, 3, &isnull);
		if (!isnull)
		{
			rule->max_age = palloc(sizeof(Interval));
			memcpy(rule->max_age, DatumGetIntervalP(d), sizeof(Interval));
		}
		d = SPI_getbinval(tup, desc, 4, &isnull);
		rule->export_floor = isnull ? 0 : DatumGetInt64(d);
		rule->has_export_floor = !isnull;
		list->rules = lappend(list->rules, rule);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return true;
}

static bool
enforce_one_rule(void *arg)
{
	RetentionRule *rule = (RetentionRule *) arg;

	rule->deleted = LedgerEnforceRetention(rule->stream, rule->has_max_entries,
										   rule->max_entries, rule->max_age,
										   rule->has_export_floor ? rule->export_floor : -1,
										   ledger_retention_batch);
	return true;
}

/* One retention pass; true when some stream has more to delete. */
static bool
retention_pass(MemoryContext cxt)
{
	RetentionList list;
	ListCell   *lc;
	bool		more = false;

	list.cxt = cxt;
	list.rules = NIL;
	if (!run_in_transaction(load_retention_rules, &list, "ledger: loading retention rules"))
		return false;
	foreach(lc, list.rules)
	{
		RetentionRule *rule = lfirst(lc);

		CHECK_FOR_INTERRUPTS();
		rule->deleted = 0;
		if (run_in_transaction(enforce_one_rule, rule, "ledger: enforcing retention") &&
			rule->deleted >= ledger_retention_batch)
			more = true;
	}
	return more;
}

/* --- sinks ----------------------------------------------------------- */

typedef struct SinkRow
{
	char	   *name;
	char	   *kind;
	char	   *target;
	char	   *streams;
	char	   *options;
	char	   *state;
	int64		position;
	char	   *identity;
} SinkRow;

typedef struct SinkList
{
	MemoryContext cxt;
	List	   *sinks;
} SinkList;

static bool
load_sinks(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SinkList   *list = (SinkList *) arg;
	uint64		r;
	int			rc;

	ledger_spi_connect();
	if (plan == NULL)
		plan = ledger_prepare_plan("SELECT name::pg_catalog.text, kind, target, streams::pg_catalog.text,"
								   " options::pg_catalog.text, state, position, created_at::pg_catalog.text"
								   " FROM ledger.sinks ORDER BY name", 0, NULL);
	rc = SPI_execute_plan(plan, NULL, NULL, true, 0);
	ledger_spi_check(rc, SPI_OK_SELECT, "sink list");
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(list->cxt);
		SinkRow    *sink = palloc0(sizeof(SinkRow));
		bool		isnull;

		sink->name = SPI_getvalue(tup, desc, 1);
		sink->kind = SPI_getvalue(tup, desc, 2);
		sink->target = SPI_getvalue(tup, desc, 3);
		sink->streams = SPI_getvalue(tup, desc, 4);
		sink->options = SPI_getvalue(tup, desc, 5);
		sink->state = SPI_getvalue(tup, desc, 6);
		sink->position = DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull));
		sink->identity = psprintf("%s|%s|%s|%s", sink->kind, sink->target, sink->options,
								  SPI_getvalue(tup, desc, 8));
		list->sinks = lappend(list->sinks, sink);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return true;
}

static SinkState *
sink_state_for(SinkRow *sink)
{
	int			i;
	SinkState  *st;

	for (i = 0; i < nsink_states; i++)
	{
		st = &sink_states[i];
		if (strcmp(st->name, sink->name) != 0)
			continue;
		if (strcmp(st->identity, sink->identity) == 0)
			return st;
		/* recreated with other settings: start over */
		if (st->handle)
			st->ops->close(st->handle);
		pfree(st->identity);
		st->identity = MemoryContextStrdup(TopMemoryContext, sink->identity);
		st->handle = NULL;
		st->failures = 0;
		st->retry_at = 0;
		return st;
	}
	if (sink_states == NULL)
		sink_states = MemoryContextAlloc(TopMemoryContext, sizeof(SinkState) * LEDGER_MAX_DB_WORKERS);
	if (nsink_states >= LEDGER_MAX_DB_WORKERS)
		sink_states = repalloc(sink_states, sizeof(SinkState) * (nsink_states + 1));
	st = &sink_states[nsink_states++];
	memset(st, 0, sizeof(SinkState));
	st->name = MemoryContextStrdup(TopMemoryContext, sink->name);
	st->identity = MemoryContextStrdup(TopMemoryContext, sink->identity);
	st->ops = ledger_sink_ops(sink->kind);
	return st;
}

/* Close the states of sinks that were dropped. */
static void
forget_dropped_sinks(List *sinks)
{
	int			i = 0;

	while (i < nsink_states)
	{
		ListCell   *lc;
		bool		present = false;

		foreach(lc, sinks)
			if (strcmp(((SinkRow *) lfirst(lc))->name, sink_states[i].name) == 0)
				present = true;
		if (present)
		{
			i++;
			continue;
		}
		if (sink_states[i].handle)
			sink_states[i].ops->close(sink_states[i].handle);
		pfree(sink_states[i].name);
		pfree(sink_states[i].identity);
		sink_states[i] = sink_states[--nsink_states];
	}
}

typedef struct SinkStep
{
	SinkRow    *sink;
	SinkState  *state;
	MemoryContext cxt;
	/* filled by fetch_batch */
	LedgerExportRow *rows;
	int			nrows;
	int64		scanned_to;		/* every matching id <= this is in rows */
	int64		horizon;		/* the read_all horizon at fetch time */
	/* for record_* */
	char	   *error;
} SinkStep;

static int64
unix_micros(TimestampTz ts)
{
	return ts + ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
}

static bool
fetch_batch(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SinkStep   *step = (SinkStep *) arg;
	int64		from = Max(step->sink->position, step->state->target_position);
	int64		horizon;
	int64		window_end;
	Datum		args[5];
	uint64		r;
	int			rc;

	step->nrows = 0;
	step->scanned_to = from;
	ledger_spi_connect();
	horizon = ledger_horizon();
	step->horizon = horizon;
	if (horizon <= from + 1)
	{
		SPI_finish();
		return true;
	}
	/*
	 * Scan a bounded window of ids per batch, so that a batch costs the
	 * same whatever plan the statistics of a freshly loaded table suggest.
	 */
	window_end = Min(horizon - 1, from + (int64) ledger_export_batch * 4);

	if (plan == NULL)
	{
		Oid			types[5] = {INT8OID, INT8OID, TEXTOID, INT8OID, INT8OID};

		plan = ledger_prepare_plan("SELECT e.id, s.name::pg_catalog.text, e.seq, e.payload::pg_catalog.text,"
								   " e.order_key::pg_catalog.text, e.dedup_key::pg_catalog.text, e.schema_version,"
								   " e.metadata::pg_catalog.text, pg_catalog.to_jsonb(e.tags)::pg_catalog.text,"
								   " e.annotations::pg_catalog.text, e.created_at, e.updated_at"
								   " FROM ledger.entries e JOIN ledger.streams s"
								   " ON s.stream_id OPERATOR(pg_catalog.=) e.stream_id"
								   " WHERE e.id OPERATOR(pg_catalog.>) $1 AND e.id OPERATOR(pg_catalog.<=) $5"
								   " AND ($3 OPERATOR(pg_catalog.=) '*' OR s.name OPERATOR(pg_catalog.=) $3"
								   " OR (pg_catalog.right($3, 1) OPERATOR(pg_catalog.=) '*'"
								   " AND pg_catalog.starts_with(s.name, pg_catalog.left($3, -1))))"
								   " ORDER BY e.id LIMIT $4",
								   5, types);
	}
	args[0] = Int64GetDatum(from);
	args[1] = Int64GetDatum(horizon);
	args[2] = CStringGetTextDatum(step->sink->streams);
	args[3] = Int64GetDatum(ledger_export_batch);
	args[4] = Int64GetDatum(window_end);

	/*
	 * Read with a snapshot taken after the horizon: the transaction's own
	 * snapshot is older, and could miss an entry below the horizon that
	 * committed in between -- which the position would then step over.
	 */
	PushActiveSnapshot(GetLatestSnapshot());
	rc = SPI_execute_plan(plan, args, NULL, true, 0);
	PopActiveSnapshot();
	ledger_spi_check(rc, SPI_OK_SELECT, "export batch");

	{
		MemoryContext old = MemoryContextSwitchTo(step->cxt);

		step->rows = palloc0(sizeof(LedgerExportRow) * Max(SPI_processed, 1));
		for (r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			LedgerExportRow *row = &step->rows[r];
			bool		isnull;
			Datum		d;

			row->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			row->stream = SPI_getvalue(tup, desc, 2);
			row->seq = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			row->payload_json = SPI_getvalue(tup, desc, 4);
			row->order_key = SPI_getvalue(tup, desc, 5);
			row->dedup_key = SPI_getvalue(tup, desc, 6);
			row->schema_version = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
			row->metadata_json = SPI_getvalue(tup, desc, 8);
			row->tags_json = SPI_getvalue(tup, desc, 9);
			row->annotations_json = SPI_getvalue(tup, desc, 10);
			row->created_at_us = unix_micros(DatumGetTimestampTz(SPI_getbinval(tup, desc, 11, &isnull)));
			d = SPI_getbinval(tup, desc, 12, &isnull);
			row->has_updated_at = !isnull;
			row->updated_at_us = isnull ? 0 : unix_micros(DatumGetTimestampTz(d));
		}
		MemoryContextSwitchTo(old);
	}
	step->nrows = (int) SPI_processed;
	/* a short batch means every matching entry of the window is in it */
	step->scanned_to = step->nrows < ledger_export_batch ? window_end :
		step->rows[step->nrows - 1].id;
	SPI_finish();
	return true;
}

static bool
record_success(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SinkStep   *step = (SinkStep *) arg;
	Datum		args[3];
	int			rc;

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[3] = {TEXTOID, INT8OID, INT8OID};

		plan = ledger_prepare_plan("UPDATE ledger.sinks SET position = GREATEST(position, $2),"
								   " exported_total = exported_total OPERATOR(pg_catalog.+) $3,"
								   " state = CASE WHEN state OPERATOR(pg_catalog.=) 'error' THEN 'active' ELSE state END"
								   " WHERE name OPERATOR(pg_catalog.=) $1",
								   3, types);
	}
	args[0] = CStringGetTextDatum(step->sink->name);
	args[1] = Int64GetDatum(step->scanned_to);
	args[2] = Int64GetDatum(step->nrows);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_UPDATE, "sink position update");
	SPI_finish();
	return true;
}

static bool
record_error(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SinkStep   *step = (SinkStep *) arg;
	Datum		args[2];
	int			rc;

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[2] = {TEXTOID, TEXTOID};

		plan = ledger_prepare_plan("UPDATE ledger.sinks SET last_error = $2, last_error_at = pg_catalog.now(),"
								   " state = CASE WHEN state OPERATOR(pg_catalog.=) 'paused' THEN state ELSE 'error' END"
								   " WHERE name OPERATOR(pg_catalog.=) $1",
								   2, types);
	}
	args[0] = CStringGetTextDatum(step->sink->name);
	args[1] = CStringGetTextDatum(step->error);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_UPDATE, "sink error update");
	SPI_finish();
	return true;
}

static void
sink_failed(SinkStep *step, const char *message)
{
	SinkState  *st = step->state;
	int			backoff_s = 1 << Min(st->failures, 6);	/* 1 s .. 64 s */

	st->failures++;
	st->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff_s * 1000);
	if (st->handle)
	{
		st->ops->close(st->handle);
		st->handle = NULL;
	}
	step->error = pstrdup(message);
	ereport(LOG,
			(errmsg("ledger sink \"%s\" failed, retrying in %d s: %s",
					step->sink->name, backoff_s, message)));
	(void) run_in_transaction(record_error, step, "ledger: recording sink error");
}

/* Export one batch to one sink; true when it has more to export now. */
static bool
export_step(SinkRow *sink, MemoryContext cxt)
{
	SinkState  *st = sink_state_for(sink);
	SinkStep	step;
	char		err[1024];

	if (st->ops == NULL || strcmp(sink->state, "paused") == 0)
		return false;
	/* resume_sink() sets the state back to active: retry at once */
	if (strcmp(sink->state, "active") == 0 && st->failures > 0 && st->handle == NULL)
		st->retry_at = 0;
	if (st->retry_at > GetCurrentTimestamp())
		return false;

	memset(&step, 0, sizeof(step));
	step.sink = sink;
	step.state = st;
	step.cxt = cxt;

	if (st->handle == NULL)
	{
		int64		pos = 0;

		err[0] = '\0';
		st->handle = st->ops->open(sink->name, sink->target, sink->options, err, sizeof(err));
		if (st->handle == NULL)
		{
			sink_failed(&step, err);
			return false;
		}
		if (st->ops->position(st->handle, &pos, err, sizeof(err)) != 0)
		{
			sink_failed(&step, err);
			return false;
		}
		st->target_position = pos;
	}

	if (!run_in_transaction(fetch_batch, &step, "ledger: reading an export batch"))
		return false;
	if (step.nrows > 0)
	{
		err[0] = '\0';
		if (st->ops->write(st->handle, step.rows, step.nrows, err, sizeof(err)) != 0)
		{
			sink_failed(&step, err);
			return false;
		}
		st->target_position = step.rows[step.nrows - 1].id;
	}
	st->failures = 0;
	if (step.scanned_to > sink->position || step.nrows > 0 || strcmp(sink->state, "error") == 0)
		(void) run_in_transaction(record_success, &step, "ledger: recording sink position");
	/* more to do now: a full batch, or a window that ended below the horizon */
	return step.nrows >= ledger_export_batch || step.scanned_to < step.horizon - 1;
}

static bool
sinks_pass(MemoryContext cxt)
{
	SinkList	list;
	ListCell   *lc;
	bool		more = false;

	list.cxt = cxt;
	list.sinks = NIL;
	if (!run_in_transaction(load_sinks, &list, "ledger: loading sinks"))
		return false;
	forget_dropped_sinks(list.sinks);
	foreach(lc, list.sinks)
	{
		CHECK_FOR_INTERRUPTS();
		if (export_step((SinkRow *) lfirst(lc), cxt))
			more = true;
	}
	return more;
}

void
ledger_db_worker_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	MemoryContext pass_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("ledger worker");

	if (!claim_registry_slot())
		proc_exit(0);
	before_shmem_exit(release_registry_slot, (Datum) 0);

	/* a database without the extension is left alone */
	if (!extension_present())
		proc_exit(0);
	StartTransactionCommand();
	ereport(DEBUG1, (errmsg("ledger worker started for database \"%s\"",
						 get_database_name(MyDatabaseId))));
	CommitTransactionCommand();

	pass_cxt = AllocSetContextCreate(TopMemoryContext, "ledger worker pass",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		bool		more = false;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* wake on every commit of an append; registered before we read */
		ledger_wait_register(0);

		MemoryContextReset(pass_cxt);
		old = MemoryContextSwitchTo(pass_cxt);
		if (!extension_present())
		{
			ereport(LOG, (errmsg("ledger extension was dropped; ledger worker exits")));
			proc_exit(0);
		}
		/* export first, so that retention removes only what was exported */
		more |= sinks_pass(pass_cxt);
		more |= retention_pass(pass_cxt);
		MemoryContextSwitchTo(old);

		pgstat_report_stat(true);

		/*
		 * Nothing to serve: leave, so that an idle database keeps no
		 * connection (it would block DROP DATABASE).  Whoever creates a sink
		 * or a retention limit starts a worker after commit; the slot is
		 * given up before the last look, so that such a request either sees
		 * us gone or we see its work.
		 */
		if (!more)
		{
			bool		busy = true;

			if (run_in_transaction(work_exists_in_transaction, &busy, "ledger: checking for work") &&
				!busy)
			{
				clear_registry_slot();
				busy = true;
				if (run_in_transaction(work_exists_in_transaction, &busy, "ledger: checking for work") &&
					!busy)
					proc_exit(0);
				if (!claim_registry_slot())
					proc_exit(0);
			}
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 more ? 0L : (long) ledger_worker_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
