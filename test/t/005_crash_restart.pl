# test/t/005_crash_restart.pl
#	Crash safety: after an immediate shutdown, and after a backend is killed
#	with SIGKILL in the middle of an open append transaction (the postmaster
#	then restarts every backend and reinitialises shared memory), committed
#	entries are there, uncommitted ones are not, read_all is not stuck on a
#	floor left by a dead transaction, and appends continue at higher ids and
#	the next seq.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ledger'
wal_level = logical
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ledger');

sub ids
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM ($sql) x");
}

# --- 1. immediate shutdown with one committed and one open transaction -------

my @committed = map {
	$node->safe_psql('postgres', qq{SELECT ledger.append('c', '{"n": $_}', dedup_key => 'd$_')})
} 1 .. 3;
$node->safe_psql('postgres', q{BEGIN; SELECT ledger.append('c', '{"n": 4}', dedup_key => 'd4'); SELECT ledger.append('other', '{}'); COMMIT;});
push @committed, $node->safe_psql('postgres', q{SELECT max(id) FROM ledger.read('c')});
push @committed, $node->safe_psql('postgres', q{SELECT max(id) FROM ledger.read('other')});
@committed = sort { $a <=> $b } @committed;

my $open = $node->background_psql('postgres');
$open->query_safe('BEGIN');
my $open_id = $open->query_safe(q{SELECT ledger.append('c', '{"open": true}', dedup_key => 'open')});
my $open2 = $open->query_safe(q{SELECT ledger.append('uncommitted', '{"open": true}')});
ok($node->poll_query_until('postgres',
		q{SELECT detail LIKE 'oldest unsettled append%' FROM ledger.health() WHERE check_name = 'read_all_horizon'}),
	'the open transaction holds the horizon before the crash');
is(ids(q{SELECT * FROM ledger.read_all(0, 100)}), join(',', grep { $_ < $open_id } @committed),
	'before the crash read_all stops below the open transaction');

$node->stop('immediate');
eval { $open->quit };
$node->start;

is(ids(q{SELECT id FROM ledger.entries}), join(',', @committed),
	'after restart: exactly the committed entries');
is($node->safe_psql('postgres', q{SELECT ledger.count('uncommitted'), ledger.count('c')}), '0|4',
	'uncommitted entries are gone, counts are right');
is(ids(q{SELECT * FROM ledger.read_all(0, 100)}), join(',', @committed),
	'read_all right after restart returns every committed entry (horizon not stuck)');
is($node->safe_psql('postgres', q{SELECT ok, detail FROM ledger.health() WHERE check_name = 'read_all_horizon'}),
	't|no unsettled appends', 'health: no unsettled appends after restart');

my $next = $node->safe_psql('postgres', q{SELECT ledger.append('c', '{"n": 5}', dedup_key => 'open')});
cmp_ok($next, '>', $open_id, "next append id $next is above every id handed out before the crash");
is($node->safe_psql('postgres', "SELECT seq FROM ledger.entries WHERE id = $next"), '5',
	'next append gets the next seq (the crashed seq was not consumed)');
is($node->safe_psql('postgres', q{SELECT count, first_seq, last_seq FROM ledger.stat('c')}), '5|1|5',
	'stat consistent after restart');
is($node->safe_psql('postgres', q{SELECT ledger.append('c', '{}', dedup_key => 'd2')}), $committed[1],
	'committed dedup keys survive the crash');
my $first_other = $node->safe_psql('postgres', q{SELECT ledger.append('uncommitted', '{"again": true}')});
is($node->safe_psql('postgres', "SELECT seq FROM ledger.entries WHERE id = $first_other"), '1',
	'a stream whose only append crashed starts at seq 1');
is(ids(qq{SELECT * FROM ledger.read_all($committed[-1], 100)}), "$next,$first_other",
	'read_all continues with the new entries');

# --- 2. SIGKILL of a backend inside an open append transaction -------------------

