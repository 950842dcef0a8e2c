/*-------------------------------------------------------------------------
 *
 * src/spi_plan.c
 *		Plans prepared once per backend and kept for its lifetime.
 *
 * Every statement ledger runs is schema-qualified and parameterised, so a
 * kept plan stays valid across DROP/CREATE EXTENSION: the plan cache
 * re-analyses it against the new tables when they change.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

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
