/*-------------------------------------------------------------------------
 *
 * src/sink_bson.c
 *	  JSON text to BSON, by value, for the MongoDB sink.
 *
 * libbson's own JSON reader (bson_init_from_json) reads MongoDB Extended
 * JSON: {"$date": ...}, {"$numberLong": ...}, {"$oid": ...} become the
 * types they name, and numbers it cannot hold are silently changed or
 * refused.  User payloads are data, not Extended JSON, so this file parses
 * the JSON itself and builds the BSON with bson_append_*:
 *
 *	- objects, arrays, strings, true/false and null map to their BSON types;
 *	  keys are copied as they are, whatever they look like;
 *	- a number becomes int32 or int64 when it is integral and in range,
 *	  else a double when the double's shortest printing is the same number
 *	  (0.1 and 2.5 are doubles; 12345678901234567.5 and 0.10000000000000001
 *	  are not), else Decimal128 when it
 *	  has at most 34 significant digits and an exponent Decimal128 can hold
 *	  (1e400, 123456789012345678901234567890); anything else cannot be
 *	  stored exactly and is an error, never a rounded value;
 *	- zero is int32 0.  jsonb has no negative zero (it prints -0.0 as 0.0),
 *	  and a BSON double -0.0 would be a value the log does not hold.
 *
 * The input is what jsonb prints, so it is valid JSON; the parser still
 * checks everything and fails with a message instead of trusting it.
 * Nesting is capped at LEDGER_BSON_MAX_DEPTH (MongoDB itself accepts 100
 * levels of documents).
 *
 * Plain C, malloc/free, no server headers: see sink.h.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

#include "sink.h"

#define LEDGER_BSON_MAX_DEPTH	200
#define DEC128_MAX_DIGITS		34
#define DEC128_MIN_EXPONENT		(-6176)
#define DEC128_MAX_EXPONENT		6111

typedef struct JsonParser
{
	const char *p;
	const char *end;
	char	   *err;
	size_t		errlen;
	char	   *buf;			/* scratch for decoded strings */
	size_t		bufsize;
} JsonParser;

static int	parse_value(JsonParser *js, bson_t *parent, const char *key, int depth);

static int
fail(JsonParser *js, const char *fmt,...)
	__attribute__((format(printf, 2, 3)));

