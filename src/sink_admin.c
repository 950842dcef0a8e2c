/*-------------------------------------------------------------------------
 *
 * src/sink_admin.c
 *		The SQL side of export sinks: create_sink(), drop_sink(),
 *		pause_sink(), resume_sink() and redact_target().  The exporting
 *		itself happens in the background worker (worker.c).
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"

#include "sink.h"

PG_FUNCTION_INFO_V1(ledger_create_sink);
PG_FUNCTION_INFO_V1(ledger_drop_sink);
PG_FUNCTION_INFO_V1(ledger_pause_sink);
PG_FUNCTION_INFO_V1(ledger_resume_sink);
PG_FUNCTION_INFO_V1(ledger_redact_target);

const LedgerSinkOps *
ledger_sink_ops(const char *kind)
{
	if (strcmp(kind, "sqlite") == 0)
		return &ledger_sqlite_sink_ops;
	if (strcmp(kind, "mongodb") == 0)
		return &ledger_mongo_sink_ops;
	return NULL;
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
				 errmsg("sink name \"%s\" must be 1 to 63 bytes long", s)));
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c < 0x20 || c == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("sink name must not contain control characters")));
	}
	return s;
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
				 errmsg("unknown sink kind \"%s\"", kind),
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

	/*
	 * A SQLite sink writes a file as the server's OS user, so its creator
	 * must be allowed to write server files (the caller, not the extension
	 * owner this function runs as).
	 */
	if (strcmp(kind, "sqlite") == 0 &&
		!has_privs_of_role(GetOuterUserId(), ROLE_PG_WRITE_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create a sqlite sink writing \"%s\"", target),
				 errdetail("A sqlite sink writes a file on the database server."),
				 errhint("Only superusers and members of pg_write_server_files may create sqlite sinks.")));

	if (ops->check(target, options_json, err, sizeof(err)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s sink \"%s\": %s", kind, name, err)));

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
				 errmsg("sink \"%s\" already exists", name)));
	SPI_finish();

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
				 errmsg("sink \"%s\" does not exist", name)));
	SPI_finish();
}

Datum
ledger_drop_sink(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;

	change_sink(fcinfo, &plan, "DELETE FROM ledger.sinks WHERE name OPERATOR(pg_catalog.=) $1", "drop_sink");
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
