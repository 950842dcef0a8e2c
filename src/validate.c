/*-------------------------------------------------------------------------
 *
 * src/validate.c
 *		Argument checks: stream names, patterns, flat string objects,
 *		payload size, tags and limits.  Each raises 22023 (or 54000 for an
 *		oversized payload) naming the offending value before anything is
 *		written.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"

/*
 * A printable, length-limited rendering of a user-supplied value for error
 * messages: at most LEDGER_QUOTE_CHARS characters, cut on a character
 * boundary so that the message stays valid UTF-8 (a client in another
 * encoding would otherwise get a conversion error instead of ours), with
 * control characters and bytes that are not UTF-8 shown as \xNN.
 */
#define LEDGER_QUOTE_CHARS 48

char *
ledger_quote_value(const char *s, int len)
{
	StringInfoData buf;
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;
	int			nchars = 0;

	/*
	 * The message is converted to the client's encoding when it is sent; a
	 * character that encoding lacks would turn our error into a conversion
	 * error (22P05), so such clients get non-ASCII characters escaped.
	 */
	bool		ascii_only = pg_get_client_encoding() != PG_UTF8;

	initStringInfo(&buf);
	while (p < end && nchars < LEDGER_QUOTE_CHARS)
	{
		int			l = pg_utf_mblen(p);

		if (*p < 0x20 || *p == 0x7f)
		{
			appendStringInfo(&buf, "\\x%02x", *p);
			l = 1;
		}
		else if (l == 1 && *p < 0x80)
			appendStringInfoChar(&buf, (char) *p);
		else if (p + l > end || !pg_utf8_islegal(p, l))
		{
			appendStringInfo(&buf, "\\x%02x", *p);
			l = 1;
		}
		else if ((l == 2 && p[0] == 0xc2 && p[1] <= 0x9f) || ascii_only)
		{
			/* C1 controls always; any non-ASCII character for a client that may not have it */
			pg_wchar	cp = utf8_to_unicode(p);

			if (cp <= 0xffff)
				appendStringInfo(&buf, "\\u%04x", (unsigned int) cp);
			else
				appendStringInfo(&buf, "\\U%08x", (unsigned int) cp);
		}
		else
			appendBinaryStringInfo(&buf, (const char *) p, l);
		p += l;
		nchars++;
	}
	if (p < end)
		appendStringInfoString(&buf, "...");
	return buf.data;
}

/*
 * Check the bytes of a stream name (or of a pattern's prefix): valid UTF-8,
 * no C0/C1 control characters.  "what" names the argument in messages.
 */
void
ledger_check_name_bytes(const char *s, int len, const char *what)
{
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;

	while (p < end)
	{
		int			l;

		if (*p == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s \"%s\" contains a control character", what,
							ledger_quote_value(s, len))));
		l = pg_utf_mblen(p);
		if (p + l > end || !pg_utf8_islegal(p, l))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s \"%s\" is not valid UTF-8", what,
							ledger_quote_value(s, len))));
		if ((l == 1 && (*p < 0x20 || *p == 0x7f)) ||
			(l == 2 && p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s \"%s\" contains a control character", what,
							ledger_quote_value(s, len)),
					 errdetail("Stream names may not contain control characters.")));
		p += l;
	}
}

/*
 * Validate a stream name and return it as a C string.  A NULL name is the
 * caller's business (the functions are not STRICT so that NULL defaults of
 * other arguments work), so it is rejected here too.
 */
char *
ledger_check_stream_name(text *name)
{
	int			len;

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream name must not be null")));
	len = VARSIZE_ANY_EXHDR(name);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream name must not be empty")));
	if (len > LEDGER_MAX_STREAM_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream name \"%s\" is too long", ledger_quote_value(VARDATA_ANY(name), len)),
				 errdetail("Stream names are at most %d bytes; this one has %d.",
						   LEDGER_MAX_STREAM_BYTES, len)));
	ledger_check_name_bytes(VARDATA_ANY(name), len, "stream name");
	return text_to_cstring(name);
}

/*
 * metadata and annotations are flat JSON objects whose values are strings
 * (annotations may also carry JSON null, meaning "delete this key").
 */
