/* sql/ledger--0.1.0--0.2.0.sql — upgrade a ledger 0.1.0 database to 0.2.0 */

\echo Use "ALTER EXTENSION ledger UPDATE" to load this file. \quit

CREATE FUNCTION ledger.pattern_rank(pattern text, stream text)
RETURNS integer
AS 'MODULE_PATHNAME', 'ledger_pattern_rank_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION ledger.pattern_rank(text, text) IS
'How well a streams pattern (a name, or a prefix ending in *) matches a stream: -1 not at all, higher wins';
REVOKE ALL ON FUNCTION ledger.pattern_rank(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.pattern_rank(text, text) TO ledger_reader;
