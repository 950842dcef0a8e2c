/*-------------------------------------------------------------------------
 *
 * src/upcast.c
 *		Schema versions and upcasters: set_schema_version(),
 *		register_upcaster() (declarative and function forms),
 *		drop_upcaster(), and the read-time chain that turns a stored payload
 *		of one version into another.  Stored payloads are never rewritten.
 *
 * A read resolves the chain once (ledger_upcast_plan: one query over
 * ledger.upcasters, keeping per from_version the step of the longest
 * matching pattern) and then upcasts entry after entry in C without
 * touching a table.  A declarative step applies rename, then defaults, then
 * remove.  A function step runs as the role that registered it, in a
 * security-restricted operation: never with the privileges of the reader,
 * nor of the extension owner that read() runs as.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "compat.h"

PG_FUNCTION_INFO_V1(ledger_set_schema_version);
PG_FUNCTION_INFO_V1(ledger_register_upcaster);
PG_FUNCTION_INFO_V1(ledger_register_upcaster_fn);
PG_FUNCTION_INFO_V1(ledger_drop_upcaster);
PG_FUNCTION_INFO_V1(ledger_upcasters_changed);
PG_FUNCTION_INFO_V1(ledger_invalidate_caches);

typedef struct UpcastStep
{
	int32		from_version;
	int32		to_version;
	/* declarative form */
	int			nrename;
	char	  **rename_from;
	char	  **rename_to;
	Jsonb	   *defaults;
	int			nremove;
	char	  **remove;
	/* function form */
	Oid			fn;
	Oid			registrant;		/* runs as this role; invalid for 0.1.0 rows */
	FmgrInfo	flinfo;
	bool		flinfo_ready;
	/* defaults decoded once per plan (see apply_declarative) */
	struct PairSet *default_pairs;
} UpcastStep;

struct LedgerUpcastPlan
{
	MemoryContext cxt;			/* where the plan and its FmgrInfos live */
	char	   *stream;
	char	   *shown;			/* the stream as messages quote it */
	int32		target;
	bool		explicit_target;
	int			nsteps;
	UpcastStep *steps;			/* sorted by from_version */
};

static char **
string_array(ArrayType *arr, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;
	int			i;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (i = 0; i < *n; i++)
		out[i] = TextDatumGetCString(elems[i]);
	return out;
}

static void
load_rename(Jsonb *rename, UpcastStep *step)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = JB_ROOT_COUNT(rename);
	char	   *key = NULL;

	step->rename_from = palloc(sizeof(char *) * Max(n, 1));
	step->rename_to = palloc(sizeof(char *) * Max(n, 1));
	step->nrename = 0;
	it = JsonbIteratorInit(&rename->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE && v.type == jbvString)
		{
			step->rename_from[step->nrename] = key;
			step->rename_to[step->nrename] = pnstrdup(v.val.string.val, v.val.string.len);
			step->nrename++;
		}
	}
}

/*
 * Two per-backend caches, so that appends and reads resolve versions and
 * upcaster chains without a query: every registration of ledger.upcasters,
 * and the schema versions of ledger.stream_settings.  Whatever changes
 * either table sends a relcache invalidation for it (the functions here
 * directly, and a statement trigger for anything else, pg_restore
 * included); the callback bumps a generation counter, and a cache is valid
 * only while the generation it was loaded at is current -- so a load that
 * fails half-way, or that an invalidation overtakes, is simply done again.
 */
typedef struct CachedUpcaster
{
	char	   *pattern;		/* as registered */
	UpcastStep	step;
} CachedUpcaster;

typedef struct CachedVersion
{
	char	   *pattern;
	int32		version;
} CachedVersion;

static uint64 cache_generation = 1;
static bool callback_registered = false;

static MemoryContext upcaster_cxt = NULL;
static CachedUpcaster *upcasters = NULL;
static int	nupcasters = 0;
static uint64 upcasters_generation = 0;
static Oid	upcasters_relid = InvalidOid;
static bool upcasters_have_registrant = false;

