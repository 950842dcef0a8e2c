/*-------------------------------------------------------------------------
 *
 * src/sink_sqlite.c
 *	  Export sink mirroring the log into an SQLite file laid out like the
 *	  store of github.com/rbaliyan/ledger (package sqlite).
 *
 * The file is one that the Go library's sqlite.New opens and its Read,
 * Count, Stat and ListStreamIDs read unchanged:
 *
 *	- the table (option "table", default ledger_entries) has exactly the
 *	  columns and types that library creates, plus "seq INTEGER" at the end
 *	  (the Go reader names its columns, so an extra column is invisible);
 *	- id is the PostgreSQL entry id, source_id the same id as text;
 *	- payload is a BLOB holding the JSON text as jsonb prints it;
 *	- metadata and annotations are minified JSON objects, NULL when empty;
 *	  tags a minified JSON array, '[]' when empty;
 *	- created_at/updated_at are UTC text "YYYY-MM-DDTHH:MM:SS.fff"
 *	  (milliseconds, truncated), which is what the Go reader parses;
 *	- the indexes are the library's, with the same names and definitions.
 *
 * Cursor: the row of "<table>_cursors" named 'ledger_sink:' || <sink name>
 * (the library's CursorStore table, so sinks sharing a file, and the
 * library's own bridges, each keep their own), holding the last applied
 * position as decimal text.  The items of a batch and the cursor are
 * written in one IMMEDIATE transaction with synchronous=FULL, so a cursor
 * never claims what the file does not durably hold.
 *
 * Mirroring, never skipping:
 *	- INSERT is an upsert on the primary key that only refreshes the side
 *	  data (tags, annotations, updated_at), and only when every immutable
 *	  column matches: a batch sent again after a crash is harmless, while a
 *	  row with the same id and other content, or a clash on the library's
 *	  unique (stream, dedup_key) or source_id indexes, is a divergence;
 *	- UPDATE overwrites the side data of the entry's row; no row is
 *	  LEDGER_SINK_MISSING (the driver decides whether it was trimmed);
 *	- TRIM deletes the stream's rows with id <= the highest deleted id;
 *	- every batch checks the ids it covers for rows no ledger sink wrote
 *	  (source_id other than the id: the library's own appends);
 *	- the file is identified by device and inode when opened, and checked
 *	  before and after every batch: a file deleted or replaced under the
 *	  sink is a divergence, not a new empty target.
 *
 * Permissions: option file_mode ('0600' default, '0640', '0644').  The
 * file is created with it (the server's umask is defeated with fchmod),
 * and SQLite gives the -wal and -shm files the mode of the database file.
 *
 * Plain C, malloc/free, no server headers: see sink.h.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "sink.h"

#define SQLITE_SINK_DEFAULT_TABLE	"ledger_entries"
#define SQLITE_SINK_MAX_IDENT		63
#define SQLITE_SINK_BUSY_TIMEOUT_MS 5000
#define SQLITE_SINK_CURSOR_PREFIX	"ledger_sink:"
#define SQLITE_SINK_DEFAULT_MODE	0600

#define Min64(a, b) ((a) < (b) ? (a) : (b))

typedef struct SqliteOptions
{
	char	   *table;
	mode_t		file_mode;
} SqliteOptions;

typedef struct SqliteSink
{
	sqlite3    *db;
	char	   *sink_name;
	char	   *path;
	char	   *table;
	char	   *cursor_name;
	char	   *stream_prefix;	/* the pattern without its '*', or the name */
	int			stream_is_prefix;
	int			all_streams;
	dev_t		dev;			/* identity of the file we opened */
	ino_t		ino;
	sqlite3_stmt *begin;
	sqlite3_stmt *commit;
	sqlite3_stmt *rollback;
	sqlite3_stmt *upsert;
	sqlite3_stmt *update;
	sqlite3_stmt *trim;
	sqlite3_stmt *foreign_in_range;
	sqlite3_stmt *foreign_above;
	sqlite3_stmt *scan;
	sqlite3_stmt *set_cursor;
	sqlite3_stmt *get_cursor;
} SqliteSink;

/* Columns the Go library's Read/Append use; all must exist in the table. */
static const char *const required_columns[] = {
	"id", "stream", "payload", "order_key", "dedup_key", "schema_version",
	"metadata", "tags", "annotations", "created_at", "updated_at", NULL
};

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

