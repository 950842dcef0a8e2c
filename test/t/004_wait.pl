# test/t/004_wait.pl
#	Blocking reads: read(wait) and read_all(wait) return as soon as a matching
#	append commits, are not woken by other streams or by rollbacks, and end at
#	once on statement_timeout and pg_cancel_backend.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('wait');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'ledger'\nwal_level = logical\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ledger');
$node->safe_psql('postgres', q{
SELECT ledger.append('a', '{"n": 0}');
SELECT ledger.append('b', '{"n": 0}');
});

my $waiter = $node->background_psql('postgres', on_error_stop => 0);
my $waiter_pid = $waiter->query_safe('SELECT pg_backend_pid()');

# Start a query in the waiter session without waiting for its result.
sub start_wait
{
	my ($sql) = @_;
	$waiter->{stdout} = '';
	$waiter->{stderr} = '';
	$waiter->{stdin} .= "$sql;\n\\echo WAIT_DONE\n";
	$waiter->{run}->pump_nb;
	return time;
}

# Wait until the waiter's query finished; returns (stdout, stderr, seconds).
sub finish_wait
{
	my ($started) = @_;
	$waiter->{run}->pump until $waiter->{stdout} =~ /WAIT_DONE/ || $waiter->{timeout}->is_expired;
	die 'waiter timed out' if $waiter->{timeout}->is_expired;
	my $elapsed = time - $started;
	my $out = $waiter->{stdout};
	$out =~ s/\n?WAIT_DONE\n?//;
	my $err = $waiter->{stderr};
	$waiter->{stdout} = '';
	$waiter->{stderr} = '';
	return ($out, $err, $elapsed);
}

# Block until the waiter session is sleeping inside the extension.
sub wait_until_blocked
{
	ok($node->poll_query_until('postgres',
			"SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE pid = $waiter_pid"),
		'the waiter is blocked in its wait');
}

my $last_a = $node->safe_psql('postgres', q{SELECT max(id) FROM ledger.read('a')});

# --- read(wait) returns as soon as an append to the stream commits -----------
my $t = start_wait(qq{SELECT id, payload FROM ledger.read('a', after => $last_a, wait => '10 s')});
wait_until_blocked();
my $new_a = $node->safe_psql('postgres', q{SELECT ledger.append('a', '{"n": 1}')});
my ($out, $err, $secs) = finish_wait($t);
is($err, '', 'read(wait) ends without error');
is($out, qq{$new_a|{"n": 1}}, 'read(wait) returns the new entry');
cmp_ok($secs, '<', 5, "read(wait => '10 s') returned after $secs s, well before the timeout");

# an append inside a transaction wakes the waiter only at commit
$t = start_wait(qq{SELECT id FROM ledger.read('a', after => $new_a, wait => '10 s')});
wait_until_blocked();
my $tx = $node->background_psql('postgres');
$tx->query_safe('BEGIN');
my $tx_id = $tx->query_safe(q{SELECT ledger.append('a', '{"n": 2}')});
wait_until_blocked();    # still blocked: nothing committed yet
$tx->query_safe('COMMIT');
($out, $err, $secs) = finish_wait($t);
is($out, $tx_id, 'the waiter returns the entry once its transaction commits');

# --- a waiter on stream a is not woken by appends to stream b ---------------
$t = start_wait(qq{SELECT count(*) FROM ledger.read('a', after => $tx_id, wait => '1 s')});
wait_until_blocked();
$node->safe_psql('postgres', q{SELECT ledger.append('b', jsonb_build_object('n', g)) FROM generate_series(1, 5) g});
wait_until_blocked();
($out, $err, $secs) = finish_wait($t);
is($out, '0', 'read(wait) on a returns the empty set when only b got entries');
cmp_ok($secs, '>=', 0.9, "and only after its interval ($secs s)");
cmp_ok($secs, '<', 5, 'but not much later');

