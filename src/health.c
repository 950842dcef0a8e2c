/*-------------------------------------------------------------------------
 *
 * src/health.c
 *		health(): one row per check, with ok and a human-readable detail:
 *		preload, the read_all horizon, the background worker, the sinks.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "shmem.h"

PG_FUNCTION_INFO_V1(ledger_health);

static void
add_check(ReturnSetInfo *rsinfo, const char *name, bool ok, const char *detail)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	values[0] = CStringGetTextDatum(name);
	values[1] = BoolGetDatum(ok);
	values[2] = CStringGetTextDatum(detail);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/* Does this database have sinks or retention limits? */
static bool
work_exists(void)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	bool		exists;
	int			rc;

	ledger_spi_connect();
	if (plan == NULL)
		plan = ledger_prepare_plan("SELECT EXISTS (SELECT 1 FROM ledger.sinks)"
								   " OR EXISTS (SELECT 1 FROM ledger.stream_settings"
								   " WHERE max_entries IS NOT NULL OR max_age IS NOT NULL)", 0, NULL);
	rc = SPI_execute_plan(plan, NULL, NULL, true, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "health work check");
	exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return exists;
}

static void
worker_check(ReturnSetInfo *rsinfo)
{
	LedgerWorkerStatus status;
	bool		known = ledger_launcher_worker_status(MyDatabaseId, &status);
	bool		work = work_exists();

	if (!status.launcher_running)
	{
		add_check(rsinfo, "worker", !work,
				  "the ledger launcher is not running; no worker can start (see the server log)");
		return;
	}
	if (known && status.state == LEDGER_WORKER_RUNNING)
		add_check(rsinfo, "worker", true,
				  psprintf("ledger worker running as pid %d", status.pid));
	else if (known && (status.state == LEDGER_WORKER_REQUESTED || status.state == LEDGER_WORKER_STARTING))
		add_check(rsinfo, "worker", true, "ledger worker starting");
	else if (known && status.state == LEDGER_WORKER_FAILED)
	{
		long		secs = 0;
		int			usecs = 0;

		TimestampDifference(GetCurrentTimestamp(), status.retry_at, &secs, &usecs);
		add_check(rsinfo, "worker", !work,
				  psprintf("the ledger worker stopped %d time(s) in a row; the launcher tries again in %ld s (see the server log)",
						   status.failures, secs));
	}
	else if (!work)
		add_check(rsinfo, "worker", true,
				  "idle: no sinks and no retention limits; a worker starts when one is set");
	else
		add_check(rsinfo, "worker", false,
				  "no ledger worker serves this database; retention and sinks are stalled (check max_worker_processes and the server log)");
}

/* Sinks in error, from the table. */
static void
sinks_check(ReturnSetInfo *rsinfo)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	int64		nerr;
	int64		nall;
	char	   *errs;
	int			rc;

	ledger_spi_connect();
	if (plan == NULL)
		plan = ledger_prepare_plan("SELECT pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) 'error'),"
								   " pg_catalog.count(*),"
								   " pg_catalog.string_agg(pg_catalog.concat(name, ': ', last_error), '; ')"
								   " FILTER (WHERE state OPERATOR(pg_catalog.=) 'error') FROM ledger.sinks",
								   0, NULL);
	rc = SPI_execute_plan(plan, NULL, NULL, true, 1);
	ledger_spi_check(rc, SPI_OK_SELECT, "health sink check");
	nerr = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	nall = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	errs = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	if (nerr == 0)
		add_check(rsinfo, "sinks", true, psprintf(INT64_FORMAT " sinks, none in error", nall));
	else
		add_check(rsinfo, "sinks", false,
				  psprintf(INT64_FORMAT " of " INT64_FORMAT " sinks in error: %s", nerr, nall, errs));
	SPI_finish();
}

Datum
ledger_health(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);

	add_check(rsinfo, "preload", ledger_loaded_via_preload,
			  ledger_loaded_via_preload ?
			  "ledger is in shared_preload_libraries" :
			  "ledger is not in shared_preload_libraries: read/read_all with wait, the background worker and sinks are unavailable");

	if (ledger_loaded_via_preload)
	{
		int			pid;
		TimestampTz since;
		int64		floor_id;

		if (ledger_horizon_oldest(&pid, &since, &floor_id))
		{
			long		secs;
			int			usecs;

			TimestampDifference(since, GetCurrentTimestamp(), &secs, &usecs);
			add_check(rsinfo, "read_all_horizon", secs < 60,
					  psprintf("oldest unsettled append: pid %d, open for %ld.%03d s, holds read_all below id " INT64_FORMAT "%s",
							   pid, secs, usecs / 1000, floor_id,
							   secs < 60 ? "" : "; end that transaction or set idle_in_transaction_session_timeout"));
		}
		else
			add_check(rsinfo, "read_all_horizon", true, "no unsettled appends");
	}

	if (ledger_loaded_via_preload)
	{
		worker_check(rsinfo);
		sinks_check(rsinfo);
	}

	return (Datum) 0;
}
