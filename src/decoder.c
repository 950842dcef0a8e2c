/*-------------------------------------------------------------------------
 *
 * src/decoder.c
 *		Logical decoding output plugin: one JSON line per entry, trim, annotate.
 *
 * ledger.so doubles as an output plugin:
 *
 *		SELECT pg_create_logical_replication_slot('s', 'ledger');
 *		pg_recvlogical --slot s --start -f - [-o option=value ...]
 *
 * Every line is one JSON object with a "kind" field, written in commit
 * order; the entries of one transaction are written together, in the order
 * they were inserted (ascending id).  Nothing is written for rolled-back
 * (sub)transactions, for changes to ledger.streams or other ledger
 * bookkeeping tables, for the DELETEs done by trim, for tag/annotation
 * UPDATEs, or for any relation outside schema "ledger".
 *
 *	kind "entry" (one per row inserted into ledger.entries):
 *		{"kind":"entry","xid":N,"lsn":"X/X","id":N,"stream":"…","seq":N,
 *		 "payload":{…},"order_key":"…","dedup_key":"…","schema_version":N,
 *		 "metadata":{…},"tags":[…],"created_at":"…"}
 *	kind "trim" (one per ledger.trim() call or retention pass, from the
 *	transactional logical message with prefix "ledger.trim"):
 *		{"kind":"trim","xid":N,"lsn":"X/X","stream":"…","before_id":N,
 *		 "deleted":N}
 *	kind "annotate" (only with include-annotations, from the transactional
 *	logical message with prefix "ledger.annotate"):
 *		{"kind":"annotate","xid":N,"lsn":"X/X","stream":"…","id":N,
 *		 "tags":[…],"annotations":{…}}
 *
 * "xid" is the top-level transaction id, "lsn" the commit record's LSN;
 * with include-timestamp a "commit_time" follows "lsn".  Message lines carry
 * the message's keys in the order shown, then any other top-level keys the
 * core adds later.  Payloads, metadata and annotations are printed as stored
 * (jsonb text output, never upcast); timestamps use the ISO 8601 form of
 * to_json(timestamptz) in the session time zone.  The format version is not
 * repeated on every line: a consumer pins it with the format-version option.
 *
 * Options (pg_logical_slot_get_changes(..., 'name', 'value') or
 * pg_recvlogical -o name=value); an unknown option is an error:
 *
 *	streams				exact stream name, or a prefix ending in '*'
 *						('orders-*'; '*' alone means every stream).
 *						Default: every stream.  Applies to all kinds.
 *	include-annotations	bool, default false: emit "annotate" lines.
 *	include-xids		bool, default true: emit "xid".
 *	include-lsn			bool, default true: emit "lsn".
 *	include-timestamp	bool, default false: emit "commit_time".
 *	format-version		only '1' (the default) is accepted.
 *
 * A bool option given without a value (pg_recvlogical -o name) means true.
 *
 * Stream names: entries carry only a stream_id.  Every transaction that
 * appends first inserts or updates its stream's ledger.streams row, and with
 * wal_level = logical that row's new version is in the WAL in full, so the
 * plugin keeps a stream_id -> name cache fed by those changes.  A decoded
 * transaction is always complete, so the row is seen before the entries.
 *
 * Message authenticity: pg_logical_emit_message() is executable by PUBLIC,
 * so anyone could write a "ledger.trim" message.  Only ledger's own code can
 * change ledger.entries, so a message is believed only when its transaction
 * made the matching changes to ledger.entries before it: a trim message
 * needs exactly "deleted" (>= 1) DELETEs of entries rows since the
 * transaction's previous trim message, an annotate message at least one
 * UPDATE of an entries row since the previous annotate message.  Others are
 * skipped unparsed (DEBUG1).  So a trim that deleted nothing writes no line:
 * it cannot be told from a forged one.  The content of a believed message
 * is checked before it is parsed, so that no content can make decoding fail;
 * bad content is skipped with a WARNING.
 *
 * Memory: options and the name cache live in the decoding context; each
 * change is formatted in a per-change context that is reset afterwards.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#define LEDGER_SCHEMA				"ledger"
#define LEDGER_MESSAGE_PREFIX		"ledger."
#define LEDGER_TRIM_MESSAGE			"ledger.trim"
#define LEDGER_ANNOTATE_MESSAGE		"ledger.annotate"
#define LEDGER_FORMAT_VERSION		1
#define LEDGER_MAX_STREAM_NAME		255

/* Which of our relations a change belongs to. */
typedef enum LedgerRelKind
{
	LEDGER_REL_OTHER,
	LEDGER_REL_ENTRIES,
	LEDGER_REL_STREAMS
} LedgerRelKind;

