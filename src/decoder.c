/*-------------------------------------------------------------------------
 *
 * src/decoder.c
 *		Logical decoding output plugin: one JSON line per appended entry,
 *		tag change, annotation change and trim, in commit order.
 *
 * ledger.so doubles as an output plugin:
 *
 *		SELECT pg_create_logical_replication_slot('s', 'ledger');
 *		pg_recvlogical --slot s --start -f - [-o option=value ...]
 *
 * Every line is one JSON object with a "kind" field.  The lines of one
 * transaction are written together, in the order the changes were made.
 * Nothing is written for rolled-back (sub)transactions, for ledger's
 * bookkeeping tables, for the row DELETEs a trim does, or for relations
 * outside schema "ledger".  README.md (Logical decoding) has the format with examples;
 * in short (format version 2, the default):
 *
 *	begin	 {"kind":"begin","xid":N,"lsn":L,"commit_time":T}
 *	entry	 {"kind":"entry",H,"id":N,"stream":S,"seq":N,"payload":{…},
 *			  "order_key":S,"dedup_key":S,"schema_version":N,"metadata":{…},
 *			  "tags":[…],"annotations":{…},"created_at":T,"updated_at":T|null}
 *	tags	 {"kind":"tags",H,"id":N,"stream":S,"tags":[…],"updated_at":T}
 *	annotations
 *			 {"kind":"annotations",H,"id":N,"stream":S,"annotations":{…},
 *			  "updated_at":T}
 *	trim	 {"kind":"trim",H,"stream":S,"before_id":N,"deleted":N}
 *	commit	 {"kind":"commit","xid":N,"lsn":L,"commit_time":T,"changes":N}
 *
 * H is "xid":N,"lsn":L and, with include-timestamp, "commit_time":T.
 * begin and commit lines come only with include-transaction, and only for
 * transactions that wrote at least one other line.  T is always
 * "YYYY-MM-DDTHH:MM:SS.ffffff+00:00", whatever the session's TimeZone.
 *
 * Positions.  A transaction is re-sent after a reconnect unless the
 * position the consumer confirmed (or asked to start from) lies past the
 * start of its commit record.  So a transaction's last line (the commit
 * line, or without framing its last change line) carries the end of the
 * commit record as "lsn", and every other line the start of that record:
 * confirming any line's lsn after handling it resumes after the last whole
 * transaction handled, and re-sends one that was cut off in the middle.
 * The last line is only known at commit, so without framing each line is
 * held back until the next one (or the commit) arrives.  The same position
 * goes into the replication protocol's header of each line (psycopg2's
 * data_start, pglogrepl's WALStart, what pg_recvlogical confirms), which
 * otherwise would be the change's own record: lower than the previous
 * transaction's end, so confirming it would move the slot backwards.
 *
 * Format version 1 is what ledger 0.1 wrote, kept for consumers that pin
 * it: kinds entry, trim and (with include-annotations) annotate, every
 * "lsn" the start of the commit record, entry lines without annotations and
 * updated_at, timestamps as to_json() prints them, no framing, and the
 * protocol positions left as the core sets them.
 *
 * Options (pg_logical_slot_get_changes(..., 'name', 'value') or
 * pg_recvlogical -o name=value); an unknown option or a bad value is an
 * error (22023):
 *
 *	streams				a stream pattern, checked and matched by src/pattern.c
 *						like every SQL function's; default every stream
 *	include-transaction	bool, default off: begin and commit lines (version 2)
 *	include-annotations	bool: tags/annotations lines (version 2: default on;
 *						version 1: annotate lines, default off)
 *	include-xids		bool, default on: "xid" on change lines
 *	include-lsn			bool, default on: "lsn" on change lines
 *	include-timestamp	bool, default off: "commit_time" on change lines
 *	format-version		1 or 2 (the default)
 *
 * A bool option given without a value (pg_recvlogical -o name) means true.
 *
 * Stream names.  Entries carry a stream_id; src/stream_names.c names it
 * from ledger.stream_names under the historic snapshot, and from the
 * ledger.streams rows that decoded transactions write.  The decoder only
 * tells it when ledger's tables turn out to be other relations than
 * before (the extension was dropped and created again).
 *
 * Authenticity.  pg_logical_emit_message() is executable by PUBLIC, so
 * anyone can write a message under ledger's prefixes.  Only ledger's own
 * functions can change ledger.entries (src/guard.c), so a message is
 * believed only when its transaction changed entries rows just before in
 * the way the message describes, and the values on a tags/annotations line
 * come from the row change, not the message:
 *	- "ledger.trim" needs exactly "deleted" (>= 1) DELETEs of entries rows,
 *	  each with an id <= "before_id", since the transaction's last trim
 *	  message (so a trim that deleted nothing writes no line);
 *	- "ledger.annotate" needs the transaction's last UPDATE of an entries
 *	  row, not yet claimed by an earlier message, to be of the entry the
 *	  message names ("id"); its "op" ("tags" or "annotations") says which
 *	  column the call set.
 * Other messages are skipped unparsed (DEBUG1).  A believed message's text
 * is checked before it is parsed, so that no content can make decoding
 * fail (an ERROR here stalls the slot for good); bad content is skipped
 * with a WARNING.
 *
 * Memory: options and the name cache live in the decoding context; each
 * callback formats in a context reset when it returns; the held line and
 * the pending row update live in a context reset per transaction.  All go
 * with the decoding context, so there is no shutdown callback.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "compat.h"
#include "stream_names.h"

#define LEDGER_MESSAGE_PREFIX		"ledger."
#define LEDGER_TRIM_MESSAGE			"ledger.trim"
#define LEDGER_ANNOTATE_MESSAGE		"ledger.annotate"
#define LEDGER_FORMAT_VERSION		2	/* the default and newest */

