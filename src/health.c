/*-------------------------------------------------------------------------
 *
 * src/health.c
 *		health(): one row per check, with ok and a human-readable detail.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

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

	ledger_health_worker_checks(rsinfo);

	return (Datum) 0;
}