/* Absolute, no ".." component, not a directory. */
static int
check_path(const char *target, char *err, size_t errlen)
{
	const char *p;

	if (target == NULL || target[0] == '\0')
	{
		sink_set_err(err, errlen, "sqlite sink: target must be an absolute file path, got an empty string");
		return -1;
	}
	if (target[0] != '/')
	{
		sink_set_err(err, errlen, "sqlite sink: target \"%s\" is not an absolute file path", target);
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
			sink_set_err(err, errlen, "sqlite sink: target \"%s\" must not contain a \"..\" path component", target);
			return -1;
		}
		p = end;
	}
	if (target[strlen(target) - 1] == '/')
	{
		sink_set_err(err, errlen, "sqlite sink: target \"%s\" names a directory, not a file", target);
		return -1;
	}
	return 0;
}

/*
 * Parse options_json with SQLite's own JSON functions (in a private
 * in-memory database: nothing is created on disk).
 */
static int
parse_options(const char *options_json, SqliteOptions *o, char *err, size_t errlen)
{
	sqlite3    *mem = NULL;
	sqlite3_stmt *st = NULL;
	int			rc;
	int			result = -1;

	o->table = NULL;
	o->file_mode = SQLITE_SINK_DEFAULT_MODE;
	if (options_json == NULL || options_json[0] == '\0')
		options_json = "{}";

	if (sqlite3_open_v2(":memory:", &mem, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
	{
		sink_set_err(err, errlen, "sqlite sink: cannot parse options: %s",
				mem ? sqlite3_errmsg(mem) : "out of memory");
		goto done;
	}
	rc = sqlite3_prepare_v2(mem, "SELECT json_valid(?1), json_type(?1)", -1, &st, NULL);
	if (rc != SQLITE_OK)
	{
		sink_set_err(err, errlen, "sqlite sink: cannot parse options: %s", sqlite3_errmsg(mem));
		goto done;
	}
	sqlite3_bind_text(st, 1, options_json, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_int(st, 0) != 1 ||
		sqlite3_column_text(st, 1) == NULL ||
		strcmp((const char *) sqlite3_column_text(st, 1), "object") != 0)
	{
		sink_set_err(err, errlen, "sqlite sink: options must be a JSON object");
		goto done;
	}
	sqlite3_finalize(st);
	st = NULL;

	rc = sqlite3_prepare_v2(mem, "SELECT key, type, value FROM json_each(?1)", -1, &st, NULL);
	if (rc != SQLITE_OK)
	{
		sink_set_err(err, errlen, "sqlite sink: cannot parse options: %s", sqlite3_errmsg(mem));
		goto done;
	}
	sqlite3_bind_text(st, 1, options_json, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
	{
		const char *key = (const char *) sqlite3_column_text(st, 0);
		const char *type = (const char *) sqlite3_column_text(st, 1);
		const char *value = (const char *) sqlite3_column_text(st, 2);
		int			is_text = type != NULL && strcmp(type, "text") == 0;

		if (key != NULL && strcmp(key, "table") == 0)
		{
			if (!is_text || !valid_identifier(value))
			{
				sink_set_err(err, errlen,
						"sqlite sink: option \"table\" value \"%.64s\" is not a valid table name (letters, digits and _, not starting with a digit, at most %d characters)",
						value ? value : "null", SQLITE_SINK_MAX_IDENT);
				goto done;
			}
			free(o->table);
			if ((o->table = sink_strdup(value)) == NULL)
			{
				sink_set_err(err, errlen, "sqlite sink: out of memory");
				goto done;
			}
		}
		else if (key != NULL && strcmp(key, "file_mode") == 0)
		{
			if (is_text && strcmp(value, "0600") == 0)
				o->file_mode = 0600;
			else if (is_text && strcmp(value, "0640") == 0)
				o->file_mode = 0640;
			else if (is_text && strcmp(value, "0644") == 0)
				o->file_mode = 0644;
			else
			{
				sink_set_err(err, errlen,
						"sqlite sink: option \"file_mode\" value \"%.16s\" is not one of '0600', '0640' and '0644'",
						value ? value : "null");
				goto done;
			}
		}
		else
		{
			sink_set_err(err, errlen,
					"sqlite sink: unknown option \"%.64s\" (options are \"table\" and \"file_mode\")",
					key ? key : "");
			goto done;
		}
	}
	if (rc != SQLITE_DONE)
	{
		sink_set_err(err, errlen, "sqlite sink: cannot parse options: %s", sqlite3_errmsg(mem));
		goto done;
	}
	if (o->table == NULL && (o->table = sink_strdup(SQLITE_SINK_DEFAULT_TABLE)) == NULL)
	{
		sink_set_err(err, errlen, "sqlite sink: out of memory");
		goto done;
	}
	result = 0;

done:
	if (result != 0)
	{
		free(o->table);
		o->table = NULL;
	}
	if (st != NULL)
		sqlite3_finalize(st);
	if (mem != NULL)
		sqlite3_close(mem);
	return result;
}

static int
sqlite_sink_check(const char *target, const char *options_json, char *err, size_t errlen)
{
	SqliteOptions o;

	if (check_path(target, err, errlen) != 0)
		return -1;
	if (parse_options(options_json, &o, err, errlen) != 0)
		return -1;
	free(o.table);
	return 0;
}

static void
fail_as(LedgerSinkFailure *failure, LedgerSinkErrorKind kind, int index)
{
	if (failure != NULL)
	{
		failure->kind = kind;
		failure->index = index;
	}
}

/* Run statements with no result rows; on error set err. */
static int
exec_sql(SqliteSink *s, const char *sql, const char *what, char *err, size_t errlen)
{
	char	   *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": %s in \"%s\": %s",
				s->sink_name, what, s->path, msg ? msg : sqlite3_errmsg(s->db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static int
prepare(SqliteSink *s, sqlite3_stmt **st, char *sql, char *err, size_t errlen)
{
	int			rc;

	if (sql == NULL)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": out of memory", s->sink_name);
		return -1;
	}
	rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
	sqlite3_free(sql);
	if (rc != SQLITE_OK)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot prepare a statement on \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		return -1;
	}
	return 0;
}

/*
 * Check the columns of an existing table; add source_id and seq when
 * missing (the library itself adds source_id the same way).  Called inside
 * the DDL transaction.
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
		sink_set_err(err, errlen, "sqlite sink \"%s\": out of memory", s->sink_name);
		return -1;
	}
	rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
	sqlite3_free(sql);
	if (rc != SQLITE_OK)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot read the columns of table \"%s\" in \"%s\": %s",
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
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot read the columns of table \"%s\" in \"%s\": %s",
				s->sink_name, s->table, s->path, sqlite3_errmsg(s->db));
		return -1;
	}
	for (i = 0; required_columns[i] != NULL; i++)
	{
		if (!have[i])
		{
			sink_set_err(err, errlen,
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
		sink_set_err(err, errlen, "sqlite sink \"%s\": out of memory", s->sink_name);
		return -1;
	}
	rc = exec_sql(s, sql, "cannot create table", err, errlen);
	sqlite3_free(sql);
	if (rc != 0 || check_columns(s, err, errlen) != 0)
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
		sink_set_err(err, errlen, "sqlite sink \"%s\": out of memory", s->sink_name);
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
	sqlite3_finalize(s->upsert);
	sqlite3_finalize(s->update);
	sqlite3_finalize(s->trim);
	sqlite3_finalize(s->foreign_in_range);
	sqlite3_finalize(s->foreign_above);
	sqlite3_finalize(s->scan);
	sqlite3_finalize(s->set_cursor);
	sqlite3_finalize(s->get_cursor);
	if (s->db != NULL)
		sqlite3_close_v2(s->db);
	free(s->sink_name);
	free(s->path);
	free(s->table);
	free(s->cursor_name);
	free(s->stream_prefix);
	free(s);
}

/*
 * Create the file with mode (the server's umask would narrow it), or give
 * an existing one that mode.  The -wal and -shm files that SQLite creates
 * take the database file's mode; existing ones are set here too.
 */
static int
apply_file_mode(SqliteSink *s, mode_t mode, char *err, size_t errlen)
{
	static const char *const suffixes[] = {"", "-wal", "-shm", NULL};
	int			i;
	int			fd;

	fd = open(s->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd >= 0)
	{
		int			rc = fchmod(fd, mode);

		close(fd);
		if (rc != 0)
		{
			sink_set_err(err, errlen, "sqlite sink \"%s\": cannot set the mode of \"%s\": %s",
					s->sink_name, s->path, strerror(errno));
			return -1;
		}
		return 0;
	}
	if (errno != EEXIST)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot create \"%s\": %s",
				s->sink_name, s->path, strerror(errno));
		return -1;
	}
	for (i = 0; suffixes[i] != NULL; i++)
	{
		char		path[4096];
		struct stat st;

		snprintf(path, sizeof(path), "%s%s", s->path, suffixes[i]);
		if (lstat(path, &st) != 0)
			continue;
		if (!S_ISREG(st.st_mode))
		{
			sink_set_err(err, errlen, "sqlite sink \"%s\": \"%s\" is not a regular file",
					s->sink_name, path);
			return -1;
		}
		if ((st.st_mode & 0777) != mode && chmod(path, mode) != 0)
		{
			sink_set_err(err, errlen, "sqlite sink \"%s\": cannot give \"%s\" mode %04o: %s",
					s->sink_name, path, (unsigned) mode, strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Is the file at our path still the one we opened? */
static int
check_identity(SqliteSink *s, char *err, size_t errlen)
{
	struct stat st;

	if (stat(s->path, &st) != 0)
	{
		sink_set_err(err, errlen,
				"sqlite sink \"%s\": the target file \"%s\" is gone (%s); it was deleted or moved while the sink used it",
				s->sink_name, s->path, strerror(errno));
		return -1;
	}
	if (st.st_dev != s->dev || st.st_ino != s->ino)
	{
		sink_set_err(err, errlen,
				"sqlite sink \"%s\": the target file \"%s\" was replaced by another file while the sink used it",
				s->sink_name, s->path);
		return -1;
	}
	return 0;
}

/* The stream filter of the sink's pattern as SQL (?2 = name or prefix). */
static const char *
stream_clause(SqliteSink *s)
{
	if (s->all_streams)
		return "1";
	if (s->stream_is_prefix)
		return "substr(stream, 1, length(?2)) = ?2";
	return "stream = ?2";
}

static int
prepare_statements(SqliteSink *s, char *err, size_t errlen)
{
	const char *t = s->table;

	if (prepare(s, &s->begin, sqlite3_mprintf("BEGIN IMMEDIATE"), err, errlen) != 0 ||
		prepare(s, &s->commit, sqlite3_mprintf("COMMIT"), err, errlen) != 0 ||
		prepare(s, &s->rollback, sqlite3_mprintf("ROLLBACK"), err, errlen) != 0)
		return -1;

	/*
	 * A row already there is refreshed only when every immutable column
	 * agrees; otherwise nothing changes, and changes() = 0 says so.
	 */
	if (prepare(s, &s->upsert, sqlite3_mprintf(
											   "INSERT INTO %s AS t (id, stream, payload, order_key, dedup_key, schema_version, "
											   "metadata, tags, annotations, source_id, created_at, updated_at, seq) "
											   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, json(?7), json(?8), json(?9), ?10, ?11, ?12, ?13) "
											   "ON CONFLICT (id) DO UPDATE SET tags = excluded.tags, annotations = excluded.annotations, "
											   "updated_at = excluded.updated_at "
											   "WHERE t.stream IS excluded.stream AND t.payload IS excluded.payload "
											   "AND t.order_key IS excluded.order_key AND t.dedup_key IS excluded.dedup_key "
											   "AND t.schema_version IS excluded.schema_version AND t.metadata IS excluded.metadata "
											   "AND t.source_id IS excluded.source_id AND t.created_at IS excluded.created_at "
											   "AND t.seq IS excluded.seq", t), err, errlen) != 0 ||
		prepare(s, &s->update, sqlite3_mprintf(
											   "UPDATE %s SET tags = json(?1), annotations = json(?2), updated_at = ?3 "
											   "WHERE id = ?4 AND source_id = ?5", t), err, errlen) != 0 ||
		prepare(s, &s->trim, sqlite3_mprintf("DELETE FROM %s WHERE stream = ?1 AND id <= ?2", t),
				err, errlen) != 0 ||
		prepare(s, &s->foreign_in_range, sqlite3_mprintf(
														 "SELECT id, source_id FROM %s WHERE id > ?1 AND id <= ?2 "
														 "AND source_id IS NOT CAST(id AS TEXT) ORDER BY id LIMIT 1", t), err, errlen) != 0 ||
		prepare(s, &s->foreign_above, sqlite3_mprintf(
													  "SELECT id, source_id FROM %s WHERE id > ?1 "
													  "AND source_id IS NOT CAST(id AS TEXT) ORDER BY id LIMIT 1", t), err, errlen) != 0 ||
		prepare(s, &s->scan, sqlite3_mprintf(
											 "SELECT id FROM %s WHERE id > ?1 AND %s ORDER BY id LIMIT %d",
											 t, stream_clause(s), LEDGER_SINK_SCAN_MAX), err, errlen) != 0)
		return -1;

	/* The cursor only moves forward, compared as integers. */
	if (prepare(s, &s->set_cursor, sqlite3_mprintf(
												   "INSERT INTO %s_cursors (name, cursor) VALUES (?1, ?2) "
												   "ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor "
												   "WHERE CAST(excluded.cursor AS INTEGER) > CAST(%s_cursors.cursor AS INTEGER)",
												   t, t), err, errlen) != 0 ||
		prepare(s, &s->get_cursor, sqlite3_mprintf("SELECT cursor FROM %s_cursors WHERE name = ?1", t),
				err, errlen) != 0)
		return -1;
	return 0;
}

static void *
sqlite_sink_open(const char *sink_name, const char *target, const char *streams,
				 const char *options_json, char *err, size_t errlen)
{
	SqliteSink *s;
	SqliteOptions o;
	sqlite3_stmt *st = NULL;
	struct stat sb;
	int			rc;
	size_t		slen;

	if (sink_name == NULL)
		sink_name = "";
	if (streams == NULL || streams[0] == '\0')
		streams = "*";
	if (check_path(target, err, errlen) != 0 ||
		parse_options(options_json, &o, err, errlen) != 0)
		return NULL;

	s = calloc(1, sizeof(SqliteSink));
	if (s == NULL)
	{
		free(o.table);
		sink_set_err(err, errlen, "sqlite sink \"%s\": out of memory", sink_name);
		return NULL;
	}
	s->table = o.table;
	s->sink_name = sink_strdup(sink_name);
	s->path = sink_strdup(target);
	s->cursor_name = malloc(strlen(SQLITE_SINK_CURSOR_PREFIX) + strlen(sink_name) + 1);
	slen = strlen(streams);
	s->all_streams = strcmp(streams, "*") == 0;
	s->stream_is_prefix = slen > 0 && streams[slen - 1] == '*';
	s->stream_prefix = sink_strdup(streams);
	if (s->sink_name == NULL || s->path == NULL || s->cursor_name == NULL || s->stream_prefix == NULL)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": out of memory", sink_name);
		sqlite_sink_close(s);
		return NULL;
	}
	if (s->stream_is_prefix)
		s->stream_prefix[slen - 1] = '\0';
	strcpy(s->cursor_name, SQLITE_SINK_CURSOR_PREFIX);
	strcat(s->cursor_name, sink_name);

	if (apply_file_mode(s, o.file_mode, err, errlen) != 0)
	{
		sqlite_sink_close(s);
		return NULL;
	}
	rc = sqlite3_open_v2(target, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot open \"%s\": %s",
				s->sink_name, s->path,
				s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		sqlite_sink_close(s);
		return NULL;
	}
	/* the file SQLite opened, as far as one can tell from outside */
	if (stat(target, &sb) != 0)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot stat \"%s\": %s",
				s->sink_name, s->path, strerror(errno));
		sqlite_sink_close(s);
		return NULL;
	}
	s->dev = sb.st_dev;
	s->ino = sb.st_ino;
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, SQLITE_SINK_BUSY_TIMEOUT_MS);

	/* WAL; the pragma answers with the mode actually in force. */
	rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW || sqlite3_column_text(st, 0) == NULL ||
		strcmp((const char *) sqlite3_column_text(st, 0), "wal") != 0)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot switch \"%s\" to WAL mode: %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		sqlite3_finalize(st);
		sqlite_sink_close(s);
		return NULL;
	}
	sqlite3_finalize(st);

	/*
	 * FULL: a committed cursor is durable, so it never claims lost rows.
	 * A page cache that holds the indexes' working set, and checkpoints
	 * every 40 MB of WAL rather than every 4 MB, keep a backlog's batches
	 * from rereading and rewriting the same pages.
	 */
	if (exec_sql(s, "PRAGMA synchronous=FULL; PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=10000",
				 "cannot set the pragmas", err, errlen) != 0 ||
		create_schema(s, err, errlen) != 0 ||
		prepare_statements(s, err, errlen) != 0)
	{
		sqlite_sink_close(s);
		return NULL;
	}
	return s;
}

