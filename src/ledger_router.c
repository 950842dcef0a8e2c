/*-------------------------------------------------------------------------
 *
 * src/ledger_router.c
 *		The C of extension ledger_router: a stream's slot, and a deadline
 *		for each call to a node.
 *
 * A stream's slot is FNV-1a (32 bits) of its name's bytes, folded to 12
 * bits: (h >> 20) ^ (h & 0xfff).  It is written out here rather than taken
 * from hashtext() because every router must agree with every other one on
 * any platform and major version (hashtext's result differs between byte
 * orders and may change between releases), and md5() goes through
 * OpenSSL's EVP interface, whose per-call set-up costs more than the rest
 * of a routed call's local work.
 *
 * PL/Proxy connects asynchronously, so libpq's connect_timeout never ends a
 * connect to a node that accepts TCP but does not answer (a stopped or
 * swamped postmaster, a paused VM), and PL/Proxy's own query_timeout covers
 * neither the connect nor the legitimate wait of read(wait => ...).  So a
 * routed function arms a deadline of ledger_router.call_timeout plus the
 * wait it asks the node for, just before the call, and disarms it just
 * after.  If the deadline passes first, its handler cancels the statement
 * the way statement_timeout does: PL/Proxy checks for interrupts while it
 * waits and drops a connection still being made; the routed function sees
 * the cancel, learns from ledger_router.disarm() that the deadline caused
 * it, and raises an error naming the node.
 *
 * State: one timeout per backend (registered on first use) and a flag its
 * handler sets in signal context.  A transaction's end disarms whatever an
 * error path left armed, so a deadline never cancels later work.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(ledger_router_slot_of);
PG_FUNCTION_INFO_V1(ledger_router_arm);
PG_FUNCTION_INFO_V1(ledger_router_disarm);

/* milliseconds a call to a node may take beyond the wait it asks for; 0 = none */
static int	ledger_router_call_timeout = 30000;

#define LEDGER_ROUTER_SLOTS 4096

static TimeoutId deadline_timeout;
static bool deadline_registered = false;
static bool deadline_armed = false;
static volatile sig_atomic_t deadline_passed = false;

static void
deadline_handler(void)
{
	deadline_passed = true;
	InterruptPending = true;
	QueryCancelPending = true;
	SetLatch(MyLatch);
}

/* Disarms; true if the deadline had passed since it was armed. */
static bool
disarm_deadline(void)
{
	bool		passed = deadline_passed;

	if (deadline_armed)
		disable_timeout(deadline_timeout, false);
	deadline_armed = false;
	deadline_passed = false;
	return passed;
}

static void
deadline_xact_callback(XactEvent event, void *arg)
{
	if (deadline_armed &&
		(event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		 event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		 event == XACT_EVENT_PREPARE))
		(void) disarm_deadline();
}

void
_PG_init(void)
{
	DefineCustomIntVariable("ledger_router.call_timeout",
							"How long a routed call may wait for its node, beyond the wait it asks for.",
							"0 waits forever.  A call that runs out fails with SQLSTATE 08006 naming the node.",
							&ledger_router_call_timeout,
							30000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	MarkGUCPrefixReserved("ledger_router");
	RegisterXactCallback(deadline_xact_callback, NULL);
}

/* ledger_router.slot_of(stream text): 0 .. 4095 */
Datum
ledger_router_slot_of(PG_FUNCTION_ARGS)
{
	text	   *stream = PG_GETARG_TEXT_PP(0);
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(stream);
	const unsigned char *end = p + VARSIZE_ANY_EXHDR(stream);
	uint32		h = 2166136261u;

	for (; p < end; p++)
	{
		h ^= *p;
		h *= 16777619u;
	}
	PG_RETURN_INT32((int32) (((h >> 20) ^ h) & (LEDGER_ROUTER_SLOTS - 1)));
}

/*
 * ledger_router.arm(wait interval): arm the deadline for the next call,
 * call_timeout plus wait from now.  Re-arming replaces the deadline.
 */
Datum
ledger_router_arm(PG_FUNCTION_ARGS)
{
	int64		ms = ledger_router_call_timeout;

	(void) disarm_deadline();
	if (ms <= 0)
		PG_RETURN_VOID();
	if (!PG_ARGISNULL(0))
	{
		Interval   *wait = PG_GETARG_INTERVAL_P(0);
		double		wait_ms = wait->time / 1000.0 +
			((double) wait->day + (double) wait->month * DAYS_PER_MONTH) * (USECS_PER_DAY / 1000);

		if (wait_ms > 0)
			ms += (int64) Min(wait_ms, (double) INT_MAX);
	}
	if (!deadline_registered)
	{
		deadline_timeout = RegisterTimeout(USER_TIMEOUT, deadline_handler);
		deadline_registered = true;
	}
	deadline_armed = true;
	enable_timeout_after(deadline_timeout, (int) Min(ms, (int64) INT_MAX));
	PG_RETURN_VOID();
}

/* ledger_router.disarm(): true if the deadline had passed. */
Datum
ledger_router_disarm(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(disarm_deadline());
}