static MemoryContext version_cxt = NULL;
static CachedVersion *versions = NULL;
static int	nversions = 0;
static uint64 versions_generation = 0;
static Oid	settings_relid = InvalidOid;

static void
caches_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == upcasters_relid || relid == settings_relid)
		cache_generation++;
}

static void
register_callback(void)
{
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(caches_invalidate, (Datum) 0);
		callback_registered = true;
	}
}

/* Changes made by this transaction reach every backend at commit. */
static void
invalidate_cache_of(const char *relname)
{
	CacheInvalidateRelcacheByRelid(ledger_relid(relname));
}

static void
load_upcasters(void)
{
	uint64		generation;
	MemoryContext old;
	uint64		r;
	int			rc;

	register_callback();
	AcceptInvalidationMessages();
	generation = cache_generation;
	if (upcasters_generation == generation)
		return;

	if (upcaster_cxt == NULL)
		upcaster_cxt = AllocSetContextCreate(CacheMemoryContext, "ledger upcasters",
											 ALLOCSET_SMALL_SIZES);
	MemoryContextReset(upcaster_cxt);
	upcasters = NULL;
	nupcasters = 0;
	upcasters_generation = 0;

	upcasters_relid = ledger_relid("upcasters");
	/*
	 * A database still at 0.1.0's schema records no registrant: the
	 * function's owner stands in, as ALTER EXTENSION UPDATE records it.
	 */
	upcasters_have_registrant = get_attnum(upcasters_relid, "registered_by") != InvalidAttrNumber;

	ledger_spi_connect();
	rc = SPI_execute(upcasters_have_registrant ?
					 "SELECT streams::pg_catalog.text, from_version, to_version, rename, defaults,"
					 " remove, fn::pg_catalog.oid, registered_by FROM ledger.upcasters" :
					 "SELECT u.streams::pg_catalog.text, u.from_version, u.to_version, u.rename, u.defaults,"
					 " u.remove, u.fn::pg_catalog.oid, p.proowner FROM ledger.upcasters u"
					 " LEFT JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) u.fn::pg_catalog.oid",
					 true, 0);
	ledger_spi_check(rc, SPI_OK_SELECT, "upcaster load");

	old = MemoryContextSwitchTo(upcaster_cxt);
	upcasters = palloc0(sizeof(CachedUpcaster) * Max(SPI_processed, 1));
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		UpcastStep *step = &upcasters[r].step;
		bool		isnull;
		Datum		d;

		upcasters[r].pattern = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		step->from_version = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		step->to_version = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		d = SPI_getbinval(tup, desc, 7, &isnull);
		step->fn = isnull ? InvalidOid : DatumGetObjectId(d);
		d = SPI_getbinval(tup, desc, 8, &isnull);
		step->registrant = isnull ? InvalidOid : DatumGetObjectId(d);
		load_rename(DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 4, &isnull)), step);
		step->defaults = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 5, &isnull));
		step->remove = string_array(DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 6, &isnull)),
									&step->nremove);
	}
	nupcasters = (int) SPI_processed;
	MemoryContextSwitchTo(old);
	SPI_finish();
	/* valid only if no invalidation arrived while we read */
	upcasters_generation = generation;
}