void
ledger_check_string_object(Jsonb *value, const char *argname, bool allow_null_values)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	if (!JB_ROOT_IS_OBJECT(value) || JB_ROOT_IS_SCALAR(value))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object of strings, not %s", argname,
						ledger_jsonb_kind(value)),
				 errdetail("Example: '{\"source\": \"api\"}'.")));

	it = JsonbIteratorInit(&value->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			if (v.type == jbvString)
				continue;
			if (v.type == jbvNull && allow_null_values)
				continue;
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s key \"%s\" must have a string value", argname,
							ledger_quote_value(key, strlen(key))),
					 errdetail("%s must be a flat JSON object whose values are strings%s.",
							   argname, allow_null_values ? " (or null, to delete a key)" : "")));
		}
	}
}

/* Payloads are any JSON value, up to ledger.max_payload_bytes. */
void
ledger_check_payload(Jsonb *payload, int ordinal)
{
	Size		size;

	if (payload == NULL)
	{
		if (ordinal > 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("payload of batch entry %d must not be null", ordinal)));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload must not be null"),
				 errhint("Use the JSON value 'null'::jsonb for an empty payload.")));
	}
	size = VARSIZE_ANY_EXHDR(payload);
	if (size > (Size) ledger_max_payload_bytes)
	{
		if (ordinal > 0)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("payload of batch entry %d is %zu bytes, over ledger.max_payload_bytes (%d)",
							ordinal, size, ledger_max_payload_bytes)));
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("payload is %zu bytes, over ledger.max_payload_bytes (%d)",
						size, ledger_max_payload_bytes)));
	}
}

/*
 * What kind of JSON value a jsonb is, for messages that must not paste the
 * value itself (it may be megabytes).
 */
const char *
ledger_jsonb_kind(Jsonb *value)
{
	if (JB_ROOT_IS_SCALAR(value))
	{
		JsonbValue	v;

		if (!JsonbExtractScalar(&value->root, &v))
			return "a scalar";
		switch (v.type)
		{
			case jbvNull:
				return "null";
			case jbvString:
				return "a string";
			case jbvNumeric:
				return "a number";
			case jbvBool:
				return "a boolean";
			default:
				return "a scalar";
		}
	}
	return JB_ROOT_IS_ARRAY(value) ? "an array" : "an object";
}

/*
 * An entry's payload, metadata, tags and annotations together must stay
 * within ledger.max_payload_bytes, so that no field is a way around the
 * limit.  annotations is NULL at append (they start empty).  ordinal names
 * the batch entry (0 for a single append).
 */
void
ledger_check_entry_size(Jsonb *payload, Jsonb *metadata, ArrayType *tags,
						Jsonb *annotations, int ordinal)
{
	Size		size = VARSIZE_ANY_EXHDR(payload);

	if (metadata)
		size += VARSIZE_ANY_EXHDR(metadata);
	if (tags)
		size += VARSIZE_ANY_EXHDR(tags);
	if (annotations)
		size += VARSIZE_ANY_EXHDR(annotations);
	if (size <= (Size) ledger_max_payload_bytes)
		return;
	if (ordinal > 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batch entry %d is %zu bytes, over ledger.max_payload_bytes (%d)",
						ordinal, size, ledger_max_payload_bytes),
				 errdetail("Payload, metadata, tags and annotations count together.")));
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("entry is %zu bytes, over ledger.max_payload_bytes (%d)",
					size, ledger_max_payload_bytes),
			 errdetail("Payload, metadata, tags and annotations count together.")));
}

/* Tags: a one-dimensional text array without NULL elements. */
void
ledger_check_tags(ArrayType *tags, const char *argname)
{
	if (ARR_NDIM(tags) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", argname)));
	if (array_contains_nulls(tags))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not contain null elements", argname)));
}

int32
ledger_check_limit(int32 limit)
{
	if (limit <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("limit must be greater than zero, not %d", limit)));
	return limit;
}

/*
 * A JSON argument of a function that is also declared with text in its
 * place (so that an untyped literal picks that overload): the jsonb
 * argument as is, or the text one parsed.  NULL for SQL NULL.
 */
Jsonb *
ledger_jsonb_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		return NULL;
	if (get_fn_expr_argtype(fcinfo->flinfo, argno) == TEXTOID)
		return DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												  CStringGetDatum(text_to_cstring(PG_GETARG_TEXT_PP(argno)))));
	return PG_GETARG_JSONB_P(argno);
}
