/*-------------------------------------------------------------------------
 *
 * src/spi_plan.c
 *		Plans prepared once per backend and kept for its lifetime, and the
 *		lookups of ledger's own relations that the C paths around SPI use.
 *
 * Every statement ledger runs is schema-qualified and parameterised, so a
 * kept plan stays valid across DROP/CREATE EXTENSION: the plan cache
 * re-analyses it against the new tables when they change.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "catalog/namespace.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

SPIPlanPtr
ledger_prepare_plan(const char *sql, int nargs, Oid *argtypes)
{
	return ledger_prepare_plan_options(sql, nargs, argtypes, 0);
}

/*
 * With CURSOR_OPT_GENERIC_PLAN for the hot reads: their generic plans are
 * as good as any custom one (the stream's id comes from a subquery, so no
 * parameter value changes the plan), and the plan cache would otherwise
 * keep re-planning them on every call when a generic plan's estimate is
 * no cheaper than a custom one's.
 */
SPIPlanPtr
ledger_prepare_plan_options(const char *sql, int nargs, Oid *argtypes, int cursor_options)
{
	SPIPlanPtr	plan;

	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);
	if (plan == NULL)
		elog(ERROR, "ledger: SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "ledger: SPI_keepplan failed");
	return plan;
}

void
ledger_spi_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "ledger: SPI_connect failed");
}

/* Can't-happen SPI failures: the statements are ours and fixed. */
void
ledger_spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "ledger: %s failed: %s", what, SPI_result_code_string(rc));
}

/* The OID of relation ledger.<relname>; an error when it is missing. */
Oid
ledger_relid(const char *relname)
{
	Oid			relid = get_relname_relid(relname, get_namespace_oid(LEDGER_SCHEMA, false));

	if (!OidIsValid(relid))
		elog(ERROR, "ledger: relation ledger.%s is missing", relname);
	return relid;
}

/*
 * Whether rel can be written by ledger's C paths (heap_multi_insert,
 * a direct tuple update) rather than by an SPI statement: a plain table
 * with exactly these columns, in this order, and no trigger on cmd
 * (CMD_INSERT or CMD_UPDATE) that only the executor would fire.
 */
bool
ledger_relation_has_layout(Relation rel, const char *const *columns, int ncolumns,
						   CmdType cmd)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TriggerDesc *trig = rel->trigdesc;

	if (rel->rd_rel->relkind != RELKIND_RELATION || desc->natts != ncolumns)
		return false;
	if (trig != NULL &&
		(cmd == CMD_INSERT ?
		 (trig->trig_insert_before_row || trig->trig_insert_after_row ||
		  trig->trig_insert_instead_row || trig->trig_insert_before_statement ||
		  trig->trig_insert_after_statement || trig->trig_insert_new_table) :
		 (trig->trig_update_before_row || trig->trig_update_after_row ||
		  trig->trig_update_instead_row || trig->trig_update_before_statement ||
		  trig->trig_update_after_statement || trig->trig_update_old_table ||
		  trig->trig_update_new_table)))
		return false;
	for (int i = 0; i < ncolumns; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || strcmp(NameStr(att->attname), columns[i]) != 0)
			return false;
	}
	return true;
}