/* Which of our relations a change belongs to. */
typedef enum LedgerRelKind
{
	LEDGER_REL_OTHER,
	LEDGER_REL_ENTRIES,
	LEDGER_REL_STREAMS
} LedgerRelKind;

/*
 * The last UPDATE of an entries row in the transaction, waiting for the
 * "ledger.annotate" message that says which call made it.  The JSON texts
 * are NULL when the record did not carry the column (an unchanged TOASTed
 * value: then it is not the column the call set).
 */
typedef struct LedgerRowUpdate
{
	bool		valid;
	int64		id;
	int32		stream_id;
	char	   *tags_json;
	char	   *annotations_json;
	char	   *updated_at_json;
} LedgerRowUpdate;

/* Plugin state, allocated in the decoding context. */
typedef struct LedgerDecodingData
{
	MemoryContext change_context;	/* reset after every callback */
	MemoryContext txn_context;	/* held line, row update; per transaction */
	LedgerStreamNames *names;	/* stream_id -> name (stream_names.c) */
	Oid			entries_relid;	/* ledger.entries the names belong to */
	Oid			streams_relid;	/* ledger.streams next to it */

	/* the transaction being decoded */
	bool		begin_written;
	int64		lines;			/* lines written or held, framing excluded */
	const char *held_kind;		/* kind of the held line, NULL if none */
	StringInfo	held_body;		/* the line after its header, in txn_context */
	int64		pending_deletes;	/* entries DELETEs since the last trim message */
	int64		pending_max_deleted_id;
	LedgerRowUpdate pending_update;

	/* options */
	int			format_version;
	LedgerPattern streams;		/* streams.text NULL: every stream */
	bool		include_transaction;
	bool		include_annotations;
	bool		include_annotations_given;
	bool		include_xids;
	bool		include_lsn;
	bool		include_timestamp;
} LedgerDecodingData;

/* Option table: name, how to parse it, where it goes. */
typedef enum LedgerOptionType
{
	LEDGER_OPTION_BOOL,
	LEDGER_OPTION_ANNOTATIONS,
	LEDGER_OPTION_STREAMS,
	LEDGER_OPTION_FORMAT_VERSION
} LedgerOptionType;

typedef struct LedgerOption
{
	const char *name;
	LedgerOptionType type;
	size_t		offset;			/* into LedgerDecodingData, for bools */
} LedgerOption;

static const LedgerOption ledger_options[] = {
	{"streams", LEDGER_OPTION_STREAMS, 0},
	{"include-transaction", LEDGER_OPTION_BOOL,
	offsetof(LedgerDecodingData, include_transaction)},
	{"include-annotations", LEDGER_OPTION_ANNOTATIONS, 0},
	{"include-xids", LEDGER_OPTION_BOOL,
	offsetof(LedgerDecodingData, include_xids)},
	{"include-lsn", LEDGER_OPTION_BOOL,
	offsetof(LedgerDecodingData, include_lsn)},
	{"include-timestamp", LEDGER_OPTION_BOOL,
	offsetof(LedgerDecodingData, include_timestamp)},
	{"format-version", LEDGER_OPTION_FORMAT_VERSION, 0},
};

/* Columns of ledger.entries on an "entry" line, in this order. */
static const char *const entry_columns[] = {
	"id", "stream_id", "seq", "payload", "order_key", "dedup_key",
	"schema_version", "metadata", "tags", "annotations", "created_at",
	"updated_at", NULL
};

/* Format version 1 (ledger 0.1) had no annotations and updated_at. */
static const char *const entry_columns_v1[] = {
	"id", "stream_id", "seq", "payload", "order_key", "dedup_key",
	"schema_version", "metadata", "tags", "created_at", NULL
};

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

static void decoder_startup(LogicalDecodingContext *ctx,
							OutputPluginOptions *opt, bool is_init);
static void decoder_begin(LogicalDecodingContext *ctx,
						  ReorderBufferTXN *txn);
static void decoder_commit(LogicalDecodingContext *ctx,
						   ReorderBufferTXN *txn, XLogRecPtr commit_lsn);
