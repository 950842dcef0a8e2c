# test/t/007_workers_and_waits.pl
#	The waits, the worker and the launcher hold up in production (issue 12):
#	  - no lost wake-up: a wait in database B wakes within 100 ms of a commit
#	    after many waits cancelled inside subtransactions in database A and
#	    after a worker exited;
#	  - a waiting read_all's memory stays flat over 20,000 commits that do
#	    not match it;
#	  - DROP DATABASE ... WITH (FORCE) leaves no worker restarting;
#	  - the worker answers SIGTERM within 1 s, and the launcher starts it
#	    again; a start that failed (no free worker slot) is retried;
#	  - an idle retention pass costs no transaction;
#	  - retention moves on past a stream an idle-in-transaction appender holds;
#	  - an upcaster cache load that failed is done again next time;
#	  - a waiting read in REPEATABLE READ sees entries committed after its
#	    snapshot (the documented rule).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('workers');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ledger'
wal_level = logical
max_worker_processes = 12
ledger.retention_interval = '100ms'
log_min_messages = debug1
});
$node->start;

for my $db (qw(dba dbb))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION ledger');
}

sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'ledger worker' AND datname = '$db'");
}

# --- lost wake-ups -----------------------------------------------------------

# Waits cancelled inside subtransactions, in database A.
my $cancelled = join('', map {
	"SAVEPOINT s$_; SET LOCAL statement_timeout = '20ms';\n"
	  . "SELECT * FROM ledger.read('nothing', wait => '10 s');\nROLLBACK TO s$_;\n"
} 1 .. 25);
my ($ret, $out, $err) = $node->psql('dba', "BEGIN;\n${cancelled}COMMIT;", on_error_stop => 0);
my $ncancelled = () = $err =~ /canceling statement due to statement timeout/g;
is($ncancelled, 25, '25 waits were cancelled inside savepoints');

# A worker that exits by itself, in database A.
$node->safe_psql('dba', q{SELECT ledger.set_retention('r', max_entries => 5)});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ledger worker' AND datname = 'dba'"),
	'a retention limit starts the worker of database A');
$node->safe_psql('dba', q{SELECT ledger.set_retention('r')});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'ledger worker' AND datname = 'dba'"),
	'with no limits left the worker leaves');

# Now a wait in database B, in a new backend (likely on a PGPROC used above).
my $waiter = $node->background_psql('dbb', on_error_stop => 0);
$waiter->query_safe('SELECT ledger.append(\'b\', \'{"n": 0}\')');
my $waiter_pid = $waiter->query_safe('SELECT pg_backend_pid()');
$waiter->{stdout} = '';
$waiter->{stdin} .= "SELECT extract(epoch FROM clock_timestamp()) FROM ledger.read('b', after => (SELECT max(id) FROM ledger.read('b')), wait => '20 s');\n\\echo WAIT_DONE\n";
$waiter->{run}->pump_nb;
ok($node->poll_query_until('dbb',
		"SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $waiter_pid"),
	'the waiter in database B sleeps');
my $committed = $node->safe_psql('dbb',
	q{SELECT ledger.append('b', '{"n": 1}'); SELECT extract(epoch FROM clock_timestamp())});