my $before = $node->safe_psql('postgres', 'SELECT max(id) FROM ledger.entries');
my $victim = $node->background_psql('postgres');
my $victim_pid = $victim->query_safe('SELECT pg_backend_pid()');
$victim->query_safe('BEGIN');
my $victim_id = $victim->query_safe(q{SELECT ledger.append('victim', '{"doomed": true}')});
$victim->query_safe(q{SELECT count(*) FROM ledger.append_batch('c', '[{"payload":{"doomed":1}},{"payload":{"doomed":2}}]'::jsonb)});
my $survivor = $node->safe_psql('postgres', q{SELECT ledger.append('survivor', '{}')});
is(ids(qq{SELECT * FROM ledger.read_all($before, 100)}), '',
	'the victim holds the horizon back');

# a waiter blocked in read_all(wait) is caught in the crash too
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->{stdin} .= "SELECT count(*) FROM ledger.read_all($survivor, wait => '60 s');\n";
$waiter->{run}->pump_nb;

my $log_offset = -s $node->logfile;
kill 'KILL', $victim_pid;
# the postmaster notices the dead backend and reinitialises
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
ok($node->log_contains(qr/terminated by signal 9/, $log_offset), 'the postmaster saw the SIGKILL');
ok($node->poll_query_until('postgres', 'SELECT true'), 'server accepts connections after the crash restart');
eval { $victim->quit };
eval { $waiter->{run}->kill_kill };

is($node->safe_psql('postgres', q{SELECT count(*) FROM ledger.entries WHERE payload ? 'doomed'}), '0',
	"the killed transaction's entries are gone");
is($node->safe_psql('postgres', "SELECT count(*) FROM ledger.entries WHERE id = $victim_id"), '0',
	'including its first id');
is(ids(qq{SELECT * FROM ledger.read_all($before, 100)}), $survivor,
	'read_all works after recovery and returns the survivor');
is($node->safe_psql('postgres', q{SELECT ok FROM ledger.health() WHERE check_name = 'read_all_horizon'}),
	't', 'health is clean after recovery');
is($node->safe_psql('postgres', q{SELECT ledger.count('c'), ledger.count('victim')}), '5|0',
	'counts after recovery');

my $after = $node->safe_psql('postgres', q{SELECT ledger.append('c', '{"n": 6}')});
cmp_ok($after, '>', $survivor, 'append after recovery gets a higher id');
is($node->safe_psql('postgres', "SELECT seq FROM ledger.entries WHERE id = $after"), '6',
	'and the next seq of the stream');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM ledger.append_batch('c', '[{"payload":{"n":7}},{"payload":{"n":8}}]'::jsonb)}),
	'2', 'append_batch after recovery');
is(ids(qq{SELECT * FROM ledger.read_all($survivor, 100)}),
	$node->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.entries WHERE id > $survivor"),
	'read_all after recovery returns the new entries');

# waits work after the shared memory was reinitialised
my $w2 = $node->background_psql('postgres');
my $w2_pid = $w2->query_safe('SELECT pg_backend_pid()');
my $max = $node->safe_psql('postgres', 'SELECT max(id) FROM ledger.entries');
$w2->{stdin} .= "SELECT id FROM ledger.read_all($max, wait => '20 s');\n\\echo W2_DONE\n";
$w2->{run}->pump_nb;
ok($node->poll_query_until('postgres',
		"SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $w2_pid"),
	'a new read_all(wait) blocks after recovery');
my $woke = $node->safe_psql('postgres', q{SELECT ledger.append('post', '{}')});
$w2->{run}->pump until $w2->{stdout} =~ /W2_DONE/ || $w2->{timeout}->is_expired;
like($w2->{stdout}, qr/^$woke\n/m, 'and is woken by the next commit');
$w2->quit;

# --- 3. a clean restart keeps everything, too ----------------------------------
my $snapshot = ids(q{SELECT id FROM ledger.entries});
$node->restart;
is(ids(q{SELECT * FROM ledger.read_all(0, 1000)}), $snapshot, 'read_all after a clean restart');

$node->stop;
done_testing();
