/*-------------------------------------------------------------------------
 *
 * src/sink_redact.c
 *	  What of a sink target may be shown: redaction of MongoDB URIs, and
 *	  scrubbing of driver messages.
 *
 * A URI is treated as text, because the dangerous ones are exactly those
 * that do not parse the way their author meant: a password holding '?',
 * '/', '@' or ':' unescaped, say.  Redaction errs on the side of hiding:
 *
 *	- userinfo ends at the LAST '@' after "://" (hosts never contain '@', so
 *	  the real end of the userinfo is at or before it); everything after the
 *	  first ':' of the userinfo up to that '@' is the password.  If an '@' in
 *	  an option value is taken for the userinfo's end, more is hidden than
 *	  necessary, never less;
 *	- every "name=value" after a '?', '&' or ';' anywhere in the text whose
 *	  (percent-decoded, case-folded) name contains "password", "secret",
 *	  "token" or "key" has its value hidden (tlsCertificateKeyFilePassword,
 *	  tlsCertificateKeyFile, sslClientCertificateKeyPassword, ...);
 *	- authMechanismProperties=K1:V1,K2:V2 keeps the property names and
 *	  hides every value (AWS_SESSION_TOKEN:***);
 *	- a mongodb target without "://" is hidden whole.
 *
 * Scrubbing: the same secrets, raw and percent-decoded, are overwritten
 * wherever they occur in a driver's error message before it is shown or
 * stored, since drivers like to quote what they could not parse.
 *
 * Plain C, malloc/free, no server headers: see sink.h.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink.h"

#define MASK "***"

/* A growable string; on allocation failure ok becomes 0 and stays so. */
typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	int			ok;
} Buf;