static void decoder_change(LogicalDecodingContext *ctx,
						   ReorderBufferTXN *txn, Relation relation,
						   ReorderBufferChange *change);
static void decoder_message(LogicalDecodingContext *ctx,
							ReorderBufferTXN *txn, XLogRecPtr message_lsn,
							bool transactional, const char *prefix,
							Size message_size, const char *message);

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = decoder_startup;
	cb->begin_cb = decoder_begin;
	cb->change_cb = decoder_change;
	cb->commit_cb = decoder_commit;
	cb->message_cb = decoder_message;
	/* no shutdown_cb: all memory is in the decoding context's children */
	/* no stream_*_cb: only committed transactions, whole, in commit order */
}

/* ---------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------
 */

static void
decoder_bad_value(DefElem *elem, const char *detail)
{
	const char *value = elem->arg ? strVal(elem->arg) : "";

	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value \"%s\" for ledger decoding option \"%s\"",
					ledger_quote_value(value, strlen(value)), elem->defname),
			 errdetail("%s", detail)));
}

/* A bool option; a missing value means true. */
static bool
decoder_parse_bool(DefElem *elem)
{
	bool		result;

	if (elem->arg == NULL)
		return true;
	if (!parse_bool(strVal(elem->arg), &result))
		decoder_bad_value(elem, "The option takes a boolean value.");
	return result;
}

static void
decoder_parse_option(LedgerDecodingData *data, DefElem *elem)
{
	size_t		i;

	for (i = 0; i < lengthof(ledger_options); i++)
	{
		const LedgerOption *option = &ledger_options[i];
		const char *value = elem->arg ? strVal(elem->arg) : "";

		if (strcmp(elem->defname, option->name) != 0)
			continue;

		switch (option->type)
		{
			case LEDGER_OPTION_BOOL:
				*(bool *) ((char *) data + option->offset) =
					decoder_parse_bool(elem);
				break;
			case LEDGER_OPTION_ANNOTATIONS:
				data->include_annotations = decoder_parse_bool(elem);
				data->include_annotations_given = true;
				break;
			case LEDGER_OPTION_STREAMS:
				/* the SQL functions' rules, and their very messages */
				ledger_pattern_parse(value, strlen(value), "streams pattern",
									 &data->streams);
				break;
			case LEDGER_OPTION_FORMAT_VERSION:
				if (strcmp(value, "1") == 0)
					data->format_version = 1;
				else if (strcmp(value, "2") == 0)
					data->format_version = 2;
				else
					decoder_bad_value(elem,
									  "Supported format versions are 1 (ledger 0.1's) and 2.");
				break;
		}
		return;
	}

	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unrecognized ledger decoding option \"%s\"",
					ledger_quote_value(elem->defname, strlen(elem->defname))),
			 errhint("Valid options are streams, include-transaction, include-annotations, include-xids, include-lsn, include-timestamp and format-version.")));
}

static void
decoder_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt,
				bool is_init)
{
	LedgerDecodingData *data;
	MemoryContext oldcxt;
	ListCell   *lc;

	data = MemoryContextAllocZero(ctx->context, sizeof(LedgerDecodingData));
	data->change_context = AllocSetContextCreate(ctx->context,
												 "ledger decoder change",
												 ALLOCSET_DEFAULT_SIZES);
	data->txn_context = AllocSetContextCreate(ctx->context,
											  "ledger decoder transaction",
											  ALLOCSET_DEFAULT_SIZES);
	data->names = ledger_stream_names_create(ctx->context);

	data->format_version = LEDGER_FORMAT_VERSION;
	data->include_xids = true;
	data->include_lsn = true;

	ctx->output_plugin_private = data;
	opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;

	oldcxt = MemoryContextSwitchTo(ctx->context);
	foreach(lc, ctx->output_plugin_options)
		decoder_parse_option(data, (DefElem *) lfirst(lc));
	MemoryContextSwitchTo(oldcxt);

	if (!data->include_annotations_given)
		data->include_annotations = (data->format_version >= 2);
	if (data->include_transaction && data->format_version < 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ledger decoding option \"include-transaction\" needs format-version 2"),
				 errdetail("Format version 1 is the output of ledger 0.1, which has no begin and commit lines.")));
	/* '*' alone matches every stream: no need to look at names */
	if (data->streams.text != NULL && data->streams.is_prefix &&
		data->streams.prefix_len == 0)
		data->streams.text = NULL;
}

static bool
decoder_stream_wanted(LedgerDecodingData *data, const char *name)
{
	if (data->streams.text == NULL)
		return true;
	if (name == NULL)
		return false;
	return ledger_pattern_matches(data->streams.text, name);
}

/* ---------------------------------------------------------------------
 * Stream names
 * ---------------------------------------------------------------------
 */

/* Ledger's tables are these now: names cached for others are void. */
static void
decoder_reset_names(LedgerDecodingData *data, Oid namespace_oid)
{
	ledger_stream_names_reset(data->names, namespace_oid);
	data->entries_relid = get_relname_relid("entries", namespace_oid);
	data->streams_relid = get_relname_relid("streams", namespace_oid);
}