# filters: an append to the stream that does not match keeps it waiting
$t = start_wait(qq{SELECT id FROM ledger.read('a', after => $tx_id, order_key => 'wanted', wait => '10 s')});
wait_until_blocked();
$node->safe_psql('postgres', q{SELECT ledger.append('a', '{}', order_key => 'other')});
wait_until_blocked();
my $wanted = $node->safe_psql('postgres', q{SELECT ledger.append('a', '{}', order_key => 'wanted')});
($out, $err, $secs) = finish_wait($t);
is($out, $wanted, 'read(wait, order_key) returns only the matching entry');

# a stream that does not exist yet
$t = start_wait(q{SELECT seq FROM ledger.read('future', wait => '10 s')});
wait_until_blocked();
$node->safe_psql('postgres', q{SELECT ledger.append('future', '{}')});
($out, $err, $secs) = finish_wait($t);
is($out, '1', 'read(wait) on a stream that does not exist yet wakes on its first append');
cmp_ok($secs, '<', 5, 'promptly');

# --- read_all(wait) wakes on the commit of any stream ------------------------
my $max = $node->safe_psql('postgres', 'SELECT max(id) FROM ledger.entries');
$t = start_wait(qq{SELECT id, stream FROM ledger.read_all(after => $max, wait => '10 s')});
wait_until_blocked();
my $new_z = $node->safe_psql('postgres', q{SELECT ledger.append('zzz', '{}')});
($out, $err, $secs) = finish_wait($t);
is($out, "$new_z|zzz", 'read_all(wait) returns the new entry of any stream');
cmp_ok($secs, '<', 5, "promptly ($secs s)");

# read_all(wait, streams) ignores other streams
$t = start_wait(qq{SELECT id FROM ledger.read_all(after => $new_z, streams => 'only-*', wait => '10 s')});
wait_until_blocked();
$node->safe_psql('postgres', q{SELECT ledger.append('not-this', '{}')});
wait_until_blocked();
my $only = $node->safe_psql('postgres', q{SELECT ledger.append('only-1', '{}')});
($out, $err, $secs) = finish_wait($t);
is($out, $only, 'read_all(wait, streams) returns only the matching stream');

# read_all(wait) held back by an open appender returns once it commits
$max = $only;
$tx->query_safe('BEGIN');
my $open_id = $tx->query_safe(q{SELECT ledger.append('held', '{}')});
my $free_id = $node->safe_psql('postgres', q{SELECT ledger.append('free', '{}')});
$t = start_wait(qq{SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.read_all(after => $max, wait => '10 s')});
wait_until_blocked();
$tx->query_safe('COMMIT');
($out, $err, $secs) = finish_wait($t);
is($out, "$open_id,$free_id", 'read_all(wait) wakes when the holding transaction commits, returning both');

# read_all(wait) held back by an open appender returns once it rolls back
$max = $free_id;
$tx->query_safe('BEGIN');
$tx->query_safe(q{SELECT ledger.append('held', '{"gone": true}')});
my $free2 = $node->safe_psql('postgres', q{SELECT ledger.append('free', '{}')});
$t = start_wait(qq{SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.read_all(after => $max, wait => '10 s')});
wait_until_blocked();
$tx->query_safe('ROLLBACK');
($out, $err, $secs) = finish_wait($t);
is($out, $free2, 'read_all(wait) wakes when the holding transaction rolls back, returning the later entry');
cmp_ok($secs, '<', 5, "promptly ($secs s)");
$free_id = $free2;

# --- a rolled-back append does not produce a result -------------------------
$max = $free_id;
$t = start_wait(qq{SELECT count(*) FROM ledger.read('a', after => $wanted, wait => '1500ms')});
wait_until_blocked();
$tx->query_safe('BEGIN');
$tx->query_safe(q{SELECT ledger.append('a', '{"gone": true}')});
$tx->query_safe('ROLLBACK');
wait_until_blocked();
($out, $err, $secs) = finish_wait($t);
is($out, '0', 'read(wait) after a rolled-back append returns empty on timeout');
cmp_ok($secs, '>=', 1.4, "after the full interval ($secs s)");