static void
load_versions(void)
{
	uint64		generation;
	MemoryContext old;
	uint64		r;
	int			rc;

	register_callback();
	AcceptInvalidationMessages();
	generation = cache_generation;
	if (versions_generation == generation)
		return;

	if (version_cxt == NULL)
		version_cxt = AllocSetContextCreate(CacheMemoryContext, "ledger schema versions",
											ALLOCSET_SMALL_SIZES);
	MemoryContextReset(version_cxt);
	versions = NULL;
	nversions = 0;
	versions_generation = 0;

	settings_relid = ledger_relid("stream_settings");
	ledger_spi_connect();
	rc = SPI_execute("SELECT pattern::pg_catalog.text, schema_version FROM ledger.stream_settings"
					 " WHERE schema_version IS NOT NULL", true, 0);
	ledger_spi_check(rc, SPI_OK_SELECT, "schema version load");
	old = MemoryContextSwitchTo(version_cxt);
	versions = palloc0(sizeof(CachedVersion) * Max(SPI_processed, 1));
	for (r = 0; r < SPI_processed; r++)
	{
		bool		isnull;

		versions[r].pattern = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[r],
																SPI_tuptable->tupdesc, 1, &isnull));
		versions[r].version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
														  SPI_tuptable->tupdesc, 2, &isnull));
	}
	nversions = (int) SPI_processed;
	MemoryContextSwitchTo(old);
	SPI_finish();
	versions_generation = generation;
}

/*
 * The current schema version of a stream (existing or not): that of the
 * longest pattern matching it in ledger.stream_settings, else 1.  The one
 * place the version is read from; nothing copies it per stream.
 */
int32
ledger_current_version(const char *stream)
{
	int			len = strlen(stream);
	int			best_rank = -1;
	int32		version = 1;
	int			i;

	load_versions();
	for (i = 0; i < nversions; i++)
	{
		int			rank = ledger_pattern_rank(versions[i].pattern, strlen(versions[i].pattern),
											   stream, len);

		if (rank > best_rank)
		{
			best_rank = rank;
			version = versions[i].version;
		}
	}
	return version;
}

/* How well a pattern matches a stream: -1 not at all, higher is better. */
static int
match_rank(const char *pattern, const char *stream)
{
	return ledger_pattern_rank(pattern, strlen(pattern), stream, strlen(stream));
}

/* A copy of a cached step in cxt, so that a reload cannot pull it away. */
static void
copy_step(UpcastStep *dst, const UpcastStep *src, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	int			i;

	*dst = *src;
	dst->flinfo_ready = false;
	dst->default_pairs = NULL;
	dst->rename_from = palloc(sizeof(char *) * Max(src->nrename, 1));
	dst->rename_to = palloc(sizeof(char *) * Max(src->nrename, 1));
	for (i = 0; i < src->nrename; i++)
	{
		dst->rename_from[i] = pstrdup(src->rename_from[i]);
		dst->rename_to[i] = pstrdup(src->rename_to[i]);
	}
	dst->remove = palloc(sizeof(char *) * Max(src->nremove, 1));
	for (i = 0; i < src->nremove; i++)
		dst->remove[i] = pstrdup(src->remove[i]);
	dst->defaults = palloc(VARSIZE(src->defaults));
	memcpy(dst->defaults, src->defaults, VARSIZE(src->defaults));
	MemoryContextSwitchTo(old);
}

/*
 * Resolve the upcasters that apply to a stream: per from_version, the step
 * of the longest matching pattern.  Caller is connected to SPI (needed only
 * when the cache is stale); the plan lives in the caller's memory context.
 */
LedgerUpcastPlan *
ledger_upcast_plan(const char *stream, int32 target_version, bool explicit_target)
{
	MemoryContext callercxt = CurrentMemoryContext;
	LedgerUpcastPlan *up;
	int		   *best;
	int			i,
				j;

	load_upcasters();

	up = MemoryContextAllocZero(callercxt, sizeof(LedgerUpcastPlan));
	up->cxt = callercxt;
	up->stream = MemoryContextStrdup(callercxt, stream);
	up->shown = ledger_quote_value(stream, strlen(stream));
	up->target = target_version;
	up->explicit_target = explicit_target;
	up->steps = MemoryContextAllocZero(callercxt, sizeof(UpcastStep) * Max(nupcasters, 1));
	best = palloc(sizeof(int) * Max(nupcasters, 1));

	for (i = 0; i < nupcasters; i++)
	{
		int			rank = match_rank(upcasters[i].pattern, stream);

		if (rank < 0)
			continue;
		for (j = 0; j < up->nsteps; j++)
			if (up->steps[j].from_version == upcasters[i].step.from_version)
				break;
		if (j < up->nsteps && best[j] >= rank)
			continue;
		copy_step(&up->steps[j], &upcasters[i].step, callercxt);
		best[j] = rank;
		if (j == up->nsteps)
			up->nsteps++;
	}
	pfree(best);
	return up;
}

