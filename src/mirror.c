/*-------------------------------------------------------------------------
 *
 * src/mirror.c
 *		The change log that carries side-data updates and trims to the
 *		export sinks (ledger.changes), in commit order.
 *
 * set_tags/set_annotations and every trim (retention's included) call in
 * here after taking the locks of their change: the entry's row lock, or
 * the stream's.  Each change gets an id drawn from ledger.entries_id_seq
 * after those locks and after publishing the transaction's horizon floor,
 * exactly as an append draws its id.  So:
 *	- two changes of one entry, or a trim and an append or update of one
 *	  stream, are ordered by their ids the way they committed;
 *	- a change id below the read_all horizon belongs to a transaction that
 *	  has ended, so the export driver (export.c), which merges entries and
 *	  changes below the horizon in one id order, never skips one.
 * A change row names what changed, not how: an update item carries the
 * entry's side data as the driver reads it, a trim the stream's highest
 * deleted id, so applying one twice, or late, converges on what the log
 * holds.  A trim deletes a prefix of its stream, so "every row of the
 * stream up to the first id that remains" is exactly what it removed.
 *
 * Nothing is written while the database has no sink.  The test for a sink
 * uses a fresh snapshot taken after the floor is published, whatever the
 * isolation level; a sink created concurrently is covered by the driver,
 * which exports nothing of a sink it opens until the horizon has passed a
 * barrier id drawn after the sink committed -- by then every transaction
 * that looked for sinks before it existed has ended.
 *
 * The log is pruned by the driver below the smallest position of all
 * sinks, and emptied by drop_sink when the last one goes.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

/* Does the schema have the change log (not a database still at 0.1.0)? */
static bool
change_log_exists(void)
{
	Oid			nsp = get_namespace_oid(LEDGER_SCHEMA, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("changes", nsp));
}

/* Is there a sink, seen with a snapshot younger than our horizon floor? */
static bool
sinks_exist(void)
{
	static SPIPlanPtr plan = NULL;
	bool		exists;
	bool		isnull;
	int			rc;

	if (plan == NULL)
		plan = ledger_prepare_plan("SELECT EXISTS (SELECT 1 FROM ledger.sinks)", 0, NULL);
	PushActiveSnapshot(GetLatestSnapshot());
	rc = SPI_execute_plan(plan, NULL, NULL, true, 1);
	PopActiveSnapshot();
	ledger_spi_check(rc, SPI_OK_SELECT, "sink check");
	exists = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return exists;
}

/* Record a change, if any sink may need it.  Caller holds its locks. */
static void
record_change(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types, Datum *args)
{
	int			rc;

	if (!change_log_exists())
		return;
	ledger_spi_connect();
	ledger_horizon_before_id();
	if (sinks_exist())
	{
		if (*plan == NULL)
			*plan = ledger_prepare_plan(sql, nargs, types);
		rc = SPI_execute_plan(*plan, args, NULL, false, 0);
		ledger_spi_check(rc, SPI_OK_INSERT, "change log");
	}
	SPI_finish();
}

/* set_tags/set_annotations changed entry_id (its row is locked). */
void
ledger_mirror_note_update(int64 entry_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(entry_id)};

	record_change(&plan,
				  "INSERT INTO ledger.changes (id, stream_id, entry_id, kind)"
				  " SELECT pg_catalog.nextval('ledger.entries_id_seq'::pg_catalog.regclass),"
				  " e.stream_id, e.id, 'update' FROM ledger.entries e"
				  " WHERE e.id OPERATOR(pg_catalog.=) $1",
				  1, types, args);
}

/*
 * A trim deleted a prefix of the stream, up to before_id at most (the
 * stream's row is locked).  The target deletes the stream's rows below the
 * first entry that remains.
 */
void
ledger_mirror_note_trim(int32 stream_id, int64 before_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {INT4OID, INT8OID};
	Datum		args[2] = {Int32GetDatum(stream_id), Int64GetDatum(before_id)};

	record_change(&plan,
				  "INSERT INTO ledger.changes (id, stream_id, entry_id, kind)"
				  " SELECT pg_catalog.nextval('ledger.entries_id_seq'::pg_catalog.regclass), $1,"
				  " LEAST($2, COALESCE((SELECT pg_catalog.min(e.id) FROM ledger.entries e"
				  " WHERE e.stream_id OPERATOR(pg_catalog.=) $1) OPERATOR(pg_catalog.-) 1, $2)),"
				  " 'trim'",
				  2, types, args);
}

/*
 * Forget the changes every sink has applied: all of them once no sink is
 * left.  Called by the export driver after a pass and by drop_sink.
 */
void
ledger_mirror_prune(void)
{
	static SPIPlanPtr plan = NULL;
	int			rc;

	if (!change_log_exists())
		return;
	ledger_spi_connect();
	if (plan == NULL)
		plan = ledger_prepare_plan("DELETE FROM ledger.changes c"
								   " WHERE NOT EXISTS (SELECT 1 FROM ledger.sinks)"
								   " OR c.id OPERATOR(pg_catalog.<=) (SELECT pg_catalog.min(k.position) FROM ledger.sinks k)",
								   0, NULL);
	rc = SPI_execute_plan(plan, NULL, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_DELETE, "pruning the change log");
	SPI_finish();
}