$committed = (split /\n/, $committed)[-1];
$waiter->{run}->pump until $waiter->{stdout} =~ /WAIT_DONE/ || $waiter->{timeout}->is_expired;
my ($woke) = $waiter->{stdout} =~ /^([\d.]+)$/m;
ok(defined $woke && $woke - $committed < 0.1,
	sprintf('the wait in B woke %.1f ms after the commit (< 100 ms)', 1000 * (($woke // 0) - $committed)));
$waiter->quit;

# --- memory of a waiting read_all -------------------------------------------

sub rss_anon_kb
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/status" or return undef;
	while (<$fh>) { return $1 if /^RssAnon:\s+(\d+)/ }
	return undef;
}

my $reader = $node->background_psql('dbb', on_error_stop => 0);
my $reader_pid = $reader->query_safe('SELECT pg_backend_pid()');
$reader->{stdin} .= "SELECT count(*) FROM ledger.read_all(after => 0, streams => 'never-written', wait => '600 s');\n";
$reader->{run}->pump_nb;
ok($node->poll_query_until('dbb',
		"SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $reader_pid"),
	'a read_all waits for a stream nobody writes');

my $script = $node->basedir . '/appends.sql';
sub commits
{
	my ($n) = @_;
	open my $fh, '>', $script or die;
	print $fh "SELECT ledger.append('noise', '{\"x\": 1}');\n" x $n;
	close $fh;
	$node->command_ok([ 'psql', '-X', '-q', '-o', '/dev/null', '-d', $node->connstr('dbb'), '-f', $script ],
		"$n commits of another stream");
}
commits(2000);
my $rss_before = rss_anon_kb($reader_pid);
commits(20000);
my $rss_after = rss_anon_kb($reader_pid);
ok(defined $rss_before && $rss_after - $rss_before < 512,
	"the waiting backend's private memory stayed flat over 20,000 commits ($rss_before kB -> $rss_after kB)");
$node->safe_psql('dbb', "SELECT pg_cancel_backend($reader_pid)");
$reader->quit;

# --- DROP DATABASE WITH (FORCE) --------------------------------------------

$node->safe_psql('postgres', 'CREATE DATABASE doomed');
$node->safe_psql('doomed', q{CREATE EXTENSION ledger; SELECT ledger.set_retention('*', max_entries => 100)});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ledger worker' AND datname = 'doomed'"),
	'database "doomed" has a worker');
my $doomed_oid = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'doomed'});
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'DROP DATABASE doomed WITH (FORCE)');
pass('DROP DATABASE doomed WITH (FORCE) succeeded');
my $deadline = time + 15;
my $zombies = 0;
while (time < $deadline)
{
	$zombies++ if $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'ledger worker' AND datid = $doomed_oid") ne '0';
	usleep(250_000);
}
is($zombies, 0, 'for 15 s no worker ran for the dropped database');
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/database $doomed_oid does not exist/, 'and none tried to start (no "does not exist" in the log)');

# --- SIGTERM and restart ------------------------------------------------------

$node->safe_psql('dba', q{SELECT ledger.set_retention('r', max_entries => 5)});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ledger worker' AND datname = 'dba'"),
	'the worker of database A runs again');
my $pid = worker_pid('dba');
my $t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
1 while kill(0, $pid) && time - $t0 < 10 && usleep(10_000) >= 0;
my $took = time - $t0;
ok(!kill(0, $pid) && $took < 1, sprintf('the worker answered SIGTERM in %.0f ms (< 1 s)', 1000 * $took));
like($node->safe_psql('dba', q{SELECT detail FROM ledger.health() WHERE check_name = 'worker'}),
	qr/stopped .* tries again|running|starting/, 'health() tells what happens to the stopped worker');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ledger worker' AND datname = 'dba' AND pid <> $pid"),
	'the launcher starts the terminated worker again');

# --- an idle retention pass costs no transaction ----------------------------

$node->safe_psql('dba', q{SELECT ledger.append('r', jsonb_build_object('i', g)) FROM generate_series(1, 3) g});
$node->safe_psql('dba', q{SELECT ledger.set_retention('idle-' || g, max_entries => 1000) FROM generate_series(1, 50) g});
$node->safe_psql('dba', q{SELECT ledger.append('idle-' || g, '{}') FROM generate_series(1, 50) g});
# let the worker finish its passes, then watch the database's commit counter
sub dba_commits
{
	return $node->safe_psql('postgres', q{SELECT xact_commit FROM pg_stat_database WHERE datname = 'dba'});
}
my ($c1, $c2) = (dba_commits(), -1);
for (1 .. 50)
{
	usleep(200_000);
	$c2 = dba_commits();
	last if $c2 == $c1;
	$c1 = $c2;
}
is($c2, $c1, 'the worker has settled');
usleep(3_000_000);		# an observation window, not a wait for a condition
is(dba_commits(), $c1, 'an idle worker with 51 retained streams committed no transaction in 3 s');