static UpcastStep *
find_step(LedgerUpcastPlan *up, int32 from_version)
{
	int			i;

	for (i = 0; i < up->nsteps; i++)
		if (up->steps[i].from_version == from_version)
			return &up->steps[i];
	return NULL;
}

/*
 * Declarative steps work on the payload's top-level pairs, decoded once per
 * entry: a chain of such steps renames, adds and drops pairs in place and
 * encodes the result once, however many steps it has.  Values stay in their
 * original binary form (jbvBinary for containers), so nested documents are
 * never re-parsed.
 */
typedef struct Pair
{
	const char *key;
	int			keylen;
	JsonbValue	value;
	bool		dropped;
} Pair;

typedef struct PairSet
{
	Pair	   *pairs;
	int			npairs;
	int			maxpairs;
} PairSet;

static Pair *
find_pair(PairSet *set, const char *key, int keylen)
{
	int			i;

	for (i = 0; i < set->npairs; i++)
	{
		Pair	   *p = &set->pairs[i];

		if (!p->dropped && p->keylen == keylen && memcmp(p->key, key, keylen) == 0)
			return p;
	}
	return NULL;
}

static void
add_pair(PairSet *set, const char *key, int keylen, JsonbValue *value)
{
	if (set->npairs == set->maxpairs)
	{
		set->maxpairs = Max(8, set->maxpairs * 2);
		set->pairs = set->pairs ? repalloc(set->pairs, sizeof(Pair) * set->maxpairs) :
			palloc(sizeof(Pair) * set->maxpairs);
	}
	set->pairs[set->npairs].key = key;
	set->pairs[set->npairs].keylen = keylen;
	set->pairs[set->npairs].value = *value;
	set->pairs[set->npairs].dropped = false;
	set->npairs++;
}

/* Append the top-level pairs of an object container to set. */
static void
decode_pairs(JsonbContainer *container, PairSet *set)
{
	JsonbIterator *it = JsonbIteratorInit(container);
	JsonbValue	v;
	JsonbValue	key;
	JsonbIteratorToken tok;

	memset(&key, 0, sizeof(key));

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = v;
		else if (tok == WJB_VALUE)
			add_pair(set, key.val.string.val, key.val.string.len, &v);
	}
}

static Jsonb *
encode_pairs(PairSet *set)
{
	JsonbParseState *state = NULL;
	JsonbValue *result;
	int			i;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < set->npairs; i++)
	{
		Pair	   *p = &set->pairs[i];
		JsonbValue	k;

		if (p->dropped)
			continue;
		k.type = jbvString;
		k.val.string.val = (char *) p->key;
		k.val.string.len = p->keylen;
		pushJsonbValue(&state, WJB_KEY, &k);
		pushJsonbValue(&state, WJB_VALUE, &p->value);
	}
	result = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(result);
}

