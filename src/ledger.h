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

#include "access/xlogdefs.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "utils/jsonb.h"
#include "utils/array.h"
#include "utils/timestamp.h"

#include "pattern.h"

#define LEDGER_SCHEMA			"ledger"
#define LEDGER_MAX_STREAM_BYTES 255

/* ledger.c: GUCs and preload state */
extern int	ledger_max_payload_bytes;
extern bool ledger_loaded_via_preload;

extern void ledger_require_preload(const char *what);

/* validate.c: argument checks that raise 22023/54000 naming the bad value */
extern char *ledger_quote_value(const char *s, int len);
extern void ledger_check_name_bytes(const char *s, int len, const char *what);
extern char *ledger_check_stream_name(text *name);
extern void ledger_check_string_object(Jsonb *value, const char *argname,
									   bool allow_null_values);
extern void ledger_check_payload(Jsonb *payload, int ordinal);
extern void ledger_check_entry_size(Jsonb *payload, Jsonb *metadata, ArrayType *tags,
									Jsonb *annotations, int ordinal);
extern const char *ledger_jsonb_kind(Jsonb *value);
extern void ledger_check_tags(ArrayType *tags, const char *argname);
extern int32 ledger_check_limit(int32 limit);
extern Jsonb *ledger_jsonb_arg(FunctionCallInfo fcinfo, int argno);

/* spi_plan.c: plans prepared once per backend */
extern void ledger_spi_connect(void);
extern SPIPlanPtr ledger_prepare_plan(const char *sql, int nargs, Oid *argtypes);
extern SPIPlanPtr ledger_prepare_plan_options(const char *sql, int nargs, Oid *argtypes,
											  int cursor_options);
extern Oid	ledger_relid(const char *relname);
extern bool ledger_relation_has_layout(Relation rel, const char *const *columns,
									   int ncolumns, CmdType cmd);
extern void ledger_spi_check(int rc, int expected, const char *what);

/* owner.c: who ledger's code runs as */
typedef struct LedgerSavedUser
{
	Oid			userid;
	int			sec_context;
} LedgerSavedUser;

extern Oid	ledger_extension_owner(void);
extern void ledger_become_owner(LedgerSavedUser *saved);
extern void ledger_restore_user(LedgerSavedUser *saved);

/* stream.c: the per-stream row that counts, numbers and locks appends */
typedef struct LedgerStream
{
	int32		stream_id;
	int64		last_seq;		/* highest seq ever appended */
	int64		trimmed_seq;	/* every seq <= this was trimmed */
	TimestampTz created_at;
	bool		has_last_appended_at;
	TimestampTz last_appended_at;	/* kept for streams emptied by trim */
} LedgerStream;

extern bool ledger_stream_lookup(const char *name, bool read_only, LedgerStream *stream);
extern void ledger_stream_create(const char *name);
extern void ledger_stream_lock(const char *name, int64 seq_delta,
							   LedgerStream *stream);
extern bool ledger_stream_try_lock(int32 stream_id);
extern void ledger_stream_unbump(int32 stream_id, int64 seq_delta);

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

/* upcast.c: schema versions and upcasters */
typedef struct LedgerUpcastPlan LedgerUpcastPlan;
extern int32 ledger_current_version(const char *stream);
extern LedgerUpcastPlan *ledger_upcast_plan(const char *stream, int32 target_version,
											bool explicit_target);
extern Jsonb *ledger_upcast(LedgerUpcastPlan *plan, Jsonb *payload,
							int32 from_version, int64 entry_id);

/* guard.c: the only door through which entries may change */
extern void ledger_entries_writable(bool writable);

/* retention.c: trim and retention */
extern int	ledger_retention_batch;
extern int	ledger_retention_interval_ms;

typedef struct LedgerRetentionPass
{
	bool		has_rules;		/* the database has retention limits */
	bool		more;			/* a stream has more to delete now */
	bool		locked_out;		/* a stream was skipped: it was locked */
	TimestampTz next_due;		/* when the next entry reaches max_age; 0 = never */
} LedgerRetentionPass;

extern int64 LedgerTrim(const char *stream, int64 before_id, int64 max_rows);
extern void ledger_retention_pass(MemoryContext pass_cxt, LedgerRetentionPass *result);

