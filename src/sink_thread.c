/*-------------------------------------------------------------------------
 *
 * src/sink_thread.c
 *		Runs a sink's blocking calls on a helper thread of its own, so that
 *		the worker answers SIGTERM within a second whatever a target does.
 *
 * libmongoc and SQLite block in poll(), connect() and busy waits that no
 * signal interrupts.  The worker therefore hands each call to a helper
 * thread and waits for it on its latch plus the read end of a pipe that
 * the thread writes one byte to when it is done, calling
 * CHECK_FOR_INTERRUPTS between wake-ups.  A SIGTERM (pg_terminate_backend,
 * DROP DATABASE ... WITH (FORCE), a fast shutdown) or the postmaster's
 * death thus ends the process while the thread is still blocked; the thread
 * dies with it.
 *
 * The helper thread runs only the plain-C sink code (sink.h): no palloc, no
 * ereport, no server state.  It starts with every signal blocked, so that
 * signals keep going to the main thread, where the server's handlers
 * expect them.  What a call reads (its items, in the export step's memory
 * context) stays allocated until the call has finished: the only way out of
 * the wait before that is the process's exit.  A handle still in use by a
 * thread is never closed (close_all_sinks() in export.c asks
 * ledger_sink_thread_busy()), since the process is about to end anyway.
 *
 * One mutex per thread protects its job slot; the main thread holds it only
 * to post a job or read the done flag.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "sink_thread.h"

struct LedgerSinkThread
{
	pthread_t	thread;
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	int			pipe_read;		/* the main thread waits on it */
	int			pipe_write;		/* the helper writes a byte when done */
	/* job slot, under mutex */
	void		(*fn) (void *arg);
	void	   *arg;
	bool		posted;
	bool		done;
	bool		quit;
};

static void *
helper_main(void *p)
{
	LedgerSinkThread *t = p;

	for (;;)
	{
		void		(*fn) (void *);
		void	   *arg;
		char		byte = 1;

		pthread_mutex_lock(&t->mutex);
		while (!t->posted && !t->quit)
			pthread_cond_wait(&t->cond, &t->mutex);
		if (t->quit)
		{
			pthread_mutex_unlock(&t->mutex);
			return NULL;
		}
		fn = t->fn;
		arg = t->arg;
		t->posted = false;
		pthread_mutex_unlock(&t->mutex);

		fn(arg);

		pthread_mutex_lock(&t->mutex);
		t->done = true;
		pthread_mutex_unlock(&t->mutex);
		/* a full pipe already says "done": a short write needs no retry */
		if (write(t->pipe_write, &byte, 1) < 0)
			continue;
	}
}

LedgerSinkThread *
ledger_sink_thread_create(void)
{
	LedgerSinkThread *t = MemoryContextAllocZero(TopMemoryContext, sizeof(LedgerSinkThread));
	int			fds[2];
	sigset_t	all;
	sigset_t	old;
	int			rc;

	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create a pipe for a ledger sink thread: %m")));
	t->pipe_read = fds[0];
	t->pipe_write = fds[1];
	t->done = true;				/* idle */
	pthread_mutex_init(&t->mutex, NULL);
	pthread_cond_init(&t->cond, NULL);

	/* the thread inherits this mask: every signal stays with the main thread */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&t->thread, NULL, helper_main, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
	{
		close(t->pipe_read);
		close(t->pipe_write);
		pfree(t);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start a ledger sink thread: %s", strerror(rc))));
	}
	return t;
}

void
ledger_sink_thread_submit(LedgerSinkThread *t, void (*fn) (void *arg), void *arg)
{
	char		drain[16];

	while (read(t->pipe_read, drain, sizeof(drain)) > 0)
		;
	pthread_mutex_lock(&t->mutex);
	Assert(!t->posted && t->done);
	t->fn = fn;
	t->arg = arg;
	t->done = false;
	t->posted = true;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->mutex);
}

void
ledger_sink_thread_wait(LedgerSinkThread *t)
{
	char		drain[16];

	for (;;)
	{
		bool		done;

		pthread_mutex_lock(&t->mutex);
		done = t->done;
		pthread_mutex_unlock(&t->mutex);
		if (done)
			break;
		(void) WaitLatchOrSocket(MyLatch,
								 WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 t->pipe_read, 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		while (read(t->pipe_read, drain, sizeof(drain)) > 0)
			;
	}
}

void
ledger_sink_thread_run(LedgerSinkThread *t, void (*fn) (void *arg), void *arg)
{
	ledger_sink_thread_submit(t, fn, arg);
	ledger_sink_thread_wait(t);
}

bool
ledger_sink_thread_busy(LedgerSinkThread *t)
{
	bool		busy;

	pthread_mutex_lock(&t->mutex);
	busy = t->posted || !t->done;
	pthread_mutex_unlock(&t->mutex);
	return busy;
}

void
ledger_sink_thread_destroy(LedgerSinkThread *t)
{
	pthread_mutex_lock(&t->mutex);
	t->quit = true;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->mutex);
	pthread_join(t->thread, NULL);
	close(t->pipe_read);
	close(t->pipe_write);
	pthread_mutex_destroy(&t->mutex);
	pthread_cond_destroy(&t->cond);
	pfree(t);
}