static int
fail(JsonParser *js, const char *fmt,...)
{
	va_list		ap;

	if (js->err != NULL && js->errlen > 0)
	{
		va_start(ap, fmt);
		vsnprintf(js->err, js->errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static void
skip_space(JsonParser *js)
{
	while (js->p < js->end &&
		   (*js->p == ' ' || *js->p == '\t' || *js->p == '\n' || *js->p == '\r'))
		js->p++;
}

static int
buf_reserve(JsonParser *js, size_t need)
{
	char	   *nbuf;
	size_t		nsize;

	if (need <= js->bufsize)
		return 0;
	nsize = js->bufsize ? js->bufsize : 256;
	while (nsize < need)
		nsize *= 2;
	nbuf = realloc(js->buf, nsize);
	if (nbuf == NULL)
		return fail(js, "out of memory");
	js->buf = nbuf;
	js->bufsize = nsize;
	return 0;
}

static int
hex4(const char *s, unsigned *value)
{
	unsigned	v = 0;
	int			i;

	for (i = 0; i < 4; i++)
	{
		int			c = (unsigned char) s[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned) (c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned) (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned) (c - 'A' + 10);
		else
			return -1;
	}
	*value = v;
	return 0;
}

static size_t
put_utf8(char *out, unsigned cp)
{
	if (cp < 0x80)
	{
		out[0] = (char) cp;
		return 1;
	}
	if (cp < 0x800)
	{
		out[0] = (char) (0xC0 | (cp >> 6));
		out[1] = (char) (0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000)
	{
		out[0] = (char) (0xE0 | (cp >> 12));
		out[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char) (0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char) (0xF0 | (cp >> 18));
	out[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char) (0x80 | (cp & 0x3F));
	return 4;
}

/*
 * Parse a JSON string at js->p (at the opening quote) into js->buf, NUL
 * terminated; *len is its length.  A NUL character is refused: BSON keys
 * cannot hold one, and jsonb never prints one.
 */
static int
parse_string(JsonParser *js, size_t *len)
{
	size_t		n = 0;

	js->p++;					/* opening quote */
	for (;;)
	{
		unsigned char c;

		if (js->p >= js->end)
			return fail(js, "unterminated JSON string");
		if (buf_reserve(js, n + 8) != 0)
			return -1;
		c = (unsigned char) *js->p;
		if (c == '"')
		{
			js->p++;
			break;
		}
		if (c < 0x20)
			return fail(js, "control character in a JSON string");
		if (c != '\\')
		{
			js->buf[n++] = (char) c;
			js->p++;
			continue;
		}
		if (js->end - js->p < 2)
			return fail(js, "unterminated JSON string");
		js->p++;
		switch (*js->p)
		{
			case '"':
			case '\\':
			case '/':
				js->buf[n++] = *js->p;
				js->p++;
				break;
			case 'b':
				js->buf[n++] = '\b';
				js->p++;
				break;
			case 'f':
				js->buf[n++] = '\f';
				js->p++;
				break;
			case 'n':
				js->buf[n++] = '\n';
				js->p++;
				break;
			case 'r':
				js->buf[n++] = '\r';
				js->p++;
				break;
			case 't':
				js->buf[n++] = '\t';
				js->p++;
				break;
			case 'u':
				{
					unsigned	cp;
					unsigned	lo;

					if (js->end - js->p < 5 || hex4(js->p + 1, &cp) != 0)
						return fail(js, "invalid \\u escape in a JSON string");
					js->p += 5;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						if (js->end - js->p < 6 || js->p[0] != '\\' || js->p[1] != 'u' ||
							hex4(js->p + 2, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
							return fail(js, "unpaired surrogate in a JSON string");
						js->p += 6;
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					}
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
						return fail(js, "unpaired surrogate in a JSON string");
					if (cp == 0)
						return fail(js, "\\u0000 in a JSON string cannot be stored in BSON");
					n += put_utf8(js->buf + n, cp);
					break;
				}
			default:
				return fail(js, "invalid escape in a JSON string");
		}
	}
	js->buf[n] = '\0';
	if (!bson_utf8_validate(js->buf, n, false))
		return fail(js, "a JSON string is not valid UTF-8");
	*len = n;
	return 0;
}

/*
 * A JSON number in normalized form: value = (-1)^negative * digits * 10^exp,
 * digits without leading or trailing zeros ("" for zero).
 */
typedef struct Decimal
{
	int			negative;
	char		digits[64];		/* only numbers with few digits need them */
	int			ndigits;		/* significant digits, may exceed 63 */
	long		exp;
} Decimal;

/*
 * Scan the number at js->p into d; text and textlen give it as written.
 */
static int
scan_number(JsonParser *js, Decimal *d, const char **text, size_t *textlen)
{
	const char *s = js->p;
	const char *int_start;
	const char *int_end;
	const char *frac_start;
	const char *frac_end;
	long		exp10 = 0;
	const char *q;
	long		zeros = 0;		/* zeros seen since the last nonzero digit */
	long		frac_digits;

	memset(d, 0, sizeof(*d));
	if (js->p < js->end && *js->p == '-')
	{
		d->negative = 1;
		js->p++;
	}
	int_start = js->p;
	while (js->p < js->end && isdigit((unsigned char) *js->p))
		js->p++;
	int_end = js->p;
	if (int_end == int_start || (int_end - int_start > 1 && *int_start == '0'))
		return fail(js, "invalid JSON number");
	frac_start = frac_end = int_end;
	if (js->p < js->end && *js->p == '.')
	{
		frac_start = ++js->p;
		while (js->p < js->end && isdigit((unsigned char) *js->p))
			js->p++;
		frac_end = js->p;
		if (frac_end == frac_start)
			return fail(js, "invalid JSON number");
	}
	if (js->p < js->end && (*js->p == 'e' || *js->p == 'E'))
	{
		int			eneg = 0;
		const char *estart;

		js->p++;
		if (js->p < js->end && (*js->p == '+' || *js->p == '-'))
			eneg = (*js->p++ == '-');
		estart = js->p;
		while (js->p < js->end && isdigit((unsigned char) *js->p))
		{
			if (exp10 < 100000000)
				exp10 = exp10 * 10 + (*js->p - '0');
			js->p++;
		}
		if (js->p == estart)
			return fail(js, "invalid JSON number");
		if (eneg)
			exp10 = -exp10;
	}
	*text = s;
	*textlen = (size_t) (js->p - s);

	/*
	 * The digits of the integer and fraction parts in a row, without
	 * leading zeros; trailing zeros go into the exponent.
	 */
	frac_digits = (long) (frac_end - frac_start);
	for (q = int_start; q < frac_end; q++)
	{
		if (q == int_end)
			q = frac_start;
		if (q >= frac_end)
			break;
		if (*q == '0')
		{
			if (d->ndigits > 0)
				zeros++;
			continue;
		}
		for (; zeros > 0; zeros--)
		{
			if (d->ndigits < (int) sizeof(d->digits) - 1)
				d->digits[d->ndigits] = '0';
			d->ndigits++;
		}
		if (d->ndigits < (int) sizeof(d->digits) - 1)
			d->digits[d->ndigits] = *q;
		d->ndigits++;
	}
	if (d->ndigits == 0)
	{
		d->negative = 0;
		return 0;
	}
	d->digits[d->ndigits < (int) sizeof(d->digits) - 1 ? d->ndigits : (int) sizeof(d->digits) - 1] = '\0';
	/* value = digits * 10^(exp10 - frac_digits + trailing zeros) */
	d->exp = exp10 - frac_digits + zeros;
	return 0;
}

/* Is s, printed by "%.*e", the normalized decimal d? */
static int
printed_equals(const char *buf, const Decimal *d)
{
	const char *p;
	char		digits[32];
	int			n = 0;
	long		e;
	char	   *endp;

	for (p = buf; *p && *p != 'e'; p++)
		if (isdigit((unsigned char) *p) && n < (int) sizeof(digits))
			digits[n++] = *p;
	if (*p != 'e')
		return 0;
	errno = 0;
	e = strtol(p + 1, &endp, 10);
	if (errno != 0)
		return 0;
	/* buf is D.DDDe<e>: value = DDDD * 10^(e - (n - 1)); strip zeros */
	e -= n - 1;
	while (n > 0 && digits[n - 1] == '0')
	{
		n--;
		e++;
	}
	return n == d->ndigits && memcmp(digits, d->digits, (size_t) n) == 0 && e == d->exp;
}

/*
 * Is the double x the one whose shortest round-trip printing is d?  Then a
 * reader sees the very number the log holds.  A decimal of up to 15
 * significant digits is the shortest printing of its double (DBL_DIG); one
 * of 16 or 17 must also have no shorter printing that reads back as x
 * (0.10000000000000001 reads as the double that prints as 0.1).
 */
static int
double_is_exact(double x, const Decimal *d)
{
	char		buf[64];
	int			p;

	if (!isfinite(x) || x == 0.0 || d->ndigits > 17)
		return 0;
	snprintf(buf, sizeof(buf), "%.*e", d->ndigits - 1, fabs(x));
	if (!printed_equals(buf, d))
		return 0;
	for (p = 1; d->ndigits > 15 && p < d->ndigits; p++)
	{
		snprintf(buf, sizeof(buf), "%.*e", p - 1, fabs(x));
		if (strtod(buf, NULL) == fabs(x))
			return 0;
	}
	return 1;
}

static int
append_number(JsonParser *js, bson_t *parent, const char *key)
{
	Decimal		d;
	const char *text = NULL;
	size_t		textlen = 0;
	char		tmp[400];

	if (scan_number(js, &d, &text, &textlen) != 0)
		return -1;

	if (d.ndigits == 0)
		return bson_append_int32(parent, key, -1, 0) ? 0 : fail(js, "document too large");

	/* integral and within int64: int32 or int64 */
	if (d.exp >= 0 && d.ndigits + d.exp <= 19)
	{
		uint64_t	v = 0;
		int			i;
		int			overflow = 0;

		for (i = 0; i < d.ndigits + d.exp; i++)
		{
			int			digit = i < d.ndigits ? d.digits[i] - '0' : 0;

			if (v > (UINT64_MAX - (uint64_t) digit) / 10)
				overflow = 1;
			v = v * 10 + (uint64_t) digit;
		}
		if (!overflow && (d.negative ? v <= (uint64_t) INT64_MAX + 1 : v <= (uint64_t) INT64_MAX))
		{
			int64_t		sv = d.negative ? (int64_t) (0 - v) : (int64_t) v;
			bool		ok;

			if (sv >= INT32_MIN && sv <= INT32_MAX)
				ok = bson_append_int32(parent, key, -1, (int32_t) sv);
			else
				ok = bson_append_int64(parent, key, -1, sv);
			return ok ? 0 : fail(js, "document too large");
		}
	}

	/* a double, when it prints back as this very number */
	if (d.ndigits <= 17 && textlen < sizeof(tmp))
	{
		double		x;

		memcpy(tmp, text, textlen);
		tmp[textlen] = '\0';
		x = strtod(tmp, NULL);
		if (double_is_exact(x, &d))
			return bson_append_double(parent, key, -1, x) ? 0 : fail(js, "document too large");
	}

	/* Decimal128, exactly */
	if (d.ndigits <= DEC128_MAX_DIGITS && d.exp >= DEC128_MIN_EXPONENT &&
		d.exp + d.ndigits - 1 <= DEC128_MAX_EXPONENT + DEC128_MAX_DIGITS - 1)
	{
		bson_decimal128_t dec;
		long		exp = d.exp;
		char		coeff[DEC128_MAX_DIGITS + 1];
		int			n = d.ndigits;

		/* a large exponent is brought into range with trailing zeros */
		memcpy(coeff, d.digits, (size_t) n);
		while (exp > DEC128_MAX_EXPONENT && n < DEC128_MAX_DIGITS)
		{
			coeff[n++] = '0';
			exp--;
		}
		coeff[n] = '\0';
		if (exp <= DEC128_MAX_EXPONENT)
		{
			snprintf(tmp, sizeof(tmp), "%s%sE%ld", d.negative ? "-" : "", coeff, exp);
			if (bson_decimal128_from_string(tmp, &dec))
				return bson_append_decimal128(parent, key, -1, &dec) ? 0 : fail(js, "document too large");
		}
	}
	return fail(js, "the number %.*s%s cannot be stored exactly in BSON (more than %d significant digits or out of Decimal128's range)",
				(int) (textlen > 40 ? 40 : textlen), text, textlen > 40 ? "..." : "",
				DEC128_MAX_DIGITS);
}

static int
expect_word(JsonParser *js, const char *word)
{
	size_t		len = strlen(word);

	if ((size_t) (js->end - js->p) < len || memcmp(js->p, word, len) != 0)
		return fail(js, "invalid JSON literal");
	js->p += len;
	return 0;
}

static int
parse_object(JsonParser *js, bson_t *parent, const char *key, int depth)
{
	bson_t		child;
	int			first = 1;

	if (!bson_append_document_begin(parent, key, -1, &child))
		return fail(js, "document too large");
	js->p++;					/* { */
	for (;;)
	{
		char	   *name;
		size_t		len;
		int			rc;

		skip_space(js);
		if (js->p < js->end && *js->p == '}' && first)
		{
			js->p++;
			break;
		}
		if (js->p >= js->end || *js->p != '"')
			return fail(js, "expected a key in a JSON object");
		if (parse_string(js, &len) != 0)
			return -1;
		/* the scratch buffer is reused by the value: keep the key apart */
		name = malloc(len + 1);
		if (name == NULL)
			return fail(js, "out of memory");
		memcpy(name, js->buf, len + 1);
		skip_space(js);
		if (js->p >= js->end || *js->p != ':')
		{
			free(name);
			return fail(js, "expected ':' in a JSON object");
		}
		js->p++;
		rc = parse_value(js, &child, name, depth + 1);
		free(name);
		if (rc != 0)
			return -1;
		first = 0;
		skip_space(js);
		if (js->p < js->end && *js->p == ',')
		{
			js->p++;
			continue;
		}
		if (js->p < js->end && *js->p == '}')
		{
			js->p++;
			break;
		}
		return fail(js, "expected ',' or '}' in a JSON object");
	}
	return bson_append_document_end(parent, &child) ? 0 : fail(js, "document too large");
}

static int
parse_array(JsonParser *js, bson_t *parent, const char *key, int depth)
{
	bson_t		child;
	uint32_t	i = 0;

	if (!bson_append_array_begin(parent, key, -1, &child))
		return fail(js, "document too large");
	js->p++;					/* [ */
	skip_space(js);
	if (js->p < js->end && *js->p == ']')
		js->p++;
	else
	{
		for (;;)
		{
			char		keybuf[16];
			const char *ikey;

			bson_uint32_to_string(i++, &ikey, keybuf, sizeof(keybuf));
			if (parse_value(js, &child, ikey, depth + 1) != 0)
				return -1;
			skip_space(js);
			if (js->p < js->end && *js->p == ',')
			{
				js->p++;
				continue;
			}
			if (js->p < js->end && *js->p == ']')
			{
				js->p++;
				break;
			}
			return fail(js, "expected ',' or ']' in a JSON array");
		}
	}
	return bson_append_array_end(parent, &child) ? 0 : fail(js, "document too large");
}

static int
parse_value(JsonParser *js, bson_t *parent, const char *key, int depth)
{
	if (depth > LEDGER_BSON_MAX_DEPTH)
		return fail(js, "JSON nested deeper than %d levels", LEDGER_BSON_MAX_DEPTH);
	skip_space(js);
	if (js->p >= js->end)
		return fail(js, "unexpected end of JSON");
	switch (*js->p)
	{
		case '{':
			return parse_object(js, parent, key, depth);
		case '[':
			return parse_array(js, parent, key, depth);
		case '"':
			{
				size_t		len;

				if (parse_string(js, &len) != 0)
					return -1;
				return bson_append_utf8(parent, key, -1, js->buf, (int) len) ? 0 :
					fail(js, "document too large");
			}
		case 't':
			if (expect_word(js, "true") != 0)
				return -1;
			return bson_append_bool(parent, key, -1, true) ? 0 : fail(js, "document too large");
		case 'f':
			if (expect_word(js, "false") != 0)
				return -1;
			return bson_append_bool(parent, key, -1, false) ? 0 : fail(js, "document too large");
		case 'n':
			if (expect_word(js, "null") != 0)
				return -1;
			return bson_append_null(parent, key, -1) ? 0 : fail(js, "document too large");
		default:
			if (*js->p == '-' || isdigit((unsigned char) *js->p))
				return append_number(js, parent, key);
			return fail(js, "invalid JSON value");
	}
}

int
ledger_bson_append_json(bson_t *doc, const char *key, const char *json,
						char *err, size_t errlen)
{
	JsonParser	js;
	int			rc;

	memset(&js, 0, sizeof(js));
	js.p = json ? json : "null";
	js.end = js.p + strlen(js.p);
	js.err = err;
	js.errlen = errlen;
	rc = parse_value(&js, doc, key, 0);
	if (rc == 0)
	{
		skip_space(&js);
		if (js.p != js.end)
			rc = fail(&js, "trailing characters after a JSON value");
	}
	free(js.buf);
	return rc;
}
