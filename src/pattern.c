/*-------------------------------------------------------------------------
 *
 * src/pattern.c
 *		The one stream-pattern matcher: validation, ranking, and the
 *		IMMUTABLE SQL function ledger.pattern_rank() that every query
 *		matching patterns against stream names uses.
 *
 * A pattern is an exact stream name, or a prefix followed by a single
 * trailing '*'.  Where several patterns match a stream (retention rules,
 * schema versions, upcasters), the exact name wins, then the longest
 * prefix.  Rules written twice drift apart, which is how 0.1 ended up with
 * a logical decoding option that accepted patterns the SQL functions
 * refused; so C callers use ledger_pattern_rank() and SQL uses
 * ledger.pattern_rank(), which is the same function.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "utils/builtins.h"

#include "pattern.h"

PG_FUNCTION_INFO_V1(ledger_pattern_rank_sql);

void
ledger_pattern_parse(const char *s, int len, const char *what,
					 LedgerPattern *pattern)
{
	bool		is_prefix;

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what),
				 errhint("Use '*' to match every stream.")));
	if (len > LEDGER_MAX_STREAM_BYTES + 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is too long", what, ledger_quote_value(s, len)),
				 errdetail("A pattern is a stream name of at most %d bytes, optionally followed by '*'.",
						   LEDGER_MAX_STREAM_BYTES)));
	is_prefix = (s[len - 1] == '*');
	if (memchr(s, '*', len - (is_prefix ? 1 : 0)) != NULL ||
		(!is_prefix && len > LEDGER_MAX_STREAM_BYTES))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is invalid", what, ledger_quote_value(s, len)),
				 errdetail("A pattern is a stream name, or a prefix followed by a single trailing '*'.")));
	ledger_check_name_bytes(s, len - (is_prefix ? 1 : 0), what);

	pattern->text = pnstrdup(s, len);
	pattern->is_prefix = is_prefix;
	pattern->prefix_len = len - (is_prefix ? 1 : 0);
	pattern->prefix = pnstrdup(s, pattern->prefix_len);
}

char *
ledger_check_pattern(text *pattern, bool *is_prefix)
{
	LedgerPattern parsed;

	if (pattern == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("streams pattern must not be null")));
	ledger_pattern_parse(VARDATA_ANY(pattern), VARSIZE_ANY_EXHDR(pattern),
						 "streams pattern", &parsed);
	*is_prefix = parsed.is_prefix;
	pfree(parsed.prefix);
	return parsed.text;
}

int
ledger_pattern_rank(const char *pattern, int pattern_len,
					const char *stream, int stream_len)
{
	if (pattern_len > 0 && pattern[pattern_len - 1] == '*')
	{
		int			prefix_len = pattern_len - 1;

		if (stream_len < prefix_len || memcmp(pattern, stream, prefix_len) != 0)
			return -1;
		return prefix_len;
	}
	if (pattern_len != stream_len || memcmp(pattern, stream, stream_len) != 0)
		return -1;
	return LEDGER_PATTERN_EXACT_RANK;
}

/*
 * ledger.pattern_rank(pattern text, stream text) RETURNS integer
 *
 * -1 when the pattern does not match the stream, else its rank: so
 * "WHERE ledger.pattern_rank(p, s) >= 0 ORDER BY ledger.pattern_rank(p, s)
 * DESC LIMIT 1" picks the winning pattern.
 */
Datum
ledger_pattern_rank_sql(PG_FUNCTION_ARGS)
{
	text	   *pattern = PG_GETARG_TEXT_PP(0);
	text	   *stream = PG_GETARG_TEXT_PP(1);

	PG_RETURN_INT32(ledger_pattern_rank(VARDATA_ANY(pattern), VARSIZE_ANY_EXHDR(pattern),
										VARDATA_ANY(stream), VARSIZE_ANY_EXHDR(stream)));
}