/* Plugin state, allocated in the decoding context. */
typedef struct LedgerDecodingData
{
	MemoryContext change_context;	/* reset after every change/message */
	MemoryContext cache_context;	/* holds stream_names' strings */
	HTAB	   *stream_names;	/* stream_id -> name */

	/* changes to ledger.entries in this transaction not yet vouched for */
	int64		pending_deletes;	/* since the last trim message */
	int64		pending_updates;	/* since the last annotate message */

	/* options */
	bool		include_xids;
	bool		include_lsn;
	bool		include_timestamp;
	bool		include_annotations;
	int			format_version;
	char	   *streams;		/* pattern without trailing '*'; NULL = all */
	bool		streams_prefix; /* pattern ended in '*' */
} LedgerDecodingData;

typedef struct LedgerStreamName
{
	int32		stream_id;		/* hash key */
	char	   *name;			/* in cache_context */
} LedgerStreamName;

/* Option table: name, how to parse it, where it goes. */
typedef enum LedgerOptionType
{
	LEDGER_OPTION_BOOL,
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
	{"include-annotations", LEDGER_OPTION_BOOL,
	offsetof(LedgerDecodingData, include_annotations)},
	{"include-xids", LEDGER_OPTION_BOOL,
	offsetof(LedgerDecodingData, include_xids)},
	{"include-lsn", LEDGER_OPTION_BOOL,
	offsetof(LedgerDecodingData, include_lsn)},
	{"include-timestamp", LEDGER_OPTION_BOOL,
	offsetof(LedgerDecodingData, include_timestamp)},
	{"format-version", LEDGER_OPTION_FORMAT_VERSION, 0},
};

/* Columns of ledger.entries printed on an "entry" line, in this order. */
static const char *const entry_columns[] = {
	"id", "stream_id", "seq", "payload", "order_key", "dedup_key",
	"schema_version", "metadata", "tags", "created_at"
};

/* Keys printed first, in this order, for each message kind. */
static const char *const trim_keys[] = {"stream", "before_id", "deleted", NULL};
static const char *const annotate_keys[] = {"stream", "id", "tags",
"annotations", NULL};

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

static void decoder_startup(LogicalDecodingContext *ctx,
							OutputPluginOptions *opt, bool is_init);
static void decoder_shutdown(LogicalDecodingContext *ctx);
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

/*
 * Version differences.  PostgreSQL 17 made the change tuples plain
 * HeapTuples and gave makeJsonLexContextCstringLen a leading argument.
 */
static inline HeapTuple
decoder_new_tuple(ReorderBufferChange *change)
{
#if PG_VERSION_NUM >= 170000
	return change->data.tp.newtuple;
#else
	return change->data.tp.newtuple ? &change->data.tp.newtuple->tuple : NULL;
#endif
}

static inline bool
decoder_json_is_valid(char *text, int len)
{
	JsonLexContext *lex;

#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, text, len,
									   GetDatabaseEncoding(), true);
#else
	lex = makeJsonLexContextCstringLen(text, len, GetDatabaseEncoding(), true);
#endif
	return pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS;
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = decoder_startup;
	cb->begin_cb = decoder_begin;
	cb->change_cb = decoder_change;
	cb->commit_cb = decoder_commit;
	cb->message_cb = decoder_message;
	cb->shutdown_cb = decoder_shutdown;
	/* no stream_*_cb: only committed transactions, whole, in commit order */
}