static LedgerRelKind
decoder_relation_kind(LedgerDecodingData *data, Relation relation)
{
	Oid			relid = RelationGetRelid(relation);
	const char *relname;
	char	   *nspname;
	LedgerRelKind kind;

	if (relid == data->entries_relid)
		return LEDGER_REL_ENTRIES;
	if (relid == data->streams_relid)
		return LEDGER_REL_STREAMS;

	relname = RelationGetRelationName(relation);
	if (strcmp(relname, "entries") == 0)
		kind = LEDGER_REL_ENTRIES;
	else if (strcmp(relname, "streams") == 0)
		kind = LEDGER_REL_STREAMS;
	else
		return LEDGER_REL_OTHER;

	nspname = get_namespace_name(RelationGetNamespace(relation));
	if (nspname == NULL || strcmp(nspname, LEDGER_SCHEMA) != 0)
		return LEDGER_REL_OTHER;

	/* first sight of ledger's tables, or of a re-created extension */
	decoder_reset_names(data, RelationGetNamespace(relation));
	return kind;
}

/* A column by name; can't-happen if our own table lacks it. */
static Datum
decoder_column(TupleDesc tupdesc, HeapTuple tuple, const char *name,
			   Oid *typid, bool *isnull)
{
	int			i;

	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped || strcmp(NameStr(att->attname), name) != 0)
			continue;
		*typid = att->atttypid;
		return heap_getattr(tuple, att->attnum, tupdesc, isnull);
	}
	elog(ERROR, "ledger table has no column \"%s\"", name);
	return (Datum) 0;			/* keep compiler quiet */
}

/*
 * The name from a ledger.streams row that a decoded transaction wrote
 * (what names the streams of WAL older than ledger.stream_names, or of a
 * dropped extension's).
 */
static void
decoder_remember_stream(LedgerDecodingData *data, Relation relation,
						HeapTuple tuple)
{
	TupleDesc	tupdesc = RelationGetDescr(relation);
	Datum		id;
	Datum		name;
	bool		id_null;
	bool		name_null;
	Oid			typid;

	id = decoder_column(tupdesc, tuple, "stream_id", &typid, &id_null);
	name = decoder_column(tupdesc, tuple, "name", &typid, &name_null);
	if (id_null || name_null ||
		VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(name)))
		return;
	ledger_stream_names_remember(data->names, DatumGetInt32(id),
								 TextDatumGetCString(name));
}

/* ---------------------------------------------------------------------
 * JSON values
 * ---------------------------------------------------------------------
 */

static void
decoder_append_key(StringInfo out, const char *key)
{
	appendStringInfoChar(out, ',');
	escape_json(out, key);
	appendStringInfoChar(out, ':');
}

/*
 * A timestamp.  Format 2: fixed width, UTC, microseconds, so that lines
 * compare as text and no session setting changes them; years outside
 * 0000..9999 take ISO 8601's expanded form.  Format 1: as 0.1 printed it.
 */
static void
decoder_append_timestamp(LedgerDecodingData *data, StringInfo out,
						 TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;
	char		year[16];

	if (data->format_version < 2)
	{
		escape_json(out, JsonEncodeDateTime(NULL, TimestampTzGetDatum(ts),
											TIMESTAMPTZOID, NULL));
		return;
	}
	if (TIMESTAMP_NOT_FINITE(ts))
	{
		escape_json(out, TIMESTAMP_IS_NOBEGIN(ts) ? "-infinity" : "infinity");
		return;
	}
	/* no time zone argument: the fields come out in UTC */
	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	if (tm.tm_year >= 0 && tm.tm_year <= 9999)
		snprintf(year, sizeof(year), "%04d", tm.tm_year);
	else
		snprintf(year, sizeof(year), "%+05d", tm.tm_year);
	appendStringInfo(out, "\"%s-%02d-%02dT%02d:%02d:%02d.%06d+00:00\"",
					 year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min,
					 tm.tm_sec, (int) fsec);
}

