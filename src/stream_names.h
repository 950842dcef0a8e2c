/*-------------------------------------------------------------------------
 *
 * src/stream_names.h
 *		Stream names for the output plugin: the ledger.stream_names table
 *		(filled by a trigger) and the decoding session's cache over it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LEDGER_STREAM_NAMES_H
#define LEDGER_STREAM_NAMES_H

#include "postgres.h"

/* stream_id -> name, for one decoding session */
typedef struct LedgerStreamNames LedgerStreamNames;

/* A cache whose memory is a child of parent. */
extern LedgerStreamNames *ledger_stream_names_create(MemoryContext parent);

/* Forget every name; they are those of the ledger schema namespace_oid now. */
extern void ledger_stream_names_reset(LedgerStreamNames *names, Oid namespace_oid);

/* Remember a name seen in a decoded ledger.streams row. */
extern void ledger_stream_names_remember(LedgerStreamNames *names,
										 int32 stream_id, const char *name);

/*
 * The name of a stream as of the change being decoded (the cache, else
 * ledger.stream_names under the historic snapshot); NULL with a WARNING
 * when there is none to be had.
 */
extern const char *ledger_stream_names_get(LedgerStreamNames *names,
										   int32 stream_id);

#endif							/* LEDGER_STREAM_NAMES_H */