/*
 * Parse one bool option; a missing value means true.
 */
static bool
decoder_parse_bool(DefElem *elem)
{
	bool		result;

	if (elem->arg == NULL)
		return true;
	if (!parse_bool(strVal(elem->arg), &result))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for ledger decoding option \"%s\"",
						strVal(elem->arg), elem->defname),
				 errdetail("The option takes a boolean value.")));
	return result;
}

static void
decoder_parse_streams(LedgerDecodingData *data, DefElem *elem)
{
	const char *value = elem->arg ? strVal(elem->arg) : "";
	size_t		len = strlen(value);
	const char *p;

	if (len == 0 || len > LEDGER_MAX_STREAM_NAME + 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for ledger decoding option \"%s\"",
						value, elem->defname),
				 errdetail("A stream pattern is 1 to %d bytes long.",
						   LEDGER_MAX_STREAM_NAME),
				 errhint("Give an exact stream name or a prefix ending in \"*\", such as \"orders-*\".")));
	for (p = value; *p; p++)
	{
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value \"%s\" for ledger decoding option \"%s\"",
							value, elem->defname),
					 errdetail("Stream names contain no control characters.")));
	}

	data->streams_prefix = (value[len - 1] == '*');
	if (data->streams_prefix)
		len--;
	else if (len > LEDGER_MAX_STREAM_NAME)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for ledger decoding option \"%s\"",
						value, elem->defname),
				 errdetail("A stream name is at most %d bytes long.",
						   LEDGER_MAX_STREAM_NAME)));

	if (data->streams_prefix && len == 0)
		data->streams = NULL;	/* '*' matches everything */
	else
		data->streams = pnstrdup(value, len);
}

static void
decoder_parse_option(LedgerDecodingData *data, DefElem *elem)
{
	size_t		i;

	for (i = 0; i < lengthof(ledger_options); i++)
	{
		const LedgerOption *option = &ledger_options[i];

		if (strcmp(elem->defname, option->name) != 0)
			continue;

		switch (option->type)
		{
			case LEDGER_OPTION_BOOL:
				*(bool *) ((char *) data + option->offset) =
					decoder_parse_bool(elem);
				break;
			case LEDGER_OPTION_STREAMS:
				decoder_parse_streams(data, elem);
				break;
			case LEDGER_OPTION_FORMAT_VERSION:
				if (elem->arg == NULL ||
					strcmp(strVal(elem->arg), "1") != 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid value \"%s\" for ledger decoding option \"%s\"",
									elem->arg ? strVal(elem->arg) : "",
									elem->defname),
							 errdetail("The only supported format version is %d.",
									   LEDGER_FORMAT_VERSION)));
				data->format_version = LEDGER_FORMAT_VERSION;
				break;
		}
		return;
	}

	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unrecognized ledger decoding option \"%s\"",
					elem->defname),
			 errhint("Valid options are streams, include-annotations, include-xids, include-lsn, include-timestamp and format-version.")));
}

static void
decoder_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt,
				bool is_init)
{
	LedgerDecodingData *data;
	HASHCTL		hctl;
	ListCell   *lc;

	data = MemoryContextAllocZero(ctx->context, sizeof(LedgerDecodingData));
	data->change_context = AllocSetContextCreate(ctx->context,
												 "ledger decoder change",
												 ALLOCSET_DEFAULT_SIZES);
	data->cache_context = AllocSetContextCreate(ctx->context,
												"ledger decoder stream names",
												ALLOCSET_SMALL_SIZES);
	hctl.keysize = sizeof(int32);
	hctl.entrysize = sizeof(LedgerStreamName);
	hctl.hcxt = data->cache_context;
	data->stream_names = hash_create("ledger decoder stream names", 64, &hctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	data->include_xids = true;
	data->include_lsn = true;
	data->include_timestamp = false;
	data->include_annotations = false;
	data->format_version = LEDGER_FORMAT_VERSION;
	data->streams = NULL;

	ctx->output_plugin_private = data;
	opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;

	foreach(lc, ctx->output_plugin_options)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(ctx->context);

		decoder_parse_option(data, (DefElem *) lfirst(lc));
		MemoryContextSwitchTo(oldcxt);
	}
}