/* One column value as JSON, by type. */
static void
decoder_append_datum(LedgerDecodingData *data, StringInfo out, Datum value,
					 Oid typid, bool isnull)
{
	if (isnull)
	{
		appendStringInfoString(out, "null");
		return;
	}
	if (get_typlen(typid) == -1 &&
		VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value)))
		elog(ERROR, "unexpected unchanged TOAST value in ledger entry");

	switch (typid)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
			{
				Oid			outfunc;
				bool		isvarlena;

				getTypeOutputInfo(typid, &outfunc, &isvarlena);
				appendStringInfoString(out,
									   OidOutputFunctionCall(outfunc, value));
				break;
			}
		case JSONBOID:
			{
				Jsonb	   *jb = DatumGetJsonbP(value);

				JsonbToCString(out, &jb->root, VARSIZE(jb));
				break;
			}
		case TIMESTAMPTZOID:
			decoder_append_timestamp(data, out, DatumGetTimestampTz(value));
			break;
		case TEXTARRAYOID:
			{
				ArrayType  *array = DatumGetArrayTypeP(value);
				Datum	   *elems;
				bool	   *nulls;
				int			nelems;
				int			i;

				deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT,
								  &elems, &nulls, &nelems);
				appendStringInfoChar(out, '[');
				for (i = 0; i < nelems; i++)
				{
					if (i > 0)
						appendStringInfoChar(out, ',');
					if (nulls[i])
						appendStringInfoString(out, "null");
					else
						escape_json(out, TextDatumGetCString(elems[i]));
				}
				appendStringInfoChar(out, ']');
				break;
			}
		default:
			{
				Oid			outfunc;
				bool		isvarlena;

				getTypeOutputInfo(typid, &outfunc, &isvarlena);
				escape_json(out, OidOutputFunctionCall(outfunc, value));
				break;
			}
	}
}

/* A column as JSON text, or NULL when the record does not carry it. */
static char *
decoder_column_json(LedgerDecodingData *data, TupleDesc tupdesc,
					HeapTuple tuple, const char *name)
{
	StringInfoData out;
	Datum		value;
	Oid			typid;
	bool		isnull;

	value = decoder_column(tupdesc, tuple, name, &typid, &isnull);
	if (!isnull && get_typlen(typid) == -1 &&
		VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value)))
		return NULL;
	initStringInfo(&out);
	decoder_append_datum(data, &out, value, typid, isnull);
	return out.data;
}

/* ---------------------------------------------------------------------
 * Lines and positions
 * ---------------------------------------------------------------------
 */

/*
 * Write one line: the kind, the transaction fields, then the body (the
 * rest of the object, closing brace included).  A framing line always
 * carries xid, lsn and commit_time.  With override_position the line's
 * protocol position is "lsn" too (see "Positions" above).
 */
static void
decoder_write_line(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				   const char *kind, const char *body, XLogRecPtr lsn,
				   bool framing, bool override_position)
{
	LedgerDecodingData *data = ctx->output_plugin_private;
	StringInfo	out;

	if (override_position)
		ctx->write_location = lsn;
	OutputPluginPrepareWrite(ctx, true);
	out = ctx->out;

	appendStringInfoString(out, "{\"kind\":");
	escape_json(out, kind);
	if (framing || data->include_xids)
		appendStringInfo(out, ",\"xid\":%u", txn->xid);
	if (framing || data->include_lsn)
		appendStringInfo(out, ",\"lsn\":\"%X/%X\"", LSN_FORMAT_ARGS(lsn));
	if (framing || data->include_timestamp)
	{
		appendStringInfoString(out, ",\"commit_time\":");
		decoder_append_timestamp(data, out, txn->xact_time.commit_time);
	}
	appendStringInfoString(out, body);
	OutputPluginWrite(ctx, true);
}

/* Write the held line; it is the transaction's last unless told otherwise. */
static void
decoder_write_held(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				   bool last)
{
	LedgerDecodingData *data = ctx->output_plugin_private;

	if (data->held_kind == NULL)
		return;
	decoder_write_line(ctx, txn, data->held_kind, data->held_body->data,
					   last ? txn->end_lsn : txn->final_lsn, false, true);
	data->held_kind = NULL;
}

/*
 * Start a line of the given kind and return the buffer its body goes into
 * (after the header; the caller closes the object).  decoder_end_line()
 * finishes it.
 */
static StringInfo
decoder_start_line(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				   const char *kind)
{
	LedgerDecodingData *data = ctx->output_plugin_private;

	if (data->format_version >= 2)
	{
		if (data->include_transaction && !data->begin_written)
		{
			decoder_write_line(ctx, txn, "begin", "}", txn->final_lsn,
							   true, true);
			data->begin_written = true;
		}
		/* the held line was not the last after all */
		decoder_write_held(ctx, txn, false);
	}
	if (data->held_body == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(data->txn_context);

		data->held_body = makeStringInfo();
		MemoryContextSwitchTo(oldcxt);
	}
	resetStringInfo(data->held_body);
	data->held_kind = kind;
	return data->held_body;
}

static void
decoder_end_line(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	LedgerDecodingData *data = ctx->output_plugin_private;

	data->lines++;
	/* format 1: written at once, lsn the commit's start, position untouched */
	if (data->format_version < 2)
	{
		decoder_write_line(ctx, txn, data->held_kind, data->held_body->data,
						   txn->final_lsn, false, false);
		data->held_kind = NULL;
	}
}

static void
decoder_reset_transaction(LedgerDecodingData *data)
{
	MemoryContextReset(data->txn_context);
	data->held_body = NULL;
	data->held_kind = NULL;
	data->begin_written = false;
	data->lines = 0;
	data->pending_deletes = 0;
	data->pending_max_deleted_id = 0;
	memset(&data->pending_update, 0, sizeof(LedgerRowUpdate));
}