static int
sqlite_sink_cursor(void *state, int64_t *cursor, int *present, char *err, size_t errlen)
{
	SqliteSink *s = state;
	int			rc;
	int			result = -1;

	*cursor = 0;
	*present = 0;
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
			sink_set_err(err, errlen, "sqlite sink \"%s\": cursor \"%s\" in table \"%s_cursors\" of \"%s\" holds \"%.32s\", not a position",
					s->sink_name, s->cursor_name, s->table, s->path, txt ? txt : "NULL");
		else
		{
			*cursor = (int64_t) v;
			*present = 1;
			result = 0;
		}
	}
	else if (rc == SQLITE_DONE)
		result = 0;
	else
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot read the cursor from \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
	sqlite3_reset(s->get_cursor);
	sqlite3_clear_bindings(s->get_cursor);
	return result;
}

/* A row above after that no ledger sink wrote: 1 with its id, 0 none, -1 error. */
static int
find_foreign(SqliteSink *s, sqlite3_stmt *st, int64_t after, int64_t upto, int64_t *id,
			 char *err, size_t errlen)
{
	int			rc;
	int			result;

	sqlite3_bind_int64(st, 1, after);
	if (upto > 0)
		sqlite3_bind_int64(st, 2, upto);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
	{
		*id = sqlite3_column_int64(st, 0);
		sink_set_err(err, errlen,
				"sqlite sink \"%s\": the target \"%s\" holds a row with id %" PRId64 " and source_id \"%.32s\" that no ledger sink wrote (somebody else writes to table \"%s\")",
				s->sink_name, s->path, *id,
				sqlite3_column_text(st, 1) ? (const char *) sqlite3_column_text(st, 1) : "", s->table);
		result = 1;
	}
	else if (rc == SQLITE_DONE)
		result = 0;
	else
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot read \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		result = -1;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return result;
}

