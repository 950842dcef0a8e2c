/*-------------------------------------------------------------------------
 *
 * src/pattern.h
 *		Stream patterns: an exact stream name, or a prefix ending in '*'
 *		('*' alone matches every stream).  The one implementation, shared
 *		by the SQL functions, the background worker and the output plugin.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LEDGER_PATTERN_H
#define LEDGER_PATTERN_H

#include "postgres.h"

/* A validated pattern, split into its parts. */
typedef struct LedgerPattern
{
	char	   *text;			/* as given, e.g. "orders-*" */
	char	   *prefix;			/* without the trailing '*', e.g. "orders-" */
	int			prefix_len;
	bool		is_prefix;		/* ended in '*' */
} LedgerPattern;

/* Rank of an exact name: beats every prefix. */
#define LEDGER_PATTERN_EXACT_RANK	PG_INT32_MAX

/*
 * Validate a pattern given as bytes (22023 naming the value when it is not
 * a pattern); what names the argument in messages ("streams pattern",
 * "ledger decoding option \"streams\"").
 */
extern void ledger_pattern_parse(const char *s, int len, const char *what,
								 LedgerPattern *pattern);

/* Same, for a text argument; NULL is an error. */
extern char *ledger_check_pattern(text *pattern, bool *is_prefix);

/*
 * How well a validated pattern matches a stream name: -1 not at all, else
 * higher is better (an exact name beats every prefix; a longer prefix
 * beats a shorter one).
 */
extern int	ledger_pattern_rank(const char *pattern, int pattern_len,
								const char *stream, int stream_len);

static inline bool
ledger_pattern_matches(const char *pattern, const char *stream)
{
	return ledger_pattern_rank(pattern, strlen(pattern),
							   stream, strlen(stream)) >= 0;
}

#endif							/* LEDGER_PATTERN_H */