static void
decoder_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	decoder_reset_transaction(ctx->output_plugin_private);
}

static void
decoder_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			   XLogRecPtr commit_lsn)
{
	LedgerDecodingData *data = ctx->output_plugin_private;
	MemoryContext oldcxt = MemoryContextSwitchTo(data->change_context);

	if (data->format_version >= 2 && data->lines > 0)
	{
		if (data->include_transaction)
		{
			char		body[64];

			decoder_write_held(ctx, txn, false);
			snprintf(body, sizeof(body), ",\"changes\":" INT64_FORMAT "}",
					 data->lines);
			decoder_write_line(ctx, txn, "commit", body, txn->end_lsn,
							   true, true);
		}
		else
			decoder_write_held(ctx, txn, true);
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->change_context);
	decoder_reset_transaction(data);
}

/* ---------------------------------------------------------------------
 * Row changes
 * ---------------------------------------------------------------------
 */

static void
decoder_write_entry(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					Relation relation, HeapTuple tuple)
{
	LedgerDecodingData *data = ctx->output_plugin_private;
	TupleDesc	tupdesc = RelationGetDescr(relation);
	const char *const *column;
	const char *stream;
	StringInfo	body;
	Datum		value;
	Oid			typid;
	bool		isnull;

	value = decoder_column(tupdesc, tuple, "stream_id", &typid, &isnull);
	stream = isnull ? NULL : ledger_stream_names_get(data->names, DatumGetInt32(value));
	if (!decoder_stream_wanted(data, stream))
		return;

	body = decoder_start_line(ctx, txn, "entry");
	for (column = data->format_version >= 2 ? entry_columns : entry_columns_v1;
		 *column; column++)
	{
		if (strcmp(*column, "stream_id") == 0)
		{
			decoder_append_key(body, "stream");
			if (stream)
				escape_json(body, stream);
			else
				appendStringInfoString(body, "null");
			continue;
		}
		value = decoder_column(tupdesc, tuple, *column, &typid, &isnull);
		decoder_append_key(body, *column);
		decoder_append_datum(data, body, value, typid, isnull);
	}
	appendStringInfoChar(body, '}');
	decoder_end_line(ctx, txn);
}

/* Keep an UPDATE of an entries row until its annotate message says why. */
static void
decoder_remember_update(LedgerDecodingData *data, Relation relation,
						HeapTuple tuple)
{
	TupleDesc	tupdesc = RelationGetDescr(relation);
	LedgerRowUpdate *update = &data->pending_update;
	MemoryContext oldcxt;
	Datum		value;
	Oid			typid;
	bool		id_null;
	bool		stream_null;

	/* the previous update's texts, claimed by a message or not, are done */
	if (update->tags_json)
		pfree(update->tags_json);
	if (update->annotations_json)
		pfree(update->annotations_json);
	if (update->updated_at_json)
		pfree(update->updated_at_json);

	oldcxt = MemoryContextSwitchTo(data->txn_context);
	value = decoder_column(tupdesc, tuple, "id", &typid, &id_null);
	update->id = id_null ? 0 : DatumGetInt64(value);
	value = decoder_column(tupdesc, tuple, "stream_id", &typid, &stream_null);
	update->stream_id = stream_null ? 0 : DatumGetInt32(value);
	update->tags_json = decoder_column_json(data, tupdesc, tuple, "tags");
	update->annotations_json = decoder_column_json(data, tupdesc, tuple,
												   "annotations");
	update->updated_at_json = decoder_column_json(data, tupdesc, tuple,
												  "updated_at");
	update->valid = !id_null && !stream_null;
	MemoryContextSwitchTo(oldcxt);
}

static void
decoder_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			   Relation relation, ReorderBufferChange *change)
{
	LedgerDecodingData *data = ctx->output_plugin_private;
	MemoryContext oldcxt;
	LedgerRelKind kind;
	HeapTuple	tuple;

	oldcxt = MemoryContextSwitchTo(data->change_context);

	kind = decoder_relation_kind(data, relation);
	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			tuple = ledger_change_new_tuple(change);
			if (tuple != NULL && kind == LEDGER_REL_ENTRIES)
				decoder_write_entry(ctx, txn, relation, tuple);
			else if (tuple != NULL && kind == LEDGER_REL_STREAMS)
				decoder_remember_stream(data, relation, tuple);
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			tuple = ledger_change_new_tuple(change);
			if (tuple != NULL && kind == LEDGER_REL_ENTRIES)
				decoder_remember_update(data, relation, tuple);
			else if (tuple != NULL && kind == LEDGER_REL_STREAMS)
				decoder_remember_stream(data, relation, tuple);
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			/* trim/retention: reported by their message */
			tuple = ledger_change_old_tuple(change);
			if (kind == LEDGER_REL_ENTRIES)
			{
				Datum		id = 0;
				Oid			typid;
				bool		isnull = true;

				if (tuple != NULL)
					id = decoder_column(RelationGetDescr(relation), tuple,
										"id", &typid, &isnull);
				data->pending_deletes++;
				/* a DELETE whose key we cannot see vouches for no trim */
				data->pending_max_deleted_id =
					isnull ? PG_INT64_MAX :
					Max(data->pending_max_deleted_id, DatumGetInt64(id));
			}
			break;
		default:
			break;
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->change_context);
}