static int
sqlite_sink_scan(void *state, int64_t after, int64_t *ids, int *n,
				 LedgerSinkFailure *failure, char *err, size_t errlen)
{
	SqliteSink *s = state;
	int64_t		foreign;
	int			rc;

	*n = 0;
	if (check_identity(s, err, errlen) != 0)
	{
		fail_as(failure, LEDGER_SINK_DIVERGED, -1);
		return -1;
	}
	rc = find_foreign(s, s->foreign_above, after, 0, &foreign, err, errlen);
	if (rc != 0)
	{
		fail_as(failure, rc > 0 ? LEDGER_SINK_DIVERGED : LEDGER_SINK_TRANSIENT, -1);
		return -1;
	}
	sqlite3_bind_int64(s->scan, 1, after);
	if (!s->all_streams)
		sqlite3_bind_text(s->scan, 2, s->stream_prefix, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(s->scan)) == SQLITE_ROW && *n < LEDGER_SINK_SCAN_MAX)
		ids[(*n)++] = sqlite3_column_int64(s->scan, 0);
	sqlite3_reset(s->scan);
	sqlite3_clear_bindings(s->scan);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot read \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		fail_as(failure, LEDGER_SINK_TRANSIENT, -1);
		return -1;
	}
	return 0;
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
step_done(sqlite3_stmt *st)
{
	int			rc = sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc;
}