static void
buf_add(Buf *b, const char *s, size_t n)
{
	if (!b->ok)
		return;
	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 64;
		char	   *d;

		while (cap < b->len + n + 1)
			cap *= 2;
		d = realloc(b->data, cap);
		if (d == NULL)
		{
			b->ok = 0;
			return;
		}
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode s[0..n) into a new string (malloc'd, NULL when out of memory). */
static char *
percent_decode(const char *s, size_t n)
{
	char	   *out = malloc(n + 1);
	size_t		i;
	size_t		o = 0;

	if (out == NULL)
		return NULL;
	for (i = 0; i < n; i++)
	{
		if (s[i] == '%' && i + 2 < n &&
			hexval((unsigned char) s[i + 1]) >= 0 && hexval((unsigned char) s[i + 2]) >= 0)
		{
			out[o++] = (char) (hexval((unsigned char) s[i + 1]) * 16 + hexval((unsigned char) s[i + 2]));
			i += 2;
		}
		else
			out[o++] = s[i];
	}
	out[o] = '\0';
	return out;
}

/* Does the option name s[0..n) (percent-decoded, any case) carry a secret? */
static int
secret_option_name(const char *s, size_t n, int *is_mech_props)
{
	static const char *const words[] = {"password", "secret", "token", "key", NULL};
	char	   *name = percent_decode(s, n);
	int			secret = 0;
	int			i;
	char	   *p;

	*is_mech_props = 0;
	if (name == NULL)
		return 1;				/* cannot tell: hide it */
	for (p = name; *p; p++)
		*p = (char) tolower((unsigned char) *p);
	if (strcmp(name, "authmechanismproperties") == 0)
		*is_mech_props = 1;
	for (i = 0; words[i] != NULL && !*is_mech_props; i++)
		if (strstr(name, words[i]) != NULL)
			secret = 1;
	free(name);
	return secret;
}

/*
 * The spans of target that hold secrets, found the way the header
 * describes.  For each span visit() is called with its start and length.
 */
typedef void (*SpanVisitor) (const char *target, size_t start, size_t len, void *arg);

static void
visit_option_value(const char *target, size_t vstart, size_t vlen, int mech_props,
				   SpanVisitor visit, void *arg)
{
	size_t		i;
	size_t		pair_start = vstart;

	if (!mech_props)
	{
		if (vlen > 0)
			visit(target, vstart, vlen, arg);
		return;
	}
	/* K1:V1,K2:V2 -- hide each V (a pair without ':' entirely) */
	for (i = vstart; i <= vstart + vlen; i++)
	{
		if (i == vstart + vlen || target[i] == ',')
		{
			const char *colon = memchr(target + pair_start, ':', i - pair_start);

			if (colon != NULL)
			{
				size_t		v = (size_t) (colon + 1 - target);

				if (i > v)
					visit(target, v, i - v, arg);
			}
			else if (i > pair_start)
				visit(target, pair_start, i - pair_start, arg);
			pair_start = i + 1;
		}
	}
}

/* Returns 0 when target is not a URI at all (no "://"). */
static int
find_secret_spans(const char *target, SpanVisitor visit, void *arg)
{
	const char *scheme = strstr(target, "://");
	const char *auth;
	const char *last_at;
	size_t		len = strlen(target);
	size_t		pw_start = 0;
	size_t		pw_end = 0;
	size_t		i;

	if (scheme == NULL)
		return 0;
	auth = scheme + 3;
	last_at = strrchr(auth, '@');
	if (last_at != NULL)
	{
		const char *colon = memchr(auth, ':', (size_t) (last_at - auth));

		if (colon != NULL)
		{
			pw_start = (size_t) (colon + 1 - target);
			pw_end = (size_t) (last_at - target);
			visit(target, pw_start, pw_end - pw_start, arg);
		}
	}
	/* name=value pairs after any ?, & or ; outside the password */
	for (i = (size_t) (auth - target); i < len; i++)
	{
		size_t		nstart;
		size_t		nend;
		size_t		vend;
		int			mech;

		if (i >= pw_start && i < pw_end)
			continue;
		if (target[i] != '?' && target[i] != '&' && target[i] != ';')
			continue;
		nstart = i + 1;
		nend = nstart;
		while (nend < len && target[nend] != '=' && target[nend] != '&' &&
			   target[nend] != ';' && target[nend] != '?')
			nend++;
		if (nend >= len || target[nend] != '=')
			continue;
		vend = nend + 1;
		while (vend < len && target[vend] != '&' && target[vend] != ';')
			vend++;
		if (secret_option_name(target + nstart, nend - nstart, &mech) || mech)
			visit_option_value(target, nend + 1, vend - (nend + 1), mech, visit, arg);
		i = vend - 1;
	}
	return 1;
}

/* --- redaction ------------------------------------------------------- */

typedef struct Span
{
	size_t		start;
	size_t		len;
} Span;

typedef struct SpanList
{
	Span	   *spans;
	int			n;
	int			cap;
	int			ok;
} SpanList;

static void
collect_span(const char *target, size_t start, size_t len, void *arg)
{
	SpanList   *l = arg;

	if (!l->ok)
		return;
	if (l->n == l->cap)
	{
		int			cap = l->cap ? l->cap * 2 : 8;
		Span	   *s = realloc(l->spans, sizeof(Span) * (size_t) cap);

		if (s == NULL)
		{
			l->ok = 0;
			return;
		}
		l->spans = s;
		l->cap = cap;
	}
	l->spans[l->n].start = start;
	l->spans[l->n].len = len;
	l->n++;
}

static int
span_cmp(const void *a, const void *b)
{
	const Span *x = a;
	const Span *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

char *
ledger_sink_redact_target(const char *kind, const char *target)
{
	SpanList	l = {NULL, 0, 0, 1};
	Buf			out = {NULL, 0, 0, 1};
	size_t		pos = 0;
	int			i;

	if (target == NULL)
		target = "";
	if (kind != NULL && strcmp(kind, "sqlite") == 0)
		return sink_strdup(target);
	if (!find_secret_spans(target, collect_span, &l))
	{
		free(l.spans);
		return sink_strdup(target[0] ? MASK : "");
	}
	if (!l.ok)
	{
		free(l.spans);
		return NULL;
	}
	qsort(l.spans, (size_t) l.n, sizeof(Span), span_cmp);
	buf_add(&out, "", 0);
	for (i = 0; i < l.n; i++)
	{
		if (l.spans[i].start < pos)
			continue;			/* overlaps one hidden already */
		buf_add(&out, target + pos, l.spans[i].start - pos);
		buf_add(&out, MASK, strlen(MASK));
		pos = l.spans[i].start + l.spans[i].len;
	}
	buf_add(&out, target + pos, strlen(target + pos));
	free(l.spans);
	if (!out.ok)
	{
		free(out.data);
		return NULL;
	}
	return out.data;
}

/* --- scrubbing ------------------------------------------------------- */

/*
 * Overwrite every occurrence of secret[0..slen) in msg: with "***" when the
 * secret is at least that long (the rest of the message moves up), else
 * with as many '*'.  msg never grows.
 */
static void
scrub(char *msg, const char *secret, size_t slen)
{
	char	   *p = msg;

	if (slen == 0)
		return;
	while ((p = strstr(p, secret)) != NULL)
	{
		if (slen >= strlen(MASK))
		{
			memcpy(p, MASK, strlen(MASK));
			memmove(p + strlen(MASK), p + slen, strlen(p + slen) + 1);
			p += strlen(MASK);
		}
		else
		{
			memset(p, '*', slen);
			p += slen;
		}
	}
}

static void
scrub_span(const char *target, size_t start, size_t len, void *arg)
{
	char	   *msg = arg;
	char	   *raw;
	char	   *decoded;

	if (len == 0)
		return;
	raw = malloc(len + 1);
	if (raw == NULL)
	{
		msg[0] = '\0';			/* cannot scrub: show nothing */
		return;
	}
	memcpy(raw, target + start, len);
	raw[len] = '\0';
	decoded = percent_decode(raw, len);
	/* the longer one first, so that a decoded prefix cannot hide half of it */
	scrub(msg, raw, len);
	if (decoded == NULL)
		msg[0] = '\0';
	else
	{
		scrub(msg, decoded, strlen(decoded));
		free(decoded);
	}
	free(raw);
}

void
ledger_sink_scrub_message(const char *kind, const char *target, char *msg)
{
	if (msg == NULL || target == NULL || (kind != NULL && strcmp(kind, "sqlite") == 0))
		return;
	if (!find_secret_spans(target, scrub_span, msg) && target[0] != '\0')
		scrub(msg, target, strlen(target));
}