/* rename, then defaults, then remove */
static void
apply_declarative(LedgerUpcastPlan *up, UpcastStep *step, PairSet *set)
{
	int			i;

	for (i = 0; i < step->nrename; i++)
	{
		Pair	   *from = find_pair(set, step->rename_from[i], strlen(step->rename_from[i]));
		int			tolen = strlen(step->rename_to[i]);

		if (from == NULL)
			continue;
		/* An existing key of the new name wins; the old key goes. */
		if (find_pair(set, step->rename_to[i], tolen) != NULL)
			from->dropped = true;
		else
		{
			from->key = step->rename_to[i];
			from->keylen = tolen;
		}
	}
	if (step->default_pairs == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(up->cxt);

		step->default_pairs = palloc0(sizeof(PairSet));
		decode_pairs(&step->defaults->root, step->default_pairs);
		MemoryContextSwitchTo(old);
	}
	{
		PairSet    *defaults = step->default_pairs;

		for (i = 0; i < defaults->npairs; i++)
		{
			Pair	   *d = &defaults->pairs[i];

			if (find_pair(set, d->key, d->keylen) == NULL)
				add_pair(set, d->key, d->keylen, &d->value);
		}
	}
	for (i = 0; i < step->nremove; i++)
	{
		Pair	   *p = find_pair(set, step->remove[i], strlen(step->remove[i]));

		if (p != NULL)
			p->dropped = true;
	}
}

typedef struct UpcastErrorContext
{
	LedgerUpcastPlan *up;
	UpcastStep *step;
	int64		entry_id;
} UpcastErrorContext;

static void
upcast_error_callback(void *arg)
{
	UpcastErrorContext *ctx = (UpcastErrorContext *) arg;

	errcontext("upcasting entry " INT64_FORMAT " of stream \"%s\" from version %d to %d with %s",
			   ctx->entry_id, ctx->up->shown, ctx->step->from_version, ctx->step->to_version,
			   format_procedure(ctx->step->fn));
}

/*
 * Run a function step as the role that registered it, inside a
 * security-restricted operation, the way PostgreSQL runs index expressions:
 * the reader lends it no privilege, and it can neither change the session
 * (SET ROLE, temporary objects, ...) nor keep a setting it changed.
 */
static Jsonb *
apply_function(LedgerUpcastPlan *up, UpcastStep *step, Jsonb *payload, int64 entry_id)
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	ErrorContextCallback errcb;
	UpcastErrorContext ctx;
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;

	if (!OidIsValid(step->registrant))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the upcaster function of stream \"%s\" from version %d has no registrant",
						up->shown, step->from_version),
				 errdetail("Function upcasters run as the role that registered them, which ledger 0.1.0 did not record."),
				 errhint("Run ALTER EXTENSION ledger UPDATE.")));
	if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(step->fn)))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("upcaster function of stream \"%s\" from version %d no longer exists",
						up->shown, step->from_version)));
	if (ledger_proc_aclcheck(step->fn, step->registrant, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for upcaster function %s", format_procedure(step->fn)),
				 errdetail("Reading entry " INT64_FORMAT " of stream \"%s\" needs it to upcast from version %d to %d, and the role that registered it may no longer execute it.",
						   entry_id, up->shown, step->from_version, step->to_version),
				 errhint("Upcaster functions run with the privileges of the role that registered them.")));
	if (!step->flinfo_ready)
	{
		fmgr_info_cxt(step->fn, &step->flinfo, up->cxt);
		step->flinfo_ready = true;
	}

	ctx.up = up;
	ctx.step = step;
	ctx.entry_id = entry_id;
	errcb.callback = upcast_error_callback;
	errcb.arg = &ctx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	/* an error unwinds the user switch and the GUC nest level by itself */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(step->registrant,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	InitFunctionCallInfoData(*fcinfo, &step->flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(payload);
	fcinfo->args[0].isnull = false;
	result = FunctionCallInvoke(fcinfo);
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	error_context_stack = errcb.previous;

	if (fcinfo->isnull)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("upcaster function %s returned NULL for entry " INT64_FORMAT " of stream \"%s\"",
						format_procedure(step->fn), entry_id, up->shown),
				 errdetail("Upcasting from version %d to %d must return a JSON object.",
						   step->from_version, step->to_version)));
	{
		Jsonb	   *out = DatumGetJsonbP(result);

		if (!JB_ROOT_IS_OBJECT(out) || JB_ROOT_IS_SCALAR(out))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("upcaster function %s returned a non-object for entry " INT64_FORMAT " of stream \"%s\"",
							format_procedure(step->fn), entry_id, up->shown),
					 errdetail("Upcasting from version %d to %d must return a JSON object, not %s.",
							   step->from_version, step->to_version, ledger_jsonb_kind(out))));
		return out;
	}
}

