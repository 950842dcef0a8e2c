/*-------------------------------------------------------------------------
 *
 * sink_sqlite.c
 *	  Export sink writing entries into an SQLite file laid out like the
 *	  store of github.com/rbaliyan/ledger (package sqlite, v0.0.13).
 *
 * The file is one that the Go library's sqlite.New opens and its Read reads
 * unchanged:
 *
 *	- the table (option "table", default ledger_entries) has exactly the
 *	  columns and types that library creates, plus "seq INTEGER" at the end
 *	  (the Go reader names its columns, so an extra column is invisible to it);
 *	- id is the PostgreSQL entry id, source_id the same id as text;
 *	- payload is a BLOB holding the JSON text as the worker gave it;
 *	- metadata and annotations are minified JSON objects, NULL when empty;
 *	  tags a minified JSON array, '[]' when empty;
 *	- created_at/updated_at are UTC text "YYYY-MM-DDTHH:MM:SS.fff"
 *	  (milliseconds, truncated), which is what the Go reader parses;
 *	- the indexes are the library's, with the same names and definitions,
 *	  including the tags index its New() creates in the background.
 *
 * Position: the row of "<table>_cursors" whose name is
 * 'ledger_sink:' || <sink name>, cursor = the last exported id as decimal
 * text (the Go library's CursorStore table, so its own bridges keep their
 * own cursors beside ours).  The rows of a batch and the cursor are written
 * in one IMMEDIATE transaction; rows go in with INSERT OR IGNORE on the
 * primary key, so a batch that is sent again after a crash is a no-op, and
 * the cursor only ever moves forward (compared as integers).
 *
 * Note on OR IGNORE: it also skips a row that collides with the library's
 * unique (stream, dedup_key) or source_id indexes, that is, with a row some
 * other writer put in the same file.  That is the library's own dedup rule.
 *
 * An existing table must have the library's columns; source_id and seq are
 * added when missing (the library itself adds source_id the same way).
 *
 * Plain C, malloc/free, no server headers: see sink.h.
 *
 * src/sink_sqlite.c
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "sink.h"

#define SQLITE_SINK_DEFAULT_TABLE	"ledger_entries"
#define SQLITE_SINK_MAX_IDENT		63
#define SQLITE_SINK_BUSY_TIMEOUT_MS 5000
#define SQLITE_SINK_CURSOR_PREFIX	"ledger_sink:"

typedef struct SqliteSink
{
	sqlite3    *db;
	char	   *sink_name;
	char	   *path;
	char	   *table;
	char	   *cursor_name;
	sqlite3_stmt *begin;
	sqlite3_stmt *commit;
	sqlite3_stmt *rollback;
	sqlite3_stmt *insert;
	sqlite3_stmt *set_cursor;
	sqlite3_stmt *get_cursor;
} SqliteSink;

/* Columns the Go library's Read/Append use; all must exist in the table. */
static const char *const required_columns[] = {
	"id", "stream", "payload", "order_key", "dedup_key", "schema_version",
	"metadata", "tags", "annotations", "created_at", "updated_at", NULL
};

static void set_err(char *err, size_t errlen, const char *fmt,...)
	__attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static char *
sink_strdup(const char *s)
{
	size_t		len = strlen(s) + 1;
	char	   *r = malloc(len);

	if (r != NULL)
		memcpy(r, s, len);
	return r;
}

static int
valid_identifier(const char *s)
{
	size_t		i;

	if (s == NULL || !(isalpha((unsigned char) s[0]) || s[0] == '_'))
		return 0;
	for (i = 1; s[i] != '\0'; i++)
	{
		if (i >= SQLITE_SINK_MAX_IDENT)
			return 0;
		if (!(isalnum((unsigned char) s[i]) || s[i] == '_'))
			return 0;
	}
	return 1;
}

