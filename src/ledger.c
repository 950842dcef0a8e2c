/*-------------------------------------------------------------------------
 *
 * src/ledger.c
 *		Module entry point: the GUCs, the hooks, the preload check.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/varlena.h"

PG_MODULE_MAGIC;

int			ledger_max_payload_bytes = 1024 * 1024;
bool		ledger_loaded_via_preload = false;

void		_PG_init(void);

/*
 * Some 15.x builds only let a library serve as an output plugin when it is
 * listed in output_plugin_libraries.  Preloading ledger is the
 * administrator's trust in it, so when that setting is left at its default
 * we add ourselves to the list; an explicit setting is left alone (the
 * dynamic-default source ranks below the configuration file).
 */
static void
trust_as_output_plugin(void)
{
	const char *current = GetConfigOption("output_plugin_libraries", true, false);
	char	   *copy;
	List	   *names;
	ListCell   *lc;

	if (current == NULL)
		return;					/* this server has no such setting */
	copy = pstrdup(current);
	if (!SplitIdentifierString(copy, ',', &names))
		return;
	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), "ledger") == 0)
			return;
	SetConfigOption("output_plugin_libraries",
					psprintf("%s%sledger", current, current[0] ? ", " : ""),
					PGC_POSTMASTER, PGC_S_DYNAMIC_DEFAULT);
}

void
_PG_init(void)
{
	/* SUSET: a limit that the writers it protects against cannot raise */
	DefineCustomIntVariable("ledger.max_payload_bytes",
							"Largest entry that append accepts: payload, metadata, tags and annotations together, in bytes.",
							"set_tags and set_annotations keep an entry within it too.",
							&ledger_max_payload_bytes,
							1024 * 1024, 1, 512 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ledger.worker_naptime",
							"Longest the background worker sleeps when nothing wakes it.",
							"Commits of appends, new sinks and retention limits wake it at once; this is a backstop.",
							&ledger_worker_naptime_ms,
							60000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ledger.retention_interval",
							"Shortest time between two retention passes of the background worker while appends arrive.",
							NULL,
							&ledger_retention_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ledger.retention_batch",
							"Entries deleted per transaction when enforcing retention.",
							NULL,
							&ledger_retention_batch,
							1000, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ledger.export_batch",
							"Entries written to a sink per batch.",
							NULL,
							&ledger_export_batch,
							1000, 1, 100000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	ledger_sink_init();

	MarkGUCPrefixReserved("ledger");

	ledger_xact_init();

	/* Everything below needs to run in the postmaster. */
	if (!process_shared_preload_libraries_in_progress)
		return;

	ledger_loaded_via_preload = true;
	trust_as_output_plugin();
	ledger_shmem_init();
	ledger_standby_init();
	ledger_launcher_init();
	ledger_register_launcher();
}

/*
 * Raise 55000 for features that live in shared memory when the library was
 * loaded on demand (CREATE EXTENSION, first call) rather than at startup.
 */
void
ledger_require_preload(const char *what)
{
	if (!ledger_loaded_via_preload)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s requires ledger to be loaded via shared_preload_libraries", what),
				 errhint("Add 'ledger' to shared_preload_libraries in postgresql.conf and restart the server.")));
}