static void
decoder_shutdown(LogicalDecodingContext *ctx)
{
	LedgerDecodingData *data = ctx->output_plugin_private;

	/* everything else goes with the decoding context */
	if (data != NULL)
	{
		MemoryContextDelete(data->change_context);
		MemoryContextDelete(data->cache_context);
		data->stream_names = NULL;
	}
}

/* Nothing is written per transaction; every line says its own xid. */
static void
decoder_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	LedgerDecodingData *data = ctx->output_plugin_private;

	data->pending_deletes = 0;
	data->pending_updates = 0;
}

static void
decoder_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			   XLogRecPtr commit_lsn)
{
}

/*
 * Does the stream name match the streams option?
 */
static bool
decoder_stream_wanted(LedgerDecodingData *data, const char *name)
{
	if (data->streams == NULL)
		return true;
	if (name == NULL)
		return false;
	if (data->streams_prefix)
		return strncmp(name, data->streams, strlen(data->streams)) == 0;
	return strcmp(name, data->streams) == 0;
}

static LedgerRelKind
decoder_relation_kind(Relation relation)
{
	const char *relname = RelationGetRelationName(relation);
	char	   *nspname;
	LedgerRelKind kind;

	if (strcmp(relname, "entries") == 0)
		kind = LEDGER_REL_ENTRIES;
	else if (strcmp(relname, "streams") == 0)
		kind = LEDGER_REL_STREAMS;
	else
		return LEDGER_REL_OTHER;

	nspname = get_namespace_name(RelationGetNamespace(relation));
	if (nspname == NULL || strcmp(nspname, LEDGER_SCHEMA) != 0)
		return LEDGER_REL_OTHER;
	return kind;
}

/*
 * Fetch a column by name; can't-happen if our own table lacks it.
 */
static Datum
decoder_column(Relation relation, HeapTuple tuple, const char *name,
			   Oid *typid, bool *isnull)
{
	TupleDesc	tupdesc = RelationGetDescr(relation);
	int			i;

	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped || strcmp(NameStr(att->attname), name) != 0)
			continue;
		*typid = att->atttypid;
		return heap_getattr(tuple, att->attnum, tupdesc, isnull);
	}
	elog(ERROR, "relation \"%s\" has no column \"%s\"",
		 RelationGetRelationName(relation), name);
	return (Datum) 0;			/* keep compiler quiet */
}

/*
 * Remember the name of a stream from a new ledger.streams row.
 */
static void
decoder_remember_stream(LedgerDecodingData *data, Relation relation,
						HeapTuple tuple)
{
	Datum		id_datum;
	Datum		name_datum;
	bool		id_null;
	bool		name_null;
	Oid			typid;
	int32		stream_id;
	char	   *name;
	LedgerStreamName *entry;
	bool		found;

	id_datum = decoder_column(relation, tuple, "stream_id", &typid, &id_null);
	name_datum = decoder_column(relation, tuple, "name", &typid, &name_null);
	if (id_null || name_null ||
		VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(name_datum)))
		return;

	stream_id = DatumGetInt32(id_datum);
	name = TextDatumGetCString(name_datum);
	entry = hash_search(data->stream_names, &stream_id, HASH_ENTER, &found);
	if (found && strcmp(entry->name, name) == 0)
		return;
	if (found)
		pfree(entry->name);
	entry->name = MemoryContextStrdup(data->cache_context, name);
}

static const char *
decoder_stream_name(LedgerDecodingData *data, int32 stream_id)
{
	LedgerStreamName *entry;

	entry = hash_search(data->stream_names, &stream_id, HASH_FIND, NULL);
	return entry ? entry->name : NULL;
}