/* Absolute, no ".." component. */
static int
check_path(const char *target, char *err, size_t errlen)
{
	const char *p;

	if (target == NULL || target[0] == '\0')
	{
		set_err(err, errlen, "sqlite sink: target must be an absolute file path, got an empty string");
		return -1;
	}
	if (target[0] != '/')
	{
		set_err(err, errlen, "sqlite sink: target \"%s\" is not an absolute file path", target);
		return -1;
	}
	p = target;
	while (*p != '\0')
	{
		const char *end;

		while (*p == '/')
			p++;
		end = p;
		while (*end != '\0' && *end != '/')
			end++;
		if (end - p == 2 && p[0] == '.' && p[1] == '.')
		{
			set_err(err, errlen, "sqlite sink: target \"%s\" must not contain a \"..\" path component", target);
			return -1;
		}
		p = end;
	}
	if (target[strlen(target) - 1] == '/')
	{
		set_err(err, errlen, "sqlite sink: target \"%s\" names a directory, not a file", target);
		return -1;
	}
	return 0;
}

/*
 * Parse options_json with SQLite's own JSON functions (in a private
 * in-memory database: nothing is created on disk).  On success *table is a
 * malloc'd table name.
 */
static int
parse_options(const char *options_json, char **table, char *err, size_t errlen)
{
	sqlite3    *mem = NULL;
	sqlite3_stmt *st = NULL;
	int			rc;
	int			result = -1;
	char	   *tbl = NULL;

	*table = NULL;
	if (options_json == NULL || options_json[0] == '\0')
		options_json = "{}";

	if (sqlite3_open_v2(":memory:", &mem, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
	{
		set_err(err, errlen, "sqlite sink: cannot parse options: %s",
				mem ? sqlite3_errmsg(mem) : "out of memory");
		goto done;
	}

	/* Must be a JSON object. */
	rc = sqlite3_prepare_v2(mem, "SELECT json_valid(?1), json_type(?1)", -1, &st, NULL);
	if (rc != SQLITE_OK)
	{
		set_err(err, errlen, "sqlite sink: cannot parse options: %s", sqlite3_errmsg(mem));
		goto done;
	}
	sqlite3_bind_text(st, 1, options_json, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_int(st, 0) != 1 ||
		sqlite3_column_text(st, 1) == NULL ||
		strcmp((const char *) sqlite3_column_text(st, 1), "object") != 0)
	{
		set_err(err, errlen, "sqlite sink: options must be a JSON object, got \"%s\"", options_json);
		goto done;
	}
	sqlite3_finalize(st);
	st = NULL;

	rc = sqlite3_prepare_v2(mem, "SELECT key, type, value FROM json_each(?1)", -1, &st, NULL);
	if (rc != SQLITE_OK)
	{
		set_err(err, errlen, "sqlite sink: cannot parse options: %s", sqlite3_errmsg(mem));
		goto done;
	}
	sqlite3_bind_text(st, 1, options_json, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
	{
		const char *key = (const char *) sqlite3_column_text(st, 0);
		const char *type = (const char *) sqlite3_column_text(st, 1);
		const char *value = (const char *) sqlite3_column_text(st, 2);

		if (key != NULL && strcmp(key, "table") == 0)
		{
			if (type == NULL || strcmp(type, "text") != 0 || !valid_identifier(value))
			{
				set_err(err, errlen,
						"sqlite sink: option \"table\" value \"%s\" is not a valid table name (letters, digits and _, not starting with a digit, at most %d characters)",
						value ? value : "null", SQLITE_SINK_MAX_IDENT);
				goto done;
			}
			free(tbl);
			tbl = sink_strdup(value);
			if (tbl == NULL)
			{
				set_err(err, errlen, "sqlite sink: out of memory");
				goto done;
			}
		}
		else
		{
			set_err(err, errlen,
					"sqlite sink: unknown option \"%s\" (the only option is \"table\")",
					key ? key : "");
			goto done;
		}
	}
	if (rc != SQLITE_DONE)
	{
		set_err(err, errlen, "sqlite sink: cannot parse options: %s", sqlite3_errmsg(mem));
		goto done;
	}

	if (tbl == NULL && (tbl = sink_strdup(SQLITE_SINK_DEFAULT_TABLE)) == NULL)
	{
		set_err(err, errlen, "sqlite sink: out of memory");
		goto done;
	}
	*table = tbl;
	tbl = NULL;
	result = 0;

done:
	free(tbl);
	if (st != NULL)
		sqlite3_finalize(st);
	if (mem != NULL)
		sqlite3_close(mem);
	return result;
}

static int
sqlite_sink_check(const char *target, const char *options_json, char *err, size_t errlen)
{
	char	   *table = NULL;

	if (check_path(target, err, errlen) != 0)
		return -1;
	if (parse_options(options_json, &table, err, errlen) != 0)
		return -1;
	free(table);
	return 0;
}

/* Run one statement with no result rows; on error set err. */
static int
exec_sql(SqliteSink *s, const char *sql, const char *what, char *err, size_t errlen)
{
	char	   *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK)
	{
		set_err(err, errlen, "sqlite sink \"%s\": %s in \"%s\": %s",
				s->sink_name, what, s->path, msg ? msg : sqlite3_errmsg(s->db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static int
prepare(SqliteSink *s, sqlite3_stmt **st, const char *sql, char *err, size_t errlen)
{
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
	{
		set_err(err, errlen, "sqlite sink \"%s\": cannot prepare statement on \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		return -1;
	}
	return 0;
}

/*
 * Check the columns of an existing table; add source_id and seq when
 * missing.  Called inside the DDL transaction.
 */
static int
check_columns(SqliteSink *s, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	char	   *sql;
	int			have[sizeof(required_columns) / sizeof(required_columns[0])] = {0};
	int			have_source_id = 0;
	int			have_seq = 0;
	int			rc;
	int			i;

	sql = sqlite3_mprintf("PRAGMA table_info(%s)", s->table);
	if (sql == NULL)
	{
		set_err(err, errlen, "sqlite sink \"%s\": out of memory", s->sink_name);
		return -1;
	}
	rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
	sqlite3_free(sql);
	if (rc != SQLITE_OK)
	{
		set_err(err, errlen, "sqlite sink \"%s\": cannot read the columns of table \"%s\" in \"%s\": %s",
				s->sink_name, s->table, s->path, sqlite3_errmsg(s->db));
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
	{
		const char *name = (const char *) sqlite3_column_text(st, 1);

		if (name == NULL)
			continue;
		for (i = 0; required_columns[i] != NULL; i++)
			if (strcmp(name, required_columns[i]) == 0)
				have[i] = 1;
		if (strcmp(name, "source_id") == 0)
			have_source_id = 1;
		if (strcmp(name, "seq") == 0)
			have_seq = 1;
	}
	if (rc != SQLITE_DONE)
	{
		set_err(err, errlen, "sqlite sink \"%s\": cannot read the columns of table \"%s\" in \"%s\": %s",
				s->sink_name, s->table, s->path, sqlite3_errmsg(s->db));
		sqlite3_finalize(st);
		return -1;
	}
	sqlite3_finalize(st);

	for (i = 0; required_columns[i] != NULL; i++)
	{
		if (!have[i])
		{
			set_err(err, errlen,
					"sqlite sink \"%s\": existing table \"%s\" in \"%s\" has no column \"%s\"; it is not a ledger table (use option \"table\" to pick another name)",
					s->sink_name, s->table, s->path, required_columns[i]);
			return -1;
		}
	}

	if (!have_source_id)
	{
		sql = sqlite3_mprintf("ALTER TABLE %s ADD COLUMN source_id TEXT NOT NULL DEFAULT ''", s->table);
		rc = sql ? exec_sql(s, sql, "cannot add column source_id", err, errlen) : -1;
		sqlite3_free(sql);
		if (rc != 0)
			return -1;
	}
	if (!have_seq)
	{
		sql = sqlite3_mprintf("ALTER TABLE %s ADD COLUMN seq INTEGER", s->table);
		rc = sql ? exec_sql(s, sql, "cannot add column seq", err, errlen) : -1;
		sqlite3_free(sql);
		if (rc != 0)
			return -1;
	}
	return 0;
}

/* Create table, cursor table and indexes if missing (one transaction). */
static int
create_schema(SqliteSink *s, char *err, size_t errlen)
{
	const char *t = s->table;
	char	   *sql;
	int			rc;

	/*
	 * Same text as the Go library's createTable (plus seq), so that
	 * ".schema" of a file made by either one looks the same.
	 */
	sql = sqlite3_mprintf(
						  "BEGIN IMMEDIATE;\n"
						  "CREATE TABLE IF NOT EXISTS %s (\n"
						  "\t\t\tid             INTEGER PRIMARY KEY AUTOINCREMENT,\n"
						  "\t\t\tstream         TEXT    NOT NULL,\n"
						  "\t\t\tpayload        BLOB    NOT NULL,\n"
						  "\t\t\torder_key      TEXT    NOT NULL DEFAULT '',\n"
						  "\t\t\tdedup_key      TEXT    NOT NULL DEFAULT '',\n"
						  "\t\t\tschema_version INTEGER NOT NULL DEFAULT 1,\n"
						  "\t\t\tmetadata       TEXT,\n"
						  "\t\t\ttags           TEXT    NOT NULL DEFAULT '[]',\n"
						  "\t\t\tannotations    TEXT,\n"
						  "\t\t\tsource_id      TEXT    NOT NULL DEFAULT '',\n"
						  "\t\t\tcreated_at     TEXT    NOT NULL DEFAULT (strftime('%%Y-%%m-%%dT%%H:%%M:%%f','now')),\n"
						  "\t\t\tupdated_at     TEXT,\n"
						  "\t\t\tseq            INTEGER\n"
						  "\t\t);\n",
						  t);
	if (sql == NULL)
	{
		set_err(err, errlen, "sqlite sink \"%s\": out of memory", s->sink_name);
		return -1;
	}
	rc = exec_sql(s, sql, "cannot create table", err, errlen);
	sqlite3_free(sql);
	if (rc != 0)
	{
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}

	if (check_columns(s, err, errlen) != 0)
	{
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}

	sql = sqlite3_mprintf(
						  "CREATE INDEX IF NOT EXISTS idx_%s_stream_id ON %s(stream, id);\n"
						  "CREATE INDEX IF NOT EXISTS idx_%s_stream ON %s(stream);\n"
						  "CREATE INDEX IF NOT EXISTS idx_%s_stream_order ON %s(stream, order_key, id);\n"
						  "CREATE UNIQUE INDEX IF NOT EXISTS idx_%s_dedup ON %s(stream, dedup_key) WHERE dedup_key != '';\n"
						  "CREATE UNIQUE INDEX IF NOT EXISTS idx_%s_source ON %s(source_id) WHERE source_id != '';\n"
						  "CREATE TABLE IF NOT EXISTS %s_cursors (name TEXT NOT NULL PRIMARY KEY, cursor TEXT NOT NULL);\n"
						  "CREATE INDEX IF NOT EXISTS idx_%s_tags ON %s(stream, tags);\n"
						  "COMMIT;",
						  t, t, t, t, t, t, t, t, t, t, t, t, t);
	if (sql == NULL)
	{
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		set_err(err, errlen, "sqlite sink \"%s\": out of memory", s->sink_name);
		return -1;
	}
	rc = exec_sql(s, sql, "cannot create indexes", err, errlen);
	sqlite3_free(sql);
	if (rc != 0)
	{
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

static void
sqlite_sink_close(void *state)
{
	SqliteSink *s = state;

	if (s == NULL)
		return;
	sqlite3_finalize(s->begin);
	sqlite3_finalize(s->commit);
	sqlite3_finalize(s->rollback);
	sqlite3_finalize(s->insert);
	sqlite3_finalize(s->set_cursor);
	sqlite3_finalize(s->get_cursor);
	if (s->db != NULL)
		sqlite3_close_v2(s->db);
	free(s->sink_name);
	free(s->path);
	free(s->table);
	free(s->cursor_name);
	free(s);
}

static void *
sqlite_sink_open(const char *sink_name, const char *target, const char *options_json,
				 char *err, size_t errlen)
{
	SqliteSink *s;
	sqlite3_stmt *st = NULL;
	char	   *sql;
	int			rc;

	if (sink_name == NULL)
		sink_name = "";
	if (sqlite_sink_check(target, options_json, err, errlen) != 0)
		return NULL;

	s = calloc(1, sizeof(SqliteSink));
	if (s == NULL)
	{
		set_err(err, errlen, "sqlite sink \"%s\": out of memory", sink_name);
		return NULL;
	}
	s->sink_name = sink_strdup(sink_name);
	s->path = sink_strdup(target);
	s->cursor_name = malloc(strlen(SQLITE_SINK_CURSOR_PREFIX) + strlen(sink_name) + 1);
	if (s->sink_name == NULL || s->path == NULL || s->cursor_name == NULL)
	{
		set_err(err, errlen, "sqlite sink \"%s\": out of memory", sink_name);
		sqlite_sink_close(s);
		return NULL;
	}
	if (parse_options(options_json, &s->table, err, errlen) != 0)
	{
		sqlite_sink_close(s);
		return NULL;
	}
	strcpy(s->cursor_name, SQLITE_SINK_CURSOR_PREFIX);
	strcat(s->cursor_name, sink_name);

	rc = sqlite3_open_v2(target, &s->db,
						 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
						 NULL);
	if (rc != SQLITE_OK)
	{
		set_err(err, errlen, "sqlite sink \"%s\": cannot open \"%s\": %s",
				s->sink_name, s->path,
				s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		sqlite_sink_close(s);
		return NULL;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, SQLITE_SINK_BUSY_TIMEOUT_MS);

	/* WAL; the pragma answers with the mode actually in force. */
	rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW)
	{
		set_err(err, errlen, "sqlite sink \"%s\": cannot open \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		sqlite3_finalize(st);
		sqlite_sink_close(s);
		return NULL;
	}
	if (sqlite3_column_text(st, 0) == NULL ||
		strcmp((const char *) sqlite3_column_text(st, 0), "wal") != 0)
	{
		set_err(err, errlen, "sqlite sink \"%s\": cannot switch \"%s\" to WAL mode (journal mode is \"%s\")",
				s->sink_name, s->path,
				sqlite3_column_text(st, 0) ? (const char *) sqlite3_column_text(st, 0) : "unknown");
		sqlite3_finalize(st);
		sqlite_sink_close(s);
		return NULL;
	}
	sqlite3_finalize(st);

	if (exec_sql(s, "PRAGMA synchronous=NORMAL", "cannot set synchronous", err, errlen) != 0 ||
		create_schema(s, err, errlen) != 0)
	{
		sqlite_sink_close(s);
		return NULL;
	}

	if (prepare(s, &s->begin, "BEGIN IMMEDIATE", err, errlen) != 0 ||
		prepare(s, &s->commit, "COMMIT", err, errlen) != 0 ||
		prepare(s, &s->rollback, "ROLLBACK", err, errlen) != 0)
	{
		sqlite_sink_close(s);
		return NULL;
	}

	sql = sqlite3_mprintf(
						  "INSERT OR IGNORE INTO %s (id, stream, payload, order_key, dedup_key, schema_version, "
						  "metadata, tags, annotations, source_id, created_at, updated_at, seq) "
						  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, json(?7), json(?8), json(?9), ?10, ?11, ?12, ?13)",
						  s->table);
	rc = sql ? prepare(s, &s->insert, sql, err, errlen) : -1;
	sqlite3_free(sql);
	if (rc != 0)
	{
		sqlite_sink_close(s);
		return NULL;
	}

	/* The cursor only moves forward, compared as integers. */
	sql = sqlite3_mprintf(
						  "INSERT INTO %s_cursors (name, cursor) VALUES (?1, ?2) "
						  "ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor "
						  "WHERE CAST(excluded.cursor AS INTEGER) > CAST(%s_cursors.cursor AS INTEGER)",
						  s->table, s->table);
	rc = sql ? prepare(s, &s->set_cursor, sql, err, errlen) : -1;
	sqlite3_free(sql);
	if (rc != 0)
	{
		sqlite_sink_close(s);
		return NULL;
	}

	sql = sqlite3_mprintf("SELECT cursor FROM %s_cursors WHERE name = ?1", s->table);
	rc = sql ? prepare(s, &s->get_cursor, sql, err, errlen) : -1;
	sqlite3_free(sql);
	if (rc != 0)
	{
		sqlite_sink_close(s);
		return NULL;
	}

	return s;
}

static int
sqlite_sink_position(void *state, int64_t *pos, char *err, size_t errlen)
{
	SqliteSink *s = state;
	int			rc;
	int			result = -1;

	*pos = 0;
	sqlite3_bind_text(s->get_cursor, 1, s->cursor_name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s->get_cursor);
	if (rc == SQLITE_ROW)
	{
		const char *txt = (const char *) sqlite3_column_text(s->get_cursor, 0);
		char	   *end = NULL;
		long long	v;

		errno = 0;
		v = txt ? strtoll(txt, &end, 10) : 0;
		if (txt == NULL || errno != 0 || end == txt || *end != '\0' || v < 0)
			set_err(err, errlen, "sqlite sink \"%s\": cursor \"%s\" in table \"%s_cursors\" of \"%s\" holds \"%s\", not an entry id",
					s->sink_name, s->cursor_name, s->table, s->path, txt ? txt : "NULL");
		else
		{
			*pos = (int64_t) v;
			result = 0;
		}
	}
	else if (rc == SQLITE_DONE)
		result = 0;
	else
		set_err(err, errlen, "sqlite sink \"%s\": cannot read cursor from \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
	sqlite3_reset(s->get_cursor);
	sqlite3_clear_bindings(s->get_cursor);
	return result;
}

/* True for NULL, "" and a JSON object with no members ("{}", "{ }"). */
static int
json_object_is_empty(const char *json)
{
	const char *p = json;

	if (p == NULL)
		return 1;
	while (isspace((unsigned char) *p))
		p++;
	if (*p == '\0')
		return 1;
	if (*p++ != '{')
		return 0;
	while (isspace((unsigned char) *p))
		p++;
	if (*p++ != '}')
		return 0;
	while (isspace((unsigned char) *p))
		p++;
	return *p == '\0';
}

/* "YYYY-MM-DDTHH:MM:SS.fff" (UTC, milliseconds truncated); buf of 80 bytes. */
static int
format_timestamp(int64_t us, char *buf, size_t buflen)
{
	int64_t		secs = us / 1000000;
	int64_t		rem = us % 1000000;
	time_t		t;
	struct tm	tm;

	if (rem < 0)
	{
		rem += 1000000;
		secs -= 1;
	}
	t = (time_t) secs;
	if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
		return -1;
	snprintf(buf, buflen, "%04d-%02d-%02dT%02d:%02d:%02d.%03d",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (rem / 1000));
	return 0;
}

static int
step_done(SqliteSink *s, sqlite3_stmt *st)
{
	int			rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int
sqlite_sink_write(void *state, const LedgerExportRow *rows, int n, char *err, size_t errlen)
{
	SqliteSink *s = state;
	char		created[80];
	char		updated[80];
	char		idtxt[24];
	int			i;

	if (n <= 0)
		return 0;

	if (step_done(s, s->begin) != 0)
	{
		set_err(err, errlen, "sqlite sink \"%s\": cannot begin a transaction on \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		return -1;
	}

	for (i = 0; i < n; i++)
	{
		const LedgerExportRow *r = &rows[i];
		sqlite3_stmt *st = s->insert;
		const char *payload = r->payload_json ? r->payload_json : "null";
		const char *tags = r->tags_json && r->tags_json[0] ? r->tags_json : "[]";
		int			rc;

		if (format_timestamp(r->created_at_us, created, sizeof(created)) != 0 ||
			(r->has_updated_at &&
			 format_timestamp(r->updated_at_us, updated, sizeof(updated)) != 0))
		{
			set_err(err, errlen, "sqlite sink \"%s\": entry %" PRId64 " has a timestamp out of range",
					s->sink_name, r->id);
			goto fail;
		}
		snprintf(idtxt, sizeof(idtxt), "%" PRId64, r->id);

		sqlite3_bind_int64(st, 1, r->id);
		sqlite3_bind_text(st, 2, r->stream ? r->stream : "", -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 3, payload, (int) strlen(payload), SQLITE_STATIC);
		sqlite3_bind_text(st, 4, r->order_key ? r->order_key : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, r->dedup_key ? r->dedup_key : "", -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 6, r->schema_version);
		if (json_object_is_empty(r->metadata_json))
			sqlite3_bind_null(st, 7);
		else
			sqlite3_bind_text(st, 7, r->metadata_json, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 8, tags, -1, SQLITE_STATIC);
		if (json_object_is_empty(r->annotations_json))
			sqlite3_bind_null(st, 9);
		else
			sqlite3_bind_text(st, 9, r->annotations_json, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 10, idtxt, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 11, created, -1, SQLITE_TRANSIENT);
		if (r->has_updated_at)
			sqlite3_bind_text(st, 12, updated, -1, SQLITE_TRANSIENT);
		else
			sqlite3_bind_null(st, 12);
		sqlite3_bind_int64(st, 13, r->seq);

		rc = sqlite3_step(st);
		if (rc != SQLITE_DONE)
		{
			set_err(err, errlen, "sqlite sink \"%s\": cannot insert entry %" PRId64 " into \"%s\": %s",
					s->sink_name, r->id, s->path, sqlite3_errmsg(s->db));
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			goto fail;
		}
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}

	snprintf(idtxt, sizeof(idtxt), "%" PRId64, rows[n - 1].id);
	sqlite3_bind_text(s->set_cursor, 1, s->cursor_name, -1, SQLITE_STATIC);
	sqlite3_bind_text(s->set_cursor, 2, idtxt, -1, SQLITE_STATIC);
	if (sqlite3_step(s->set_cursor) != SQLITE_DONE)
	{
		set_err(err, errlen, "sqlite sink \"%s\": cannot update cursor in \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		sqlite3_reset(s->set_cursor);
		sqlite3_clear_bindings(s->set_cursor);
		goto fail;
	}
	sqlite3_reset(s->set_cursor);
	sqlite3_clear_bindings(s->set_cursor);

	if (step_done(s, s->commit) != 0)
	{
		set_err(err, errlen, "sqlite sink \"%s\": cannot commit to \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		goto fail;
	}
	return 0;

fail:
	if (!sqlite3_get_autocommit(s->db))
		(void) step_done(s, s->rollback);
	return -1;
}

const LedgerSinkOps ledger_sqlite_sink_ops = {
	.kind = "sqlite",
	.check = sqlite_sink_check,
	.open = sqlite_sink_open,
	.position = sqlite_sink_position,
	.write = sqlite_sink_write,
	.close = sqlite_sink_close,
};