/* ---------------------------------------------------------------------
 * Messages: trim and annotate
 * ---------------------------------------------------------------------
 */

/*
 * Would jsonb_in accept this valid JSON text without an ERROR?  Refuse
 * what it could choke on: deep nesting (stack depth), numbers with
 * exponents or many digits (numeric range), and \u0000 (not allowed in
 * jsonb).  Our own messages need none of these.
 */
static bool
decoder_message_is_tame(const char *text, Size size)
{
	int			depth = 0;
	int			digits = 0;
	bool		in_string = false;
	Size		i;

	for (i = 0; i < size; i++)
	{
		char		c = text[i];

		if (in_string)
		{
			if (c == '\\' && i + 1 < size)
			{
				if (size - i >= 6 && memcmp(text + i, "\\u0000", 6) == 0)
					return false;
				i++;
			}
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c >= '0' && c <= '9')
		{
			if (++digits > 100)
				return false;
			continue;
		}
		if ((c == 'e' || c == 'E') && digits > 0)
			return false;
		if (c != '.')
			digits = 0;
		if (c == '"')
			in_string = true;
		else if ((c == '{' || c == '[') && ++depth > 32)
			return false;
		else if (c == '}' || c == ']')
			depth--;
	}
	return true;
}

/* A non-negative integer member of a message, or -1. */
static int64
decoder_message_count(JsonbContainer *root, const char *key)
{
	JsonbValue *value;
	char	   *text;
	char	   *end;
	int64		count;

	value = getKeyJsonValueFromContainer(root, key, strlen(key), NULL);
	if (value == NULL || value->type != jbvNumeric)
		return -1;
	text = DatumGetCString(DirectFunctionCall1(numeric_out,
											   NumericGetDatum(value->val.numeric)));
	errno = 0;
	count = strtoi64(text, &end, 10);
	if (errno != 0 || *end != '\0' || count < 0)
		return -1;
	return count;
}

/* A string member of a message as a C string, or NULL. */
static char *
decoder_message_string(JsonbContainer *root, const char *key)
{
	JsonbValue *value;

	value = getKeyJsonValueFromContainer(root, key, strlen(key), NULL);
	if (value == NULL || value->type != jbvString)
		return NULL;
	return pnstrdup(value->val.string.val, value->val.string.len);
}

/* Append a scalar or container JsonbValue as JSON text. */
static void
decoder_append_jsonb_value(StringInfo out, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			appendStringInfoString(out, "null");
			break;
		case jbvString:
			escape_json(out, pnstrdup(v->val.string.val, v->val.string.len));
			break;
		case jbvNumeric:
			appendStringInfoString(out,
								   DatumGetCString(DirectFunctionCall1(numeric_out,
																	   NumericGetDatum(v->val.numeric))));
			break;
		case jbvBool:
			appendStringInfoString(out, v->val.boolean ? "true" : "false");
			break;
		case jbvBinary:
			JsonbToCString(out, v->val.binary.data, v->val.binary.len);
			break;
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
}

/* Append the listed members of a message, in this order, those present. */
static void
decoder_append_members(StringInfo out, JsonbContainer *root,
					   const char *const *keys)
{
	for (; *keys; keys++)
	{
		JsonbValue *found;

		found = getKeyJsonValueFromContainer(root, *keys, strlen(*keys), NULL);
		if (found == NULL)
			continue;
		decoder_append_key(out, *keys);
		decoder_append_jsonb_value(out, found);
	}
	appendStringInfoChar(out, '}');
}

/* The content of a believed message as a jsonb object, or NULL. */
static Jsonb *
decoder_parse_message(const char *kind, const char *content, Size size)
{
	char	   *text = pnstrdup(content, size);
	Jsonb	   *jb;

	if (!decoder_message_is_tame(text, size) ||
		!ledger_json_is_valid(pstrdup(text), (int) size))
	{
		ereport(WARNING,
				(errmsg("ledger decoder skipped a \"%s\" message", kind),
				 errdetail("Its content is not a JSON object ledger could have written.")));
		return NULL;
	}
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	if (!JB_ROOT_IS_OBJECT(jb))
	{
		ereport(WARNING,
				(errmsg("ledger decoder skipped a \"%s\" message", kind),
				 errdetail("Its content is not a JSON object.")));
		return NULL;
	}
	return jb;
}

static void
decoder_skip_unbacked(const char *kind)
{
	ereport(DEBUG1,
			(errmsg("ledger decoder skipped a \"%s\" message", kind),
			 errdetail("Its transaction made no matching change to ledger.entries.")));
}

