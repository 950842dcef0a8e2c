/*-------------------------------------------------------------------------
 *
 * src/owner.c
 *		Who ledger's code runs as.
 *
 * Most SQL functions are SECURITY DEFINER: they run as the extension
 * owner, which owns the tables.  A few must also know who called them, and
 * inside a SECURITY DEFINER function the caller's current_user is gone
 * (GetUserId() is the owner, GetOuterUserId() the session's role, which is
 * wrong inside another role's SECURITY DEFINER function -- the confused
 * deputy).  Those functions (create_sink, register_upcaster) are SECURITY
 * INVOKER with a pinned search_path instead: they check the caller's
 * privileges as current_user, and become the extension owner only for
 * their own table access, with ledger_become_owner()/ledger_restore_user().
 * A transaction or subtransaction abort restores the user by itself.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "miscadmin.h"
#include "utils/syscache.h"

/* The owner of schema ledger: the role that ran CREATE EXTENSION. */
Oid
ledger_extension_owner(void)
{
	Oid			nsp = get_namespace_oid(LEDGER_SCHEMA, false);
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "ledger: cache lookup failed for schema %u", nsp);
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

void
ledger_become_owner(LedgerSavedUser *saved)
{
	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(ledger_extension_owner(),
						   saved->sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

void
ledger_restore_user(LedgerSavedUser *saved)
{
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}