/*
 * Walk the chain from an entry's version to the plan's target.
 */
Jsonb *
ledger_upcast(LedgerUpcastPlan *up, Jsonb *payload, int32 from_version, int64 entry_id)
{
	int32		version = from_version;
	int			hops = 0;
	PairSet		pairs = {NULL, 0, 0};
	bool		decoded = false;	/* pairs, not payload, hold the current value */

	while (version != up->target)
	{
		UpcastStep *step = find_step(up, version);
		bool		upward = version < up->target;

		if (step == NULL ||
			(upward && (step->to_version < version || step->to_version > up->target)) ||
			(!upward && (step->to_version > version || step->to_version < up->target)))
		{
			if (!upward)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("cannot read entry " INT64_FORMAT " of stream \"%s\" as version %d",
								entry_id, up->shown, up->target),
						 errdetail("The entry has version %d and no upcaster from version %d leads down to %d.",
								   from_version, version, up->target)));
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("missing upcaster for stream \"%s\": entry " INT64_FORMAT " needs a step from version %d towards %d",
							up->shown, entry_id, version, up->target),
					 errdetail("The entry was written with version %d.", from_version),
					 errhint("Register one with ledger.register_upcaster('%s', %d, %d, …).",
							 up->shown, version, version + 1)));
		}
		if (++hops > up->nsteps)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("upcasters of stream \"%s\" form a cycle at version %d", up->shown, version)));

		if (OidIsValid(step->fn))
		{
			if (decoded)
			{
				payload = encode_pairs(&pairs);
				decoded = false;
			}
			payload = apply_function(up, step, payload, entry_id);
		}
		else
		{
			if (!decoded)
			{
				if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("cannot upcast entry " INT64_FORMAT " of stream \"%s\" from version %d to %d: its payload is not a JSON object",
									entry_id, up->shown, step->from_version, step->to_version),
							 errdetail("Declarative upcasters (rename, defaults, remove) apply to object payloads only.")));
				pairs.npairs = 0;
				decode_pairs(&payload->root, &pairs);
				decoded = true;
			}
			apply_declarative(up, step, &pairs);
		}
		version = step->to_version;
	}
	return decoded ? encode_pairs(&pairs) : payload;
}