/* export.c: the sink driver */
extern int	ledger_export_batch;
extern int	ledger_export_batch_bytes;

typedef struct LedgerExportPass
{
	bool		has_sinks;
	bool		extension_missing;
	bool		more;			/* a sink has a backlog: run again now */
	TimestampTz next_retry;		/* earliest retry of a failed sink; 0 = none */
} LedgerExportPass;

extern void ledger_export_pass(MemoryContext pass_cxt, LedgerExportPass *result);

/* sink_admin.c */
struct LedgerSinkOps;
extern const struct LedgerSinkOps *ledger_sink_ops(const char *kind);
extern void ledger_sink_init(void);

/* mirror.c: the change log that carries side data and trims to sinks */
extern void ledger_mirror_note_update(int64 entry_id);
extern void ledger_mirror_note_trim(int32 stream_id, int64 before_id);
extern void ledger_mirror_prune(void);

/* worker.c: one database's background worker */
extern int	ledger_worker_naptime_ms;
extern bool ledger_worker_run_in_transaction(bool (*fn) (void *), void *arg,
											 const char *what);
extern bool ledger_worker_extension_is_current(void);

/* launcher.c: the launcher and the worker registry */
typedef struct LedgerWorkerStatus
{
	bool		launcher_running;
	int			state;			/* a LedgerWorkerState (shmem.h) */
	int			pid;
	int			failures;
	TimestampTz retry_at;
} LedgerWorkerStatus;

extern void ledger_register_launcher(void);
extern void ledger_launcher_init(void);
extern void ledger_worker_request(void);
extern void ledger_launcher_xact_commit(void);
extern void ledger_launcher_xact_abort(void);
extern bool ledger_launcher_worker_status(Oid dboid, LedgerWorkerStatus *status);
extern bool ledger_launcher_worker_claim(void);
extern void ledger_launcher_worker_begin_pass(void);
extern bool ledger_launcher_worker_leave(void);

/* horizon.c: the commit-order horizon */
extern void ledger_horizon_before_id(void);
extern int64 ledger_horizon(void);
extern int64 ledger_id_increment(void);
extern bool ledger_horizon_oldest(int *pid, TimestampTz *since, int64 *floor_id);
extern void ledger_horizon_check_prepare(void);
extern bool ledger_horizon_pre_commit(int64 *horizon);
extern bool ledger_horizon_release(void);
extern int64 ledger_horizon_after_abort(void);

/* wait.c: blocking reads woken on commit */
extern void ledger_wait_note_append(int32 stream_id);
extern void ledger_wait_prepare(void);
extern void ledger_wait_register(int32 stream_id);
extern void ledger_wait_register_permanently(void);
extern void ledger_wait_unregister(void);
extern bool ledger_wait_sleep(TimestampTz deadline);
extern uint64 ledger_wait_wakeups(void);
extern void ledger_wait_poke(int procno);
extern void ledger_wait_xact_commit(bool horizon_moved);
extern void ledger_wait_xact_abort(bool top, bool horizon_moved);
extern int	ledger_wait_noted_streams(const int32 **streams);
extern void ledger_wait_wake_replayed(Oid dboid, const int32 *streams, int nstreams,
									  bool horizon_moved);

/* standby.c: the horizon on hot standbys, through ledger's WAL records */
extern void ledger_standby_init(void);
extern void ledger_standby_pre_commit(void);
extern void ledger_standby_abort(void);
extern void ledger_standby_wait_begin(void);
#define LEDGER_STANDBY_SLEEP		0
#define LEDGER_STANDBY_NAP			1
#define LEDGER_STANDBY_LOOK_AGAIN	2
extern int	ledger_standby_wait_hint(void);
extern int64 ledger_standby_horizon(void);
extern bool ledger_standby_status(int64 *horizon, XLogRecPtr *lsn, TimestampTz *primary_at,
								  TimestampTz *replayed_at);

/* xact.c: the one transaction callback */
extern void ledger_xact_init(void);

/* shmem.c */
extern void ledger_shmem_init(void);

#endif							/* LEDGER_H */
