/*-------------------------------------------------------------------------
 *
 * src/sink_thread.h
 *		A helper thread per sink for its blocking calls (sink_thread.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef LEDGER_SINK_THREAD_H
#define LEDGER_SINK_THREAD_H

typedef struct LedgerSinkThread LedgerSinkThread;

/* Start an idle helper thread (state in TopMemoryContext). */
extern LedgerSinkThread *ledger_sink_thread_create(void);

/*
 * Run fn(arg) on the thread and wait for it, answering interrupts:
 * returns when fn has returned, or never (the process exits).
 */
extern void ledger_sink_thread_run(LedgerSinkThread *t, void (*fn) (void *arg), void *arg);

/* The two halves of ledger_sink_thread_run: start fn(arg) ... */
extern void ledger_sink_thread_submit(LedgerSinkThread *t, void (*fn) (void *arg), void *arg);

/* ... and wait for it (at once if it is done), answering interrupts. */
extern void ledger_sink_thread_wait(LedgerSinkThread *t);

/* Is a call still running (only possible while the process exits)? */
extern bool ledger_sink_thread_busy(LedgerSinkThread *t);

/* Stop and join an idle thread, and free it. */
extern void ledger_sink_thread_destroy(LedgerSinkThread *t);

#endif							/* LEDGER_SINK_THREAD_H */
