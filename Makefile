# ledger — an append-only log server inside PostgreSQL (PGXS build)

# ledger_router (SQL, and src/ledger_router.c) is a router database's extension for a ledger
# sharded by stream across nodes, through PL/Proxy.
EXTENSION = ledger ledger_router
EXTVERSION = 0.2.0

MODULE_big = ledger
OBJS = \
	src/ledger.o \
	src/shmem.o \
	src/xact.o \
	src/validate.o \
	src/pattern.o \
	src/owner.o \
	src/spi_plan.o \
	src/stream.o \
	src/append.o \
	src/read.o \
	src/stat.o \
	src/side_data.o \
	src/retention.o \
	src/upcast.o \
	src/horizon.o \
	src/standby.o \
	src/wait.o \
	src/guard.o \
	src/health.o \
	src/launcher.o \
	src/worker.o \
	src/export.o \
	src/sink_admin.o \
	src/decoder.o \
	src/stream_names.o \
	src/mirror.o \
	src/sink_thread.o \
	src/sink_sqlite.o \
	src/sink_mongo.o \
	src/sink_bson.o \
	src/sink_redact.o

# ledger_router's C: stream slots and a deadline for calls to nodes
MODULES = src/ledger_router

# Every extension's scripts, sql/<extension>--<version>[--<version>].sql, and
# the control file of ledger 0.1.0 (whose schema option differs)
DATA = $(foreach ext,$(EXTENSION),$(wildcard sql/$(ext)--*.sql)) ledger--0.1.0.control

PG_CPPFLAGS = -I$(srcdir)/src -DLEDGER_VERSION='"$(EXTVERSION)"' $(shell pkg-config --cflags libmongoc-1.0 sqlite3)
SHLIB_LINK = $(shell pkg-config --libs libmongoc-1.0 sqlite3) -lpthread

# Every sql/*.sql except the extension scripts is a regression test.
REGRESS = $(sort $(patsubst sql/%.sql,%,$(filter-out $(DATA),$(wildcard sql/*.sql))))
# Even installcheck gets its own preloaded server (pg_cron's trick).
REGRESS_OPTS = --temp-instance=tmp_regress --temp-config=$(srcdir)/test/ledger.conf

ISOLATION = $(sort $(patsubst test/specs/%.spec,%,$(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=$(srcdir)/test --temp-instance=tmp_isolation --temp-config=$(srcdir)/test/ledger.conf

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_regress tmp_isolation output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
