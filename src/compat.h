/*-------------------------------------------------------------------------
 *
 * src/compat.h
 *		The differences between the PostgreSQL major versions ledger builds
 *		against (15, 16, 17), as small inline wrappers, so that no other
 *		file needs a version test.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LEDGER_COMPAT_H
#define LEDGER_COMPAT_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "catalog/pg_proc.h"
#include "common/jsonapi.h"
#include "access/tableam.h"
#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "replication/reorderbuffer.h"
#include "storage/proc.h"
#include "utils/acl.h"

/* This backend's index into ProcGlobal->allProcs (and into our slots). */
static inline int
ledger_my_procno(void)
{
#if PG_VERSION_NUM >= 170000
	return MyProcNumber;
#else
	return MyProc->pgprocno;
#endif
}

/* The PGPROC of a proc number. */
static inline PGPROC *
ledger_proc_by_number(int procno)
{
	return &ProcGlobal->allProcs[procno];
}

/* A transactional logical decoding message (17 added a flush argument). */
static inline XLogRecPtr
ledger_log_logical_message(const char *prefix, const char *message, size_t size)
{
#if PG_VERSION_NUM >= 170000
	return LogLogicalMessage(prefix, message, size, true, false);
#else
	return LogLogicalMessage(prefix, message, size, true);
#endif
}

/* The tuples of a decoded change (17 made them plain HeapTuples). */
static inline HeapTuple
ledger_change_new_tuple(ReorderBufferChange *change)
{
#if PG_VERSION_NUM >= 170000
	return change->data.tp.newtuple;
#else
	return change->data.tp.newtuple ? &change->data.tp.newtuple->tuple : NULL;
#endif
}

static inline HeapTuple
ledger_change_old_tuple(ReorderBufferChange *change)
{
#if PG_VERSION_NUM >= 170000
	return change->data.tp.oldtuple;
#else
	return change->data.tp.oldtuple ? &change->data.tp.oldtuple->tuple : NULL;
#endif
}

/* May this role execute this function? (16 folded pg_proc_aclcheck into object_aclcheck) */
static inline AclResult
ledger_proc_aclcheck(Oid fn, Oid roleid, AclMode mode)
{
#if PG_VERSION_NUM >= 160000
	return object_aclcheck(ProcedureRelationId, fn, roleid, mode);
#else
	return pg_proc_aclcheck(fn, roleid, mode);
#endif
}

/* Is this text valid JSON? (17 gave the lexer constructor a first argument) */
static inline bool
ledger_json_is_valid(char *text, int len)
{
	JsonLexContext *lex;

#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, text, len, GetDatabaseEncoding(), true);
#else
	lex = makeJsonLexContextCstringLen(text, len, GetDatabaseEncoding(), true);
#endif
	return pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS;
}

/* Insert a new heap tuple's index entries (16 added onlySummarizing). */
static inline List *
ledger_insert_index_tuples(ResultRelInfo *rri, TupleTableSlot *slot, EState *estate,
						   bool update)
{
#if PG_VERSION_NUM >= 160000
	return ExecInsertIndexTuples(rri, slot, estate, update, false, NULL, NIL, false);
#else
	return ExecInsertIndexTuples(rri, slot, estate, update, false, NULL, NIL);
#endif
}

/*
 * Update a tuple, waiting for a concurrent updater; *update_indexes says
 * whether the new version needs index entries (16 made it an enum).
 */
static inline TM_Result
ledger_table_tuple_update(Relation rel, ItemPointer otid, TupleTableSlot *slot,
						  CommandId cid, Snapshot snapshot, TM_FailureData *tmfd,
						  LockTupleMode *lockmode, bool *update_indexes)
{
#if PG_VERSION_NUM >= 160000
	TU_UpdateIndexes u;
	TM_Result	res = table_tuple_update(rel, otid, slot, cid, snapshot, InvalidSnapshot,
										 true, tmfd, lockmode, &u);

	/* streams and entries have no summarizing (BRIN) index */
	if (res == TM_Ok && u == TU_Summarizing)
		elog(ERROR, "ledger: unexpected summarizing-only index update");
	*update_indexes = (u == TU_All);
	return res;
#else
	return table_tuple_update(rel, otid, slot, cid, snapshot, InvalidSnapshot,
							  true, tmfd, lockmode, update_indexes);
#endif
}

#endif							/* LEDGER_COMPAT_H */