static int
apply_insert(SqliteSink *s, const LedgerExportRow *r, char *err, size_t errlen,
			 LedgerSinkErrorKind *kind)
{
	sqlite3_stmt *st = s->upsert;
	const char *payload = r->payload_json ? r->payload_json : "null";
	char		created[80];
	char		updated[80];
	char		idtxt[24];
	int			rc;

	if (format_timestamp(r->created_at_us, created, sizeof(created)) != 0 ||
		(r->has_updated_at && format_timestamp(r->updated_at_us, updated, sizeof(updated)) != 0))
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": entry %" PRId64 " has a timestamp out of range",
				s->sink_name, r->id);
		*kind = LEDGER_SINK_DIVERGED;
		return -1;
	}
	snprintf(idtxt, sizeof(idtxt), "%" PRId64, r->id);
	sqlite3_bind_int64(st, 1, r->id);
	sqlite3_bind_text(st, 2, r->stream ? r->stream : "", -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 3, payload, (int) strlen(payload), SQLITE_STATIC);
	sqlite3_bind_text(st, 4, r->order_key ? r->order_key : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, r->dedup_key ? r->dedup_key : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 6, r->schema_version);
	if (!json_object_is_empty(r->metadata_json))
		sqlite3_bind_text(st, 7, r->metadata_json, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, r->tags_json && r->tags_json[0] ? r->tags_json : "[]", -1, SQLITE_STATIC);
	if (!json_object_is_empty(r->annotations_json))
		sqlite3_bind_text(st, 9, r->annotations_json, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 10, idtxt, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 11, created, -1, SQLITE_TRANSIENT);
	if (r->has_updated_at)
		sqlite3_bind_text(st, 12, updated, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 13, r->seq);

	rc = step_done(st);
	if (rc == SQLITE_DONE && sqlite3_changes(s->db) == 1)
		return 0;
	if (rc == SQLITE_DONE)
	{
		sink_set_err(err, errlen,
				"sqlite sink \"%s\": entry %" PRId64 " of stream \"%.64s\": the target \"%s\" already holds a different row with id %" PRId64,
				s->sink_name, r->id, r->stream ? r->stream : "", s->path, r->id);
		*kind = LEDGER_SINK_DIVERGED;
	}
	else if ((rc & 0xff) == SQLITE_CONSTRAINT)
	{
		sink_set_err(err, errlen,
				"sqlite sink \"%s\": entry %" PRId64 " of stream \"%.64s\": the target \"%s\" holds another row with the same dedup_key or source_id (%s)",
				s->sink_name, r->id, r->stream ? r->stream : "", s->path, sqlite3_errmsg(s->db));
		*kind = LEDGER_SINK_DIVERGED;
	}
	else
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot write entry %" PRId64 " into \"%s\": %s",
				s->sink_name, r->id, s->path, sqlite3_errmsg(s->db));
		*kind = LEDGER_SINK_TRANSIENT;
	}
	return -1;
}

