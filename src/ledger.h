/*-------------------------------------------------------------------------
 *
 * src/ledger.h
 *		Declarations shared by the files of the ledger extension.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LEDGER_H
#define LEDGER_H

#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "pattern.h"

#define LEDGER_SCHEMA			"ledger"
#define LEDGER_MAX_STREAM_BYTES 255

/* ledger.c: GUCs and preload state */
extern int	ledger_max_payload_bytes;
extern int	ledger_worker_naptime_ms;
extern int	ledger_retention_batch;
extern bool ledger_loaded_via_preload;

extern void ledger_require_preload(const char *what);

/* validate.c: argument checks that raise 22023/54000 naming the bad value */
extern char *ledger_check_stream_name(text *name);
extern char *ledger_quote_value(const char *s, int len);
extern void ledger_check_name_bytes(const char *s, int len, const char *what);
extern void ledger_check_string_object(Jsonb *value, const char *argname,
									   bool allow_null_values);
extern void ledger_check_payload(Jsonb *payload, int ordinal);
extern void ledger_check_tags(ArrayType *tags, const char *argname);
extern int32 ledger_check_limit(int32 limit);
extern Jsonb *ledger_jsonb_arg(FunctionCallInfo fcinfo, int argno);

/* spi_plan.c: plans prepared once per backend */
extern void ledger_spi_connect(void);
extern SPIPlanPtr ledger_prepare_plan(const char *sql, int nargs, Oid *argtypes);
extern void ledger_spi_check(int rc, int expected, const char *what);

/* stream.c: the per-stream row that counts, numbers and locks appends */
typedef struct LedgerStream
{
	int32		stream_id;
	int64		last_seq;		/* highest seq ever appended */
	int64		trimmed_seq;	/* every seq <= this was trimmed */
	int32		schema_version; /* current version (set_schema_version) */
	TimestampTz created_at;
	bool		has_last_appended_at;
	TimestampTz last_appended_at;	/* kept for streams emptied by trim */
} LedgerStream;

extern bool ledger_stream_lookup(const char *name, LedgerStream *stream);
extern void ledger_stream_create(const char *name);
extern void ledger_stream_lock(const char *name, int64 seq_delta,
							   LedgerStream *stream);
extern void ledger_stream_unbump(int32 stream_id, int64 seq_delta);
extern int32 ledger_resolve_schema_version(const char *name);
extern void ledger_refresh_stream_versions(const char *pattern);

/* append.c */
typedef struct LedgerAppendItem
{
	Jsonb	   *payload;
	text	   *order_key;
	text	   *dedup_key;
	Jsonb	   *metadata;
	ArrayType  *tags;
	/* results */
	int64		id;
	int64		seq;
	bool		duplicate;
} LedgerAppendItem;

extern void LedgerAppend(const char *stream, LedgerAppendItem *items, int nitems,
						 bool has_version, int32 schema_version,
						 bool has_expected_seq, int64 expected_seq);

/* worker.c: launcher and per-database workers */
extern int	ledger_export_batch;
extern void ledger_register_launcher(void);
extern void ledger_worker_init(void);
extern void ledger_worker_request(void);
extern void ledger_health_worker_checks(ReturnSetInfo *rsinfo);

/* sink_admin.c */
struct LedgerSinkOps;
extern const struct LedgerSinkOps *ledger_sink_ops(const char *kind);

/* read.c */
extern TupleDesc ledger_entry_tupdesc(void);

/* retention.c */
extern int64 LedgerTrim(const char *stream, int64 before_id, int64 max_rows);
extern int64 LedgerEnforceRetention(const char *stream, bool has_max_entries,
									int64 max_entries, Interval *max_age,
									int64 export_floor, int64 batch);

/* upcast.c */
typedef struct LedgerUpcastPlan LedgerUpcastPlan;
extern LedgerUpcastPlan *ledger_upcast_plan(const char *stream, int32 target_version,
											bool explicit_target);
extern Jsonb *ledger_upcast(LedgerUpcastPlan *plan, Jsonb *payload,
							int32 from_version, int64 entry_id);

/* guard.c: the only door through which entries may change */
extern void ledger_entries_writable(bool writable);

/* horizon.c: commit-order horizon in shared memory */
extern void ledger_horizon_shmem_request(void);
extern void ledger_horizon_shmem_startup(void);
extern void ledger_horizon_init(void);
extern void ledger_horizon_before_id(void);
extern void ledger_horizon_appended(int32 stream_id);
extern int64 ledger_horizon(void);
extern bool ledger_horizon_oldest(int *pid, TimestampTz *since, int64 *floor_id);

/* wait.c: blocking reads woken on commit */
extern void ledger_wait_register(int32 stream_id);
extern void ledger_wait_unregister(void);
extern bool ledger_wait_sleep(TimestampTz deadline);
extern void ledger_wait_wake(const int32 *stream_ids, int nstreams, bool horizon_moved);

#endif							/* LEDGER_H */