static void
check_versions(int32 from_version, int32 to_version)
{
	if (from_version < 1 || to_version < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema versions must be at least 1, not %d → %d", from_version, to_version)));
	if (from_version == to_version)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an upcaster must change the version, not map %d to itself", from_version)));
}

/*
 * Insert or replace a registration.  The caller is the registering role
 * (register_upcaster is SECURITY INVOKER); the table belongs to the
 * extension owner, who writes it.
 */
static void
store_upcaster(const char *pattern, int32 from_version, int32 to_version,
			   Datum rename, Datum defaults, Datum remove, bool has_fn, Oid fn)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr legacy_plan = NULL;
	Oid			registrant = GetUserId();
	bool		has_registrant;
	Datum		args[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	LedgerSavedUser saved;
	int			rc;

	has_registrant = get_attnum(ledger_relid("upcasters"), "registered_by") != InvalidAttrNumber;
	ledger_become_owner(&saved);
	ledger_spi_connect();
	if (has_registrant && plan == NULL)
	{
		Oid			types[8] = {TEXTOID, INT4OID, INT4OID, JSONBOID, JSONBOID, TEXTARRAYOID, OIDOID, OIDOID};

		plan = ledger_prepare_plan("INSERT INTO ledger.upcasters AS u (streams, from_version, to_version,"
								   " rename, defaults, remove, fn, registered_by)"
								   " VALUES ($1, $2, $3, $4, $5, $6, $7::pg_catalog.regprocedure, $8)"
								   " ON CONFLICT (streams, from_version) DO UPDATE SET"
								   " to_version = EXCLUDED.to_version, rename = EXCLUDED.rename,"
								   " defaults = EXCLUDED.defaults, remove = EXCLUDED.remove,"
								   " fn = EXCLUDED.fn, registered_by = EXCLUDED.registered_by,"
								   " created_at = pg_catalog.now()",
								   8, types);
	}
	if (!has_registrant && legacy_plan == NULL)
	{
		Oid			types[7] = {TEXTOID, INT4OID, INT4OID, JSONBOID, JSONBOID, TEXTARRAYOID, OIDOID};

		/* a database not yet updated from 0.1.0 has no registered_by */
		legacy_plan = ledger_prepare_plan("INSERT INTO ledger.upcasters AS u (streams, from_version, to_version,"
										  " rename, defaults, remove, fn)"
										  " VALUES ($1, $2, $3, $4, $5, $6, $7::pg_catalog.regprocedure)"
										  " ON CONFLICT (streams, from_version) DO UPDATE SET"
										  " to_version = EXCLUDED.to_version, rename = EXCLUDED.rename,"
										  " defaults = EXCLUDED.defaults, remove = EXCLUDED.remove,"
										  " fn = EXCLUDED.fn, created_at = pg_catalog.now()",
										  7, types);
	}
	args[0] = CStringGetTextDatum(pattern);
	args[1] = Int32GetDatum(from_version);
	args[2] = Int32GetDatum(to_version);
	args[3] = rename;
	args[4] = defaults;
	args[5] = remove;
	args[6] = ObjectIdGetDatum(fn);
	args[7] = ObjectIdGetDatum(registrant);
	if (!has_fn)
		nulls[6] = 'n';
	rc = SPI_execute_plan(has_registrant ? plan : legacy_plan, args, nulls, false, 0);
	ledger_spi_check(rc, SPI_OK_INSERT, "register_upcaster");
	SPI_finish();
	invalidate_cache_of("upcasters");
	ledger_restore_user(&saved);
}

Datum
ledger_register_upcaster(PG_FUNCTION_ARGS)
{
	char	   *pattern;
	bool		is_prefix;
	Jsonb	   *rename;
	Jsonb	   *defaults;
	ArrayType  *remove;

	pattern = ledger_check_pattern(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), &is_prefix);
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_version and to_version must not be null")));
	check_versions(PG_GETARG_INT32(1), PG_GETARG_INT32(2));

	/* also serves the overload taking text, for untyped literals */
	rename = ledger_jsonb_arg(fcinfo, 3);
	defaults = ledger_jsonb_arg(fcinfo, 4);
	remove = PG_ARGISNULL(5) ? construct_empty_array(TEXTOID) : PG_GETARG_ARRAYTYPE_P(5);
	if (rename == NULL)
		rename = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	if (defaults == NULL)
		defaults = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	ledger_check_string_object(rename, "rename", false);
	if (!JB_ROOT_IS_OBJECT(defaults) || JB_ROOT_IS_SCALAR(defaults))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("defaults must be a JSON object, not %s", ledger_jsonb_kind(defaults))));
	ledger_check_tags(remove, "remove");

	store_upcaster(pattern, PG_GETARG_INT32(1), PG_GETARG_INT32(2),
				   PointerGetDatum(rename), PointerGetDatum(defaults), PointerGetDatum(remove),
				   false, InvalidOid);
	PG_RETURN_VOID();
}

