/*-------------------------------------------------------------------------
 *
 * src/sink_admin.c
 *		The SQL side of export sinks: create_sink(), drop_sink(),
 *		pause_sink(), resume_sink(), redact_target(), and the GUCs
 *		ledger.sink_hosts and ledger.export_batch_bytes.  The exporting
 *		itself is the background worker's (export.c).
 *
 * Who may aim the server where:
 *	- a SQLite sink writes a file as the server's OS user, so its creator
 *	  needs pg_write_server_files, checked against current_user as COPY
 *	  does.  create_sink is therefore SECURITY INVOKER: inside another
 *	  role's SECURITY DEFINER function, current_user is that function's
 *	  owner, which is whom the check must see (the session user would be a
 *	  confused deputy's privilege).  It becomes the extension owner only to
 *	  write ledger.sinks (owner.c);
 *	- a MongoDB sink connects only to hosts a superuser listed in
 *	  ledger.sink_hosts (SUSET); an empty list, a unix-domain socket and an
 *	  SRV name (whose hosts only DNS knows) are for superusers only.  Any
 *	  other target is refused with 42501 before anything connects.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "sink.h"

PG_FUNCTION_INFO_V1(ledger_create_sink);
PG_FUNCTION_INFO_V1(ledger_drop_sink);
PG_FUNCTION_INFO_V1(ledger_pause_sink);
PG_FUNCTION_INFO_V1(ledger_resume_sink);
PG_FUNCTION_INFO_V1(ledger_redact_target);

#define MONGODB_DEFAULT_PORT 27017
#define MAX_TARGET_HOSTS 64

static char *ledger_sink_hosts = NULL;

const LedgerSinkOps *
ledger_sink_ops(const char *kind)
{
	if (strcmp(kind, "sqlite") == 0)
		return &ledger_sqlite_sink_ops;
	if (strcmp(kind, "mongodb") == 0)
		return &ledger_mongo_sink_ops;
	return NULL;
}

/*
 * One entry of ledger.sink_hosts: host, [v6 address] or either followed by
 * :port or :*.  *port is -1 for any port.  False when malformed.
 */
static bool
parse_host_entry(const char *entry, char **host, int *port)
{
	const char *p = entry;
	const char *end;

	if (*p == '[')
	{
		end = strchr(p, ']');
		if (end == NULL || end == p + 1)
			return false;
		*host = pnstrdup(p + 1, end - p - 1);
		p = end + 1;
	}
	else
	{
		end = strchr(p, ':');
		if (end == NULL)
			end = p + strlen(p);
		if (end == p)
			return false;
		*host = pnstrdup(p, end - p);
		p = end;
	}
	if (*p == '\0')
	{
		*port = MONGODB_DEFAULT_PORT;
		return true;
	}
	if (*p++ != ':')
		return false;
	if (strcmp(p, "*") == 0)
	{
		*port = -1;
		return true;
	}
	if (*p == '\0' || strspn(p, "0123456789") != strlen(p) || strlen(p) > 5 ||
		atoi(p) < 1 || atoi(p) > 65535)
		return false;
	*port = atoi(p);
	return true;
}

static bool
check_sink_hosts(char **newval, void **extra, GucSource source)
{
	char	   *copy = pstrdup(*newval);
	List	   *entries;
	ListCell   *lc;

	if (!SplitGUCList(copy, ',', &entries))
	{
		GUC_check_errdetail("List syntax is invalid.");
		return false;
	}
	foreach(lc, entries)
	{
		char	   *host;
		int			port;

		if (!parse_host_entry((char *) lfirst(lc), &host, &port))
		{
			GUC_check_errdetail("\"%s\" is not host, host:port or host:*.", (char *) lfirst(lc));
			return false;
		}
	}
	return true;
}