# --- retention moves on past a locked stream ---------------------------------

$node->safe_psql('dba', q{SELECT ledger.append(s, jsonb_build_object('i', g))
                           FROM generate_series(1, 20) g, unnest(ARRAY['held', 'free']) s});
my $holder = $node->background_psql('dba', on_error_stop => 0);
$holder->query_safe(q{BEGIN; SELECT ledger.append('held', '{}')});
$node->safe_psql('dba', q{SELECT ledger.set_retention(s, max_entries => 3) FROM unnest(ARRAY['held', 'free']) s});
ok($node->poll_query_until('dba', q{SELECT ledger.count('free') = 3}),
	'retention trims a stream while another one is locked by an idle transaction');
is($node->safe_psql('dba', q{SELECT ledger.count('held')}), '20', 'the locked stream is left alone');
$holder->query_safe('COMMIT');
ok($node->poll_query_until('dba', q{SELECT ledger.count('held') = 3}),
	'and trimmed once its lock is gone');
$holder->quit;

# --- a failed upcaster cache load is retried ---------------------------------

$node->safe_psql('dbb', q{
SELECT ledger.append('up', '{"a": 1}');
SELECT ledger.register_upcaster('up', 1, 2, rename => '{"a": "b"}');
SELECT ledger.set_schema_version('up', 2);
});
my $locker = $node->background_psql('dbb', on_error_stop => 0);
$locker->query_safe('BEGIN; LOCK TABLE ledger.upcasters IN ACCESS EXCLUSIVE MODE');
my $rd = $node->background_psql('dbb', on_error_stop => 0);
$rd->query_safe("SET lock_timeout = '200ms'");
$rd->query('SELECT payload FROM ledger.read(\'up\')');
like($rd->{stderr}, qr/lock timeout/, 'the first load of the upcasters fails on a lock timeout');
$locker->query_safe('COMMIT');
$rd->{stderr} = '';
is($rd->query('SELECT payload FROM ledger.read(\'up\')'), '{"b": 1}',
	'the same backend loads them again and upcasts (no 22000)');
$locker->quit;
$rd->quit;

# --- REPEATABLE READ and wait ------------------------------------------------

my $rr = $node->background_psql('dbb', on_error_stop => 0);
$rr->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
my $last = $rr->query_safe(q{SELECT max(id) FROM ledger.read('rr')}) || 0;
$node->safe_psql('dbb', q{SELECT ledger.append('rr', '{"late": true}')});
is($rr->query_safe(qq{SELECT payload FROM ledger.read('rr', after => $last, wait => '5 s')}),
	'{"late": true}', 'a waiting read in REPEATABLE READ returns an entry committed after its snapshot');
is($rr->query_safe(q{SELECT count(*) FROM ledger.read('rr')}), '0',
	'while a read without wait keeps the snapshot');
$rr->query_safe('COMMIT');
$rr->quit;

$node->stop;

# --- a failed start is retried (no free worker slot) ------------------------

my $small = PostgreSQL::Test::Cluster->new('slots');
$small->init;
# the logical replication launcher and ledger's launcher take two slots
$small->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ledger'
max_worker_processes = 3
});
$small->start;
for my $db (qw(one two))
{
	$small->safe_psql('postgres', "CREATE DATABASE $db");
	$small->safe_psql($db, 'CREATE EXTENSION ledger');
}
$small->safe_psql('one', q{SELECT ledger.set_retention('x', max_entries => 5)});
ok($small->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ledger worker' AND datname = 'one'"),
	'database one takes the last worker slot');
$small->safe_psql('two', q{SELECT ledger.set_retention('x', max_entries => 5)});
ok($small->poll_query_until('two',
		q{SELECT NOT ok FROM ledger.health() WHERE check_name = 'worker'}),
	'database two has work and no worker, and health() says so');
$small->safe_psql('one', q{SELECT ledger.set_retention('x')});
ok($small->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ledger worker' AND datname = 'two'"),
	'once the slot is free the launcher retries and database two gets its worker');
$small->stop;

done_testing();