Datum
ledger_register_upcaster_fn(PG_FUNCTION_ARGS)
{
	char	   *pattern;
	bool		is_prefix;
	Oid			fn;
	HeapTuple	proctup;
	Form_pg_proc proc;
	bool		ok;
	bool		temporary;

	pattern = ledger_check_pattern(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), &is_prefix);
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_version and to_version must not be null")));
	check_versions(PG_GETARG_INT32(1), PG_GETARG_INT32(2));
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("fn must not be null")));
	fn = PG_GETARG_OID(3);

	proctup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(proctup))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("upcaster function with OID %u does not exist", fn)));
	proc = (Form_pg_proc) GETSTRUCT(proctup);
	ok = proc->pronargs == 1 && proc->proargtypes.values[0] == JSONBOID &&
		proc->prorettype == JSONBOID && !proc->proretset && proc->prokind == PROKIND_FUNCTION;
	temporary = isAnyTempNamespace(proc->pronamespace);
	ReleaseSysCache(proctup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("upcaster function %s must take one jsonb argument and return jsonb",
						format_procedure(fn))));
	/* a temporary function is a session's private code; readers must not run it */
	if (temporary)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("upcaster function %s is in a temporary schema", format_procedure(fn)),
				 errdetail("Upcasters outlive the session that registers them and run in other sessions.")));
	if (ledger_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(fn)),
				 errdetail("An upcaster function runs as the role that registers it, which must be allowed to execute it.")));

	store_upcaster(pattern, PG_GETARG_INT32(1), PG_GETARG_INT32(2),
				   DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")),
				   DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")),
				   PointerGetDatum(construct_empty_array(TEXTOID)),
				   true, fn);
	PG_RETURN_VOID();
}

Datum
ledger_drop_upcaster(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *pattern;
	bool		is_prefix;
	Datum		args[2];
	int			rc;

	pattern = ledger_check_pattern(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), &is_prefix);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_version must not be null")));

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[2] = {TEXTOID, INT4OID};

		plan = ledger_prepare_plan("DELETE FROM ledger.upcasters"
								   " WHERE streams OPERATOR(pg_catalog.=) $1"
								   " AND from_version OPERATOR(pg_catalog.=) $2",
								   2, types);
	}
	args[0] = CStringGetTextDatum(pattern);
	args[1] = PG_GETARG_DATUM(1);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	ledger_spi_check(rc, SPI_OK_DELETE, "drop_upcaster");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("no upcaster from version %d is registered for \"%s\"",
						PG_GETARG_INT32(1), ledger_quote_value(pattern, strlen(pattern)))));
	SPI_finish();
	invalidate_cache_of("upcasters");
	PG_RETURN_VOID();
}

Datum
ledger_set_schema_version(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *pattern;
	bool		is_prefix;
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	int			rc;

	pattern = ledger_check_pattern(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), &is_prefix);
	if (!PG_ARGISNULL(1) && PG_GETARG_INT32(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema version must be at least 1, not %d", PG_GETARG_INT32(1))));

	ledger_spi_connect();
	if (plan == NULL)
	{
		Oid			types[2] = {TEXTOID, INT4OID};

		plan = ledger_prepare_plan("INSERT INTO ledger.stream_settings AS s (pattern, schema_version)"
								   " VALUES ($1, $2) ON CONFLICT (pattern) DO UPDATE"
								   " SET schema_version = EXCLUDED.schema_version, updated_at = pg_catalog.now()",
								   2, types);
	}
	args[0] = CStringGetTextDatum(pattern);
	args[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	if (PG_ARGISNULL(1))
		nulls[1] = 'n';
	rc = SPI_execute_plan(plan, args, nulls, false, 0);
	ledger_spi_check(rc, SPI_OK_INSERT, "set_schema_version");
	SPI_finish();
	invalidate_cache_of("stream_settings");
	PG_RETURN_VOID();
}

/*
 * Statement trigger on ledger.upcasters and ledger.stream_settings: every
 * backend reloads its caches once this transaction commits, whatever
 * changed the tables (pg_restore too).  Also the 0.1.0 entry point.
 */
Datum
ledger_invalidate_caches(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ledger.invalidate_caches() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

Datum
ledger_upcasters_changed(PG_FUNCTION_ARGS)
{
	return ledger_invalidate_caches(fcinfo);
}