$t = start_wait(qq{SELECT count(*) FROM ledger.read_all(after => $max, wait => '1500ms')});
wait_until_blocked();
$tx->query_safe('BEGIN');
$tx->query_safe(q{SELECT ledger.append('a', '{"gone": true}')});
$tx->query_safe('ROLLBACK');
($out, $err, $secs) = finish_wait($t);
is($out, '0', 'read_all(wait) after a rolled-back append returns empty');
cmp_ok($secs, '>=', 1.4, "after the full interval ($secs s)");

# --- statement_timeout ends a wait at once ----------------------------------
$waiter->query_safe(q{SET statement_timeout = '500ms'});
$t = start_wait(qq{SELECT count(*) FROM ledger.read('a', after => 1000000, wait => '30 s')});
($out, $err, $secs) = finish_wait($t);
like($err, qr/canceling statement due to statement timeout/, 'statement_timeout ends read(wait)');
cmp_ok($secs, '<', 5, "quickly ($secs s)");
$t = start_wait(qq{SELECT count(*) FROM ledger.read_all(after => 1000000, wait => '30 s')});
($out, $err, $secs) = finish_wait($t);
like($err, qr/canceling statement due to statement timeout/, 'statement_timeout ends read_all(wait)');
cmp_ok($secs, '<', 5, "quickly ($secs s)");
$waiter->query_safe(q{RESET statement_timeout});
$waiter->{stderr} = '';

# check the SQLSTATE too
my ($ret, $o, $e) = $node->psql('postgres',
	q{SET statement_timeout = '300ms'; SELECT * FROM ledger.read('a', after => 1000000, wait => '30 s')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($e, qr/ERROR:\s+57014/, 'statement_timeout during a wait: 57014');

# --- pg_cancel_backend ends a wait at once ----------------------------------
$t = start_wait(qq{SELECT count(*) FROM ledger.read('a', after => 1000000, wait => '30 s')});
wait_until_blocked();
$node->safe_psql('postgres', "SELECT pg_cancel_backend($waiter_pid)");
($out, $err, $secs) = finish_wait($t);
like($err, qr/canceling statement due to user request/, 'pg_cancel_backend ends read(wait)');
cmp_ok($secs, '<', 5, "at once ($secs s)");

$t = start_wait(qq{SELECT count(*) FROM ledger.read_all(after => 1000000, wait => '30 s')});
wait_until_blocked();
$node->safe_psql('postgres', "SELECT pg_cancel_backend($waiter_pid)");
($out, $err, $secs) = finish_wait($t);
like($err, qr/canceling statement due to user request/, 'pg_cancel_backend ends read_all(wait)');
cmp_ok($secs, '<', 5, "at once ($secs s)");

# the session is usable after a canceled wait, and a later commit still wakes it
$t = start_wait(qq{SELECT id FROM ledger.read('b', after => 1000000, wait => '0 s')});
($out, $err, $secs) = finish_wait($t);
is("$out$err", '', "wait => '0 s' returns empty at once");
my $last_b = $node->safe_psql('postgres', q{SELECT max(id) FROM ledger.entries});
$t = start_wait(qq{SELECT id FROM ledger.read('b', after => $last_b, wait => '10 s')});
wait_until_blocked();
my $new_b = $node->safe_psql('postgres', q{SELECT ledger.append('b', '{}')});
($out, $err, $secs) = finish_wait($t);
is($out, $new_b, 'after cancels the same session still wakes on commit');

# --- a negative interval is an invalid argument ------------------------------
for my $call (q{SELECT * FROM ledger.read('a', wait => '-1 s')},
	q{SELECT * FROM ledger.read_all(wait => '-1 s')},
	q{SELECT * FROM ledger.read('a', wait => '-1 day')})
{
	($ret, $o, $e) = $node->psql('postgres', $call, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($e, qr/ERROR:\s+22023/, "22023 for: $call");
}

# --- no waiter left registered -------------------------------------------------
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND backend_type = 'client backend'}), '0',
	'no session is left waiting');

$waiter->quit;
$tx->quit;
$node->stop;
done_testing();