static void
decoder_trim_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					 const char *content, Size size)
{
	static const char *const trim_keys[] = {"stream", "before_id", "deleted", NULL};
	LedgerDecodingData *data = ctx->output_plugin_private;
	Jsonb	   *jb;
	char	   *stream;

	if (data->pending_deletes == 0)
	{
		decoder_skip_unbacked("trim");
		return;
	}
	jb = decoder_parse_message("trim", content, size);
	if (jb == NULL)
		return;
	if (decoder_message_count(&jb->root, "deleted") != data->pending_deletes ||
		decoder_message_count(&jb->root, "before_id") < data->pending_max_deleted_id)
	{
		ereport(WARNING,
				(errmsg("ledger decoder skipped a \"trim\" message"),
				 errdetail("Its content does not match its transaction's changes to ledger.entries.")));
		return;
	}
	data->pending_deletes = 0;
	data->pending_max_deleted_id = 0;

	stream = decoder_message_string(&jb->root, "stream");
	if (!decoder_stream_wanted(data, stream))
		return;
	decoder_append_members(decoder_start_line(ctx, txn, "trim"), &jb->root,
						   trim_keys);
	decoder_end_line(ctx, txn);
}

/* Format 2: a tags or annotations line from the row update. */
static void
decoder_write_side_data(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						const char *column, const char *stream,
						LedgerRowUpdate *update, JsonbContainer *message)
{
	StringInfo	body;
	const char *value = (strcmp(column, "tags") == 0) ?
		update->tags_json : update->annotations_json;

	body = decoder_start_line(ctx, txn, column);
	appendStringInfo(body, ",\"id\":" INT64_FORMAT, update->id);
	decoder_append_key(body, "stream");
	escape_json(body, stream);
	decoder_append_key(body, column);
	if (value != NULL)
		appendStringInfoString(body, value);
	else
	{
		/* the record left the column out; the message has the value */
		JsonbValue *found = getKeyJsonValueFromContainer(message, column,
														 strlen(column), NULL);

		if (found != NULL)
			decoder_append_jsonb_value(body, found);
		else
			appendStringInfoString(body, "null");
	}
	decoder_append_key(body, "updated_at");
	appendStringInfoString(body, update->updated_at_json);
	appendStringInfoChar(body, '}');
	decoder_end_line(ctx, txn);
}

static void
decoder_annotate_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						 const char *content, Size size)
{
	static const char *const annotate_keys[] = {"stream", "id", "tags",
	"annotations", NULL};
	LedgerDecodingData *data = ctx->output_plugin_private;
	LedgerRowUpdate update = data->pending_update;
	Jsonb	   *jb;
	const char *stream;
	char	   *op;

	if (!update.valid)
	{
		decoder_skip_unbacked("annotate");
		return;
	}
	jb = decoder_parse_message("annotate", content, size);
	if (jb == NULL)
		return;
	if (decoder_message_count(&jb->root, "id") != update.id)
	{
		ereport(WARNING,
				(errmsg("ledger decoder skipped an \"annotate\" message"),
				 errdetail("Its content does not match its transaction's changes to ledger.entries.")));
		return;
	}
	data->pending_update.valid = false;
	if (!data->include_annotations)
		return;

	if (data->format_version < 2)
	{
		char	   *message_stream = decoder_message_string(&jb->root, "stream");

		if (!decoder_stream_wanted(data, message_stream))
			return;
		decoder_append_members(decoder_start_line(ctx, txn, "annotate"),
							   &jb->root, annotate_keys);
		decoder_end_line(ctx, txn);
		return;
	}

	stream = ledger_stream_names_get(data->names, update.stream_id);
	if (stream == NULL || !decoder_stream_wanted(data, stream))
		return;
	op = decoder_message_string(&jb->root, "op");
	/* WAL of ledger 0.1 does not say which call it was: both columns */
	if (op == NULL || strcmp(op, "tags") == 0)
		decoder_write_side_data(ctx, txn, "tags", stream, &update, &jb->root);
	if (op == NULL || strcmp(op, "annotations") == 0)
		decoder_write_side_data(ctx, txn, "annotations", stream, &update,
								&jb->root);
}

static void
decoder_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				XLogRecPtr message_lsn, bool transactional,
				const char *prefix, Size message_size, const char *message)
{
	LedgerDecodingData *data = ctx->output_plugin_private;
	MemoryContext oldcxt;

	/* ours are transactional, so they arrive in commit order */
	if (!transactional || txn == NULL ||
		strncmp(prefix, LEDGER_MESSAGE_PREFIX,
				strlen(LEDGER_MESSAGE_PREFIX)) != 0)
		return;

	oldcxt = MemoryContextSwitchTo(data->change_context);

	if (strcmp(prefix, LEDGER_TRIM_MESSAGE) == 0)
		decoder_trim_message(ctx, txn, message, message_size);
	else if (strcmp(prefix, LEDGER_ANNOTATE_MESSAGE) == 0)
		decoder_annotate_message(ctx, txn, message, message_size);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->change_context);
}