static int
apply_update(SqliteSink *s, const LedgerExportRow *r, char *err, size_t errlen,
			 LedgerSinkErrorKind *kind)
{
	sqlite3_stmt *st = s->update;
	char		updated[80];
	char		idtxt[24];
	int			rc;

	if (r->has_updated_at && format_timestamp(r->updated_at_us, updated, sizeof(updated)) != 0)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": entry %" PRId64 " has a timestamp out of range",
				s->sink_name, r->id);
		*kind = LEDGER_SINK_DIVERGED;
		return -1;
	}
	snprintf(idtxt, sizeof(idtxt), "%" PRId64, r->id);
	sqlite3_bind_text(st, 1, r->tags_json && r->tags_json[0] ? r->tags_json : "[]", -1, SQLITE_STATIC);
	if (!json_object_is_empty(r->annotations_json))
		sqlite3_bind_text(st, 2, r->annotations_json, -1, SQLITE_STATIC);
	if (r->has_updated_at)
		sqlite3_bind_text(st, 3, updated, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 4, r->id);
	sqlite3_bind_text(st, 5, idtxt, -1, SQLITE_TRANSIENT);
	rc = step_done(st);
	if (rc != SQLITE_DONE)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot update entry %" PRId64 " in \"%s\": %s",
				s->sink_name, r->id, s->path, sqlite3_errmsg(s->db));
		*kind = LEDGER_SINK_TRANSIENT;
		return -1;
	}
	if (sqlite3_changes(s->db) == 0)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": entry %" PRId64 " of stream \"%.64s\" is missing from the target \"%s\"",
				s->sink_name, r->id, r->stream ? r->stream : "", s->path);
		*kind = LEDGER_SINK_MISSING;
		return -1;
	}
	return 0;
}

