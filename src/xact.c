/*-------------------------------------------------------------------------
 *
 * src/xact.c
 *		The one transaction callback of ledger.  It owns the order in which
 *		the end of a transaction reaches the other parts:
 *
 *		PRE_PREPARE:	horizon refuses to prepare a transaction holding a floor
 *		PRE_COMMIT:		standby logs the horizon record for hot standbys
 *		COMMIT:			guard closes; horizon withdraws the floor; wait wakes
 *						the waiters of what committed; launcher acts on a
 *						worker request made by the transaction
 *		ABORT:			guard closes; wait drops the registration; horizon
 *						withdraws the floor; standby logs the horizon
 *						record; wait wakes read_all waiters if it moved;
 *						launcher forgets the request
 *		SUBXACT ABORT:	guard closes; wait drops the registration (a
 *						read(wait) cancelled inside a savepoint)
 *
 * The floor goes before the wake-up, so that a woken read_all finds the
 * horizon moved.  The callbacks run after the commit record is visible to
 * new snapshots, so a woken reader sees what it was woken for.  A backend
 * that exits mid-transaction aborts it on the way out, so the abort branch
 * also covers pg_terminate_backend().
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/xact.h"

static void
ledger_xact_callback(XactEvent event, void *arg)
{
	bool		horizon_moved;

	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			ledger_horizon_check_prepare();
			break;
		case XACT_EVENT_PRE_COMMIT:
			ledger_standby_pre_commit();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			ledger_entries_writable(false);
			horizon_moved = ledger_horizon_release();
			ledger_wait_xact_commit(horizon_moved);
			ledger_launcher_xact_commit();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			ledger_entries_writable(false);
			horizon_moved = ledger_horizon_release();
			if (horizon_moved)
				ledger_standby_abort();
			ledger_wait_xact_abort(true, horizon_moved);
			ledger_launcher_xact_abort();
			break;
		default:
			break;
	}
}

static void
ledger_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		ledger_entries_writable(false);
		ledger_wait_xact_abort(false, false);
	}
}

void
ledger_xact_init(void)
{
	RegisterXactCallback(ledger_xact_callback, NULL);
	RegisterSubXactCallback(ledger_subxact_callback, NULL);
}