/*
 * Append the kind and the transaction fields that open every line.
 */
static void
decoder_open_line(LedgerDecodingData *data, StringInfo out,
				  ReorderBufferTXN *txn, const char *kind)
{
	appendStringInfoString(out, "{\"kind\":");
	escape_json(out, kind);
	if (data->include_xids)
		appendStringInfo(out, ",\"xid\":%u", txn->xid);
	if (data->include_lsn)
	{
		char		lsn[64];

		snprintf(lsn, sizeof(lsn), "%X/%X", LSN_FORMAT_ARGS(txn->final_lsn));
		appendStringInfoString(out, ",\"lsn\":");
		escape_json(out, lsn);
	}
	if (data->include_timestamp)
	{
		appendStringInfoString(out, ",\"commit_time\":");
		escape_json(out,
					JsonEncodeDateTime(NULL,
									   TimestampTzGetDatum(txn->xact_time.commit_time),
									   TIMESTAMPTZOID, NULL));
	}
}

static void
decoder_append_key(StringInfo out, const char *key)
{
	appendStringInfoChar(out, ',');
	escape_json(out, key);
	appendStringInfoChar(out, ':');
}

/*
 * Append one column value as JSON, by type.
 */
static void
decoder_append_datum(StringInfo out, Datum value, Oid typid, bool isnull)
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
			escape_json(out, JsonEncodeDateTime(NULL, value, typid, NULL));
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

/*
 * Write the line for one new ledger.entries row.
 */
static void
decoder_write_entry(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					Relation relation, HeapTuple tuple)
{
	LedgerDecodingData *data = ctx->output_plugin_private;
	const char *stream;
	Datum		value;
	Oid			typid;
	bool		isnull;
	size_t		i;

	value = decoder_column(relation, tuple, "stream_id", &typid, &isnull);
	stream = isnull ? NULL : decoder_stream_name(data, DatumGetInt32(value));
	if (stream == NULL)
		ereport(WARNING,
				(errmsg("ledger decoder has no name for stream_id %s",
						isnull ? "NULL" : psprintf("%d", DatumGetInt32(value))),
				 errdetail("The transaction did not change the stream's row in ledger.streams before appending.")));
	if (!decoder_stream_wanted(data, stream))
		return;

	OutputPluginPrepareWrite(ctx, true);
	decoder_open_line(data, ctx->out, txn, "entry");
	for (i = 0; i < lengthof(entry_columns); i++)
	{
		const char *column = entry_columns[i];

		if (strcmp(column, "stream_id") == 0)
		{
			decoder_append_key(ctx->out, "stream");
			if (stream)
				escape_json(ctx->out, stream);
			else
				appendStringInfoString(ctx->out, "null");
			continue;
		}
		value = decoder_column(relation, tuple, column, &typid, &isnull);
		decoder_append_key(ctx->out, column);
		decoder_append_datum(ctx->out, value, typid, isnull);
	}
	appendStringInfoChar(ctx->out, '}');
	OutputPluginWrite(ctx, true);
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

	kind = decoder_relation_kind(relation);
	tuple = decoder_new_tuple(change);
	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			if (tuple != NULL && kind == LEDGER_REL_ENTRIES)
				decoder_write_entry(ctx, txn, relation, tuple);
			else if (tuple != NULL && kind == LEDGER_REL_STREAMS)
				decoder_remember_stream(data, relation, tuple);
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			/* set_tags/set_annotations: reported by their message */
			if (kind == LEDGER_REL_ENTRIES)
				data->pending_updates++;
			else if (tuple != NULL && kind == LEDGER_REL_STREAMS)
				decoder_remember_stream(data, relation, tuple);
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			/* trim/retention: reported by their message */
			if (kind == LEDGER_REL_ENTRIES)
				data->pending_deletes++;
			break;
		default:
			break;
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->change_context);
}

/*
 * Append a scalar or container JsonbValue as JSON text.
 */
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