static int
sqlite_sink_apply(void *state, const LedgerExportRow *rows, int n,
				  LedgerSinkFailure *failure, char *err, size_t errlen)
{
	SqliteSink *s = state;
	LedgerSinkErrorKind kind = LEDGER_SINK_TRANSIENT;
	char		postxt[24];
	int64_t		foreign;
	int			i;
	int			rc;

	fail_as(failure, LEDGER_SINK_TRANSIENT, -1);
	if (n <= 0)
		return 0;
	if (check_identity(s, err, errlen) != 0)
	{
		fail_as(failure, LEDGER_SINK_DIVERGED, -1);
		return -1;
	}
	if (step_done(s->begin) != SQLITE_DONE)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot begin a transaction on \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		return -1;
	}
	for (i = 0; i < n; i++)
	{
		const LedgerExportRow *r = &rows[i];

		switch (r->op)
		{
			case LEDGER_EXPORT_INSERT:
				rc = apply_insert(s, r, err, errlen, &kind);
				break;
			case LEDGER_EXPORT_UPDATE:
				rc = apply_update(s, r, err, errlen, &kind);
				break;
			case LEDGER_EXPORT_TRIM:
				sqlite3_bind_text(s->trim, 1, r->stream ? r->stream : "", -1, SQLITE_STATIC);
				sqlite3_bind_int64(s->trim, 2, r->id);
				rc = step_done(s->trim) == SQLITE_DONE ? 0 : -1;
				if (rc != 0)
					sink_set_err(err, errlen, "sqlite sink \"%s\": cannot trim stream \"%.64s\" in \"%s\": %s",
							s->sink_name, r->stream ? r->stream : "", s->path, sqlite3_errmsg(s->db));
				break;
			default:
				sink_set_err(err, errlen, "sqlite sink \"%s\": unknown item kind %d", s->sink_name, (int) r->op);
				rc = -1;
				break;
		}
		if (rc != 0)
		{
			fail_as(failure, kind, i);
			goto fail;
		}
	}

	/* rows of others among the ids from the cursor to this batch's end */
	{
		int64_t		from;
		int			present;

		if (sqlite_sink_cursor(s, &from, &present, err, errlen) != 0)
			goto fail;
		rc = find_foreign(s, s->foreign_in_range, Min64(from, rows[0].position - 1),
						  rows[n - 1].position, &foreign, err, errlen);
	}
	if (rc != 0)
	{
		fail_as(failure, rc > 0 ? LEDGER_SINK_DIVERGED : LEDGER_SINK_TRANSIENT, -1);
		goto fail;
	}

	snprintf(postxt, sizeof(postxt), "%" PRId64, rows[n - 1].position);
	sqlite3_bind_text(s->set_cursor, 1, s->cursor_name, -1, SQLITE_STATIC);
	sqlite3_bind_text(s->set_cursor, 2, postxt, -1, SQLITE_TRANSIENT);
	if (step_done(s->set_cursor) != SQLITE_DONE)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot update the cursor in \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		goto fail;
	}
	if (step_done(s->commit) != SQLITE_DONE)
	{
		sink_set_err(err, errlen, "sqlite sink \"%s\": cannot commit to \"%s\": %s",
				s->sink_name, s->path, sqlite3_errmsg(s->db));
		goto fail;
	}
	/* committed into the file we opened: is that still the target? */
	if (check_identity(s, err, errlen) != 0)
	{
		fail_as(failure, LEDGER_SINK_DIVERGED, -1);
		return -1;
	}
	return 0;

fail:
	if (!sqlite3_get_autocommit(s->db))
		(void) step_done(s->rollback);
	return -1;
}

const LedgerSinkOps ledger_sqlite_sink_ops = {
	.kind = "sqlite",
	.check = sqlite_sink_check,
	.open = sqlite_sink_open,
	.cursor = sqlite_sink_cursor,
	.scan = sqlite_sink_scan,
	.apply = sqlite_sink_apply,
	.close = sqlite_sink_close,
};