void
ledger_sink_init(void)
{
	DefineCustomStringVariable("ledger.sink_hosts",
							   "MongoDB hosts that sinks created by non-superusers may connect to.",
							   "A list of host, host:port or host:* (an IPv6 address in brackets); a host alone means port 27017. Empty: only superusers may create MongoDB sinks.",
							   &ledger_sink_hosts,
							   "",
							   PGC_SUSET, GUC_LIST_INPUT,
							   check_sink_hosts, NULL, NULL);
	DefineCustomIntVariable("ledger.export_batch_bytes",
							"Most bytes of entries written to a sink per batch.",
							"A batch ends at ledger.export_batch entries or at this size, whichever comes first.",
							&ledger_export_batch_bytes,
							8 * 1024 * 1024, 64 * 1024, 256 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
}

static bool
host_allowed(const LedgerSinkHost *h)
{
	char	   *copy = pstrdup(ledger_sink_hosts ? ledger_sink_hosts : "");
	List	   *entries;
	ListCell   *lc;

	if (!SplitGUCList(copy, ',', &entries))
		return false;
	foreach(lc, entries)
	{
		char	   *host;
		int			port;

		if (parse_host_entry((char *) lfirst(lc), &host, &port) &&
			pg_strcasecmp(host, h->name) == 0 && (port == -1 || port == h->port))
			return true;
	}
	return false;
}

/* 42501 unless the caller may make the server connect where target says. */
static void
check_mongodb_hosts(const char *name, const char *target, Oid caller)
{
	LedgerSinkHost *hosts = palloc(sizeof(LedgerSinkHost) * MAX_TARGET_HOSTS);
	int			nhosts;
	int			is_srv;
	char		err[512];
	int			i;

	if (ledger_mongo_target_hosts(target, hosts, MAX_TARGET_HOSTS, &nhosts, &is_srv, err, sizeof(err)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mongodb sink %s: %s", ledger_quote_value(name, strlen(name)), err)));
	if (superuser_arg(caller))
		return;
	if (is_srv)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create mongodb sink %s with a mongodb+srv target",
						ledger_quote_value(name, strlen(name))),
				 errdetail("The hosts of an SRV record come from DNS, so no list can allow them."),
				 errhint("A superuser may create it, or name the hosts in a mongodb:// target listed in ledger.sink_hosts.")));
	for (i = 0; i < nhosts; i++)
	{
		if (hosts[i].is_unix)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to create mongodb sink %s on a unix-domain socket",
							ledger_quote_value(name, strlen(name))),
					 errdetail("Only superusers may aim the server at unix-domain sockets.")));
		if (!host_allowed(&hosts[i]))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to create mongodb sink %s connecting to %s port %d",
							ledger_quote_value(name, strlen(name)),
							ledger_quote_value(hosts[i].name, strlen(hosts[i].name)), hosts[i].port),
					 errdetail("%s", ledger_sink_hosts && ledger_sink_hosts[0] ?
							   "The host is not listed in ledger.sink_hosts." :
							   "ledger.sink_hosts is empty, so only superusers may create mongodb sinks."),
					 errhint("A superuser may add \"host:port\" to ledger.sink_hosts.")));
	}
}

static char *
check_sink_name(text *name)
{
	char	   *s;
	int			len;
	int			i;

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink name must not be null")));
	s = text_to_cstring(name);
	len = strlen(s);
	if (len == 0 || len > 63)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink name %s must be 1 to 63 bytes long", ledger_quote_value(s, len))));
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c < 0x20 || c == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("sink name %s must not contain control characters", ledger_quote_value(s, len))));
	}
	return s;
}

/*
 * The role whose privileges create_sink checks: current_user, unless the
 * function is still 0.1.0's SECURITY DEFINER one (a database not updated
 * yet), where current_user is the owner and only the outer user is known.
 */
static Oid
calling_role(FunctionCallInfo fcinfo)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	bool		secdef = false;

	if (HeapTupleIsValid(tup))
	{
		secdef = ((Form_pg_proc) GETSTRUCT(tup))->prosecdef;
		ReleaseSysCache(tup);
	}
	return secdef ? GetOuterUserId() : GetUserId();
}

