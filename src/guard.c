/*-------------------------------------------------------------------------
 *
 * src/guard.c
 *		The trigger that keeps ledger.entries immutable: UPDATE, DELETE and
 *		TRUNCATE fail unless they come from ledger's own functions
 *		(set_tags, set_annotations, trim and retention).
 *
 * The permission is a backend-local flag that only C code can raise, so no
 * SQL caller -- a superuser included -- can switch it on.  It is raised
 * around a single SPI statement and dropped again even on error; the
 * transaction callback drops it too, in case an error escaped between.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/xact.h"
#include "commands/trigger.h"

PG_FUNCTION_INFO_V1(ledger_guard_entries);

static bool entries_writable = false;

void
ledger_entries_writable(bool writable)
{
	entries_writable = writable;
}

Datum
ledger_guard_entries(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *what;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ledger.guard_entries() must be called as a trigger")));

	if (entries_writable)
	{
		if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
			return PointerGetDatum(trigdata->tg_newtuple);
		if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
			return PointerGetDatum(trigdata->tg_trigtuple);
		if (TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
			return PointerGetDatum(NULL);
	}

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		what = "updated";
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		what = "deleted";
	else
		what = "truncated";

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("ledger entries cannot be %s directly", what),
			 errdetail("Entries are immutable; only their tags and annotations change, through ledger.set_tags() and ledger.set_annotations()."),
			 errhint("Use ledger.trim() or ledger.set_retention() to remove entries.")));
	PG_RETURN_NULL();			/* keep compiler quiet */
}
