/*-------------------------------------------------------------------------
 *
 * src/worker.c
 *		One database's background worker: the loop that runs export passes
 *		(export.c) and retention passes (retention.c) when there is
 *		something to do, and sleeps otherwise.
 *
 * The worker is a permanent database-wide waiter (wait.c): every commit
 * that appends (or draws ids for a change) bumps its wake-up counter and
 * sets its latch, and so do new sinks and retention limits (launcher.c).
 * A pass runs only when something happened or a timer is due:
 *
 *	export		after a wake-up, while a sink has a backlog, and when a
 *				failed sink's retry time comes;
 *	retention	at most every ledger.retention_interval while wake-ups
 *				come, when a stream's oldest entry reaches max_age, and
 *				while a stream has more to delete or was locked;
 *	both		every ledger.worker_naptime, as a backstop.
 *
 * So an idle database costs its worker no transaction at all.  The worker
 * leaves when its database has neither sinks nor retention limits (or no
 * extension, or one not yet updated to this library's version), unless a
 * request came meanwhile (launcher.c decides).
 *
 * SIGTERM ends the worker at the next CHECK_FOR_INTERRUPTS (die()); the
 * sinks keep every wait short, so that is within a second.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void ledger_db_worker_main(Datum arg);

int			ledger_worker_naptime_ms = 60000;

/*
 * Run fn in its own transaction; an error is logged and the transaction
 * rolled back, so one failing stream or sink never stops the worker.
 */
bool
ledger_worker_run_in_transaction(bool (*fn) (void *), void *arg, const char *what)
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

/*
 * Is the extension installed in this database, at the version of this
 * library?  A database not yet updated (ALTER EXTENSION ledger UPDATE)
 * is not served: the worker's statements expect the current schema.
 * Caller is in a transaction.
 */
bool
ledger_worker_extension_is_current(void)
{
	static bool warned = false;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("ledger"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	if (version == NULL)
		return false;
	if (strcmp(version, LEDGER_VERSION) != 0)
	{
		if (!warned)
			ereport(LOG,
					(errmsg("ledger worker does not serve database \"%s\": its extension is at version %s, this library at %s",
							get_database_name(MyDatabaseId), version, LEDGER_VERSION),
					 errhint("Run ALTER EXTENSION ledger UPDATE in that database.")));
		warned = true;
		return false;
	}
	return true;
}

/* The earlier of two due times, 0 meaning "none". */
static TimestampTz
earliest(TimestampTz a, TimestampTz b)
{
	if (a == 0)
		return b;
	if (b == 0)
		return a;
	return Min(a, b);
}

void
ledger_db_worker_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	MemoryContext pass_cxt;
	LedgerExportPass export_result;
	LedgerRetentionPass retention_result;
	uint64		seen_wakeups = 0;
	bool		first = true;
	bool		retention_wanted = true;
	TimestampTz retention_not_before = 0;
	TimestampTz backstop_at;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("ledger worker");

	if (!ledger_launcher_worker_claim())
		proc_exit(0);			/* another worker serves this database */
	ledger_wait_register_permanently();

	pass_cxt = AllocSetContextCreate(TopMemoryContext, "ledger worker pass",
									 ALLOCSET_DEFAULT_SIZES);
	memset(&export_result, 0, sizeof(export_result));
	memset(&retention_result, 0, sizeof(retention_result));
	backstop_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ledger_worker_naptime_ms);

	for (;;)
	{
		TimestampTz now;
		TimestampTz wake_at;
		uint64		wakeups;
		bool		woken;
		bool		backstop;
		long		timeout_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		now = GetCurrentTimestamp();
		wakeups = ledger_wait_wakeups();
		woken = first || wakeups != seen_wakeups;
		seen_wakeups = wakeups;
		backstop = now >= backstop_at;
		if (backstop)
			backstop_at = TimestampTzPlusMilliseconds(now, ledger_worker_naptime_ms);
		if (woken || backstop)
		{
			/* requests from here on are for work this pass may not see */
			ledger_launcher_worker_begin_pass();
			retention_wanted = true;
		}

		if (woken || backstop || export_result.more ||
			(export_result.next_retry != 0 && now >= export_result.next_retry))
		{
			MemoryContextReset(pass_cxt);
			ledger_export_pass(pass_cxt, &export_result);
			if (export_result.extension_missing)
			{
				if (ledger_launcher_worker_leave())
				{
					ereport(DEBUG1, (errmsg("ledger worker leaves: the database has no ledger extension")));
					proc_exit(0);
				}
				continue;
			}
		}

		if (retention_result.more || retention_result.locked_out ||
			(retention_wanted && now >= retention_not_before) ||
			(retention_result.next_due != 0 && now >= retention_result.next_due))
		{
			MemoryContextReset(pass_cxt);
			ledger_retention_pass(pass_cxt, &retention_result);
			retention_wanted = false;
			retention_not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															   ledger_retention_interval_ms);
		}
		first = false;

		if (!export_result.has_sinks && !retention_result.has_rules &&
			ledger_launcher_worker_leave())
		{
			ereport(DEBUG1, (errmsg("ledger worker leaves: no sinks and no retention limits")));
			proc_exit(0);
		}

		pgstat_report_stat(false);

		/* sleep until woken or the earliest timer */
		if (export_result.more || retention_result.more)
			timeout_ms = 0;
		else
		{
			wake_at = backstop_at;
			wake_at = earliest(wake_at, export_result.next_retry);
			wake_at = earliest(wake_at, retention_result.next_due);
			if (retention_wanted || retention_result.locked_out)
				wake_at = earliest(wake_at, retention_not_before);
			timeout_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), wake_at);
			/* a due timer gets its pass now; never spin on a past one */
			timeout_ms = Max(timeout_ms, 1);
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