static bool
decoder_key_listed(const char *const *keys, const char *key, size_t len)
{
	for (; *keys; keys++)
	{
		if (strlen(*keys) == len && memcmp(*keys, key, len) == 0)
			return true;
	}
	return false;
}

/*
 * Would jsonb_in accept this valid JSON text without an ERROR?  A decoding
 * ERROR is retried forever and stalls the slot, so refuse what it could
 * choke on: deep nesting (stack depth), numbers with exponents or many
 * digits (numeric range), and \u0000 (not allowed in jsonb).  Our own
 * messages need none of these.
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

/*
 * A non-negative integer member of a message, or -1.
 */
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

/*
 * Write one line for a ledger.* message whose content is a JSON object:
 * the listed keys first, in order, then any others.
 */
static void
decoder_write_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					  const char *kind, const char *const *keys,
					  const char *content, Size size)
{
	LedgerDecodingData *data = ctx->output_plugin_private;
	char	   *text = pnstrdup(content, size);
	Jsonb	   *jb;
	JsonbValue	v;
	JsonbValue *stream;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	const char *const *key;
	bool		is_trim = (strcmp(kind, "trim") == 0);

	/*
	 * Believe only messages backed by changes to ledger.entries (see
	 * "Message authenticity" above), and check that before parsing.
	 */
	if ((is_trim && data->pending_deletes == 0) ||
		(!is_trim && data->pending_updates == 0))
	{
		ereport(DEBUG1,
				(errmsg("ledger decoder skipped a \"%s\" message", kind),
				 errdetail("Its transaction made no matching change to ledger.entries.")));
		return;
	}
	if (!decoder_message_is_tame(text, size) ||
		!decoder_json_is_valid(pstrdup(text), (int) size))
	{
		ereport(WARNING,
				(errmsg("ledger decoder skipped a \"%s\" message", kind),
				 errdetail("Its content is not a JSON object ledger could have written.")));
		return;
	}
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	if (!JB_ROOT_IS_OBJECT(jb) ||
		(is_trim &&
		 decoder_message_count(&jb->root, "deleted") != data->pending_deletes))
	{
		ereport(WARNING,
				(errmsg("ledger decoder skipped a \"%s\" message", kind),
				 errdetail("Its content does not match its transaction's changes to ledger.entries.")));
		return;
	}
	if (is_trim)
		data->pending_deletes = 0;
	else
		data->pending_updates = 0;

	stream = getKeyJsonValueFromContainer(&jb->root, "stream", 6, NULL);
	if (data->streams != NULL &&
		(stream == NULL || stream->type != jbvString ||
		 !decoder_stream_wanted(data, pnstrdup(stream->val.string.val,
											   stream->val.string.len))))
		return;

	OutputPluginPrepareWrite(ctx, true);
	decoder_open_line(data, ctx->out, txn, kind);
	for (key = keys; *key; key++)
	{
		JsonbValue *found;

		found = getKeyJsonValueFromContainer(&jb->root, *key, strlen(*key),
											 NULL);
		if (found == NULL)
			continue;
		decoder_append_key(ctx->out, *key);
		decoder_append_jsonb_value(ctx->out, found);
	}

	/* keys the core may add later, in jsonb key order */
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *name;

		if (tok != WJB_KEY)
			continue;
		name = pnstrdup(v.val.string.val, v.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		if (decoder_key_listed(keys, name, strlen(name)))
			continue;
		decoder_append_key(ctx->out, name);
		decoder_append_jsonb_value(ctx->out, &v);
	}
	appendStringInfoChar(ctx->out, '}');
	OutputPluginWrite(ctx, true);
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
		decoder_write_message(ctx, txn, "trim", trim_keys,
							  message, message_size);
	else if (strcmp(prefix, LEDGER_ANNOTATE_MESSAGE) == 0 &&
			 data->include_annotations)
		decoder_write_message(ctx, txn, "annotate", annotate_keys,
							  message, message_size);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->change_context);
}