Datum
ledger_create_sink(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *name;
	char	   *kind;
	char	   *target;
	char	   *pattern;
	bool		is_prefix;
	Jsonb	   *options;
	char	   *options_json;
	const LedgerSinkOps *ops;
	Oid			caller = calling_role(fcinfo);
	LedgerSavedUser saved;
	char		err[512];
	Datum		args[5];
	int			rc;

	ledger_require_preload("create_sink");
	name = check_sink_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink kind must not be null")));
	kind = text_to_cstring(PG_GETARG_TEXT_PP(1));
	ops = ledger_sink_ops(kind);
	if (ops == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown sink kind %s", ledger_quote_value(kind, strlen(kind))),
				 errhint("Sink kinds are 'sqlite' and 'mongodb'.")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink target must not be null")));
	target = text_to_cstring(PG_GETARG_TEXT_PP(2));
	pattern = ledger_check_pattern(PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3), &is_prefix);
	if (PG_ARGISNULL(4))
		options = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	else
		options = PG_GETARG_JSONB_P(4);
	if (!JB_ROOT_IS_OBJECT(options) || JB_ROOT_IS_SCALAR(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink options must be a JSON object")));
	options_json = JsonbToCString(NULL, &options->root, VARSIZE(options));

	if (strcmp(kind, "sqlite") == 0 &&
		!has_privs_of_role(caller, ROLE_PG_WRITE_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create a sqlite sink writing %s",
						ledger_quote_value(target, strlen(target))),
				 errdetail("A sqlite sink writes a file on the database server."),
				 errhint("Only superusers and members of pg_write_server_files may create sqlite sinks.")));

	/* messages of check() show the target redacted */
	if (ops->check(target, options_json, err, sizeof(err)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s sink %s: %s", kind, ledger_quote_value(name, strlen(name)), err)));
	if (strcmp(kind, "mongodb") == 0)
		check_mongodb_hosts(name, target, caller);

	ledger_become_owner(&saved);
	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID};

		plan = ledger_prepare_plan("INSERT INTO ledger.sinks (name, kind, target, streams, options)"
								   " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
								   5, types);
	}
	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(kind);
	args[2] = CStringGetTextDatum(target);
	args[3] = CStringGetTextDatum(pattern);
	args[4] = JsonbPGetDatum(options);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_INSERT, "create_sink");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("sink %s already exists", ledger_quote_value(name, strlen(name)))));
	SPI_finish();
	ledger_restore_user(&saved);

	PG_RETURN_VOID();
}

/*
 * UPDATE/DELETE one sink by name; 42704 when there is none.  *plan caches
 * the statement for the backend's lifetime.
 */
static void
change_sink(FunctionCallInfo fcinfo, SPIPlanPtr *plan, const char *sql, const char *what)
{
	char	   *name = check_sink_name(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	Datum		args[1];
	int			rc;

	ledger_spi_connect();
	if (*plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		*plan = ledger_prepare_plan(sql, 1, types);
	}
	args[0] = CStringGetTextDatum(name);
	rc = SPI_execute_plan(*plan, args, NULL, false, 0);
	if (rc < 0)
		elog(ERROR, "ledger: %s failed: %s", what, SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sink %s does not exist", ledger_quote_value(name, strlen(name)))));
	SPI_finish();
}

/* Dropping a sink releases what it held: retention, and the change log. */
Datum
ledger_drop_sink(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;

	change_sink(fcinfo, &plan, "DELETE FROM ledger.sinks WHERE name OPERATOR(pg_catalog.=) $1", "drop_sink");
	ledger_mirror_prune();
	PG_RETURN_VOID();
}

Datum
ledger_pause_sink(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;

	change_sink(fcinfo, &plan, "UPDATE ledger.sinks SET state = 'paused' WHERE name OPERATOR(pg_catalog.=) $1",
				"pause_sink");
	PG_RETURN_VOID();
}

Datum
ledger_resume_sink(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;

	ledger_require_preload("resume_sink");
	change_sink(fcinfo, &plan, "UPDATE ledger.sinks SET state = 'active' WHERE name OPERATOR(pg_catalog.=) $1",
				"resume_sink");
	PG_RETURN_VOID();
}

Datum
ledger_redact_target(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *target = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *redacted = ledger_sink_redact_target(kind, target);
	text	   *result;

	if (redacted == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	result = cstring_to_text(redacted);
	free(redacted);
	PG_RETURN_TEXT_P(result);
}
