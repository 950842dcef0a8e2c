# test/t/003_read_all_horizon.pl
#	The read_all guarantee under concurrency: a consumer calling
#	read_all(after => last id seen) while many sessions append, commit late,
#	roll back and batch sees exactly the committed ids, in order, none twice,
#	none skipped.  Plus: an idle-in-transaction appender stalls read_all and
#	shows in health(); terminating an appender releases the horizon; PREPARE
#	TRANSACTION after an append is refused; a REPEATABLE READ consumer does
#	not skip; concurrent expected_seq appends lose no write.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('horizon');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ledger'
wal_level = logical
max_prepared_transactions = 5
max_connections = 40
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ledger');

# Start psql on a script in the background; returns the IPC::Run handle.
my @workers;
sub start_script
{
	my ($name, $sql, $stop_on_error) = @_;
	my $file = $node->basedir . "/$name.sql";
	open my $fh, '>', $file or die "cannot write $file: $!";
	print $fh $sql;
	close $fh;
	my %w = (name => $name, out => '', err => '');
	$w{h} = IPC::Run::start(
		[ 'psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=' . ($stop_on_error // 1),
		  '-d', $node->connstr('postgres'), '-f', $file ],
		'>', \$w{out}, '2>', \$w{err});
	push @workers, \%w;
	return \%w;
}

sub ids_of
{
	my ($csv) = @_;
	return () if !defined $csv || $csv eq '';
	return split /,/, $csv;
}

# --- 1. the consumer loop against a mixed workload --------------------------

my %scripts;
$scripts{autocommit} = join '',
  map { "SELECT ledger.append('auto', '{\"i\": $_}');\n" } 1 .. 150;
$scripts{multi} = join '', map {
	"BEGIN;\nSELECT ledger.append('multi-a', '{\"t\": $_}');\n"
	  . "SELECT ledger.append('multi-b', '{\"t\": $_}');\n"
	  . "SELECT pg_sleep(random() * 0.05);\n"
	  . "SELECT ledger.append('multi-a', '{\"t\": $_, \"last\": true}');\nCOMMIT;\n"
} 1 .. 40;
$scripts{slow} = join '', map {
	"BEGIN;\nSELECT ledger.append('slow', '{\"s\": $_}');\n"
	  . "SELECT pg_sleep(1.2);\nCOMMIT;\n"
} 1 .. 4;
$scripts{slow_batch} = join '', map {
	"BEGIN;\nSELECT count(*) FROM ledger.append_batch('slowbatch', "
	  . "'[{\"payload\":{\"b\":$_}},{\"payload\":{\"b\":$_}},{\"payload\":{\"b\":$_}}]'::jsonb);\n"
	  . "SELECT pg_sleep(0.7);\nCOMMIT;\n"
} 1 .. 5;
$scripts{rollback} = join '', map {
	"BEGIN;\nSELECT ledger.append('rb', '{\"gone\": $_}');\n"
	  . "SELECT pg_sleep(random() * 0.1);\n"
	  . "SELECT ledger.append('auto', '{\"gone\": $_}');\nROLLBACK;\n"
	  . "SELECT ledger.append('rb', '{\"kept\": $_}');\n"
} 1 .. 30;
$scripts{savepoint} = join '', map {
	"BEGIN;\nSELECT ledger.append('sp', '{\"a\": $_}');\nSAVEPOINT s;\n"
	  . "SELECT ledger.append('sp', '{\"gone\": $_}');\n"
	  . "SELECT count(*) FROM ledger.append_batch('sp', '[{\"payload\":{\"gone\":1}},{\"payload\":{\"gone\":2}}]'::jsonb);\n"
	  . "SELECT pg_sleep(random() * 0.05);\nROLLBACK TO s;\n"
	  . "SELECT ledger.append('sp', '{\"b\": $_}');\nCOMMIT;\n"
} 1 .. 30;
$scripts{batch} = join '', map {
	"SELECT count(*) FROM ledger.append_batch('batch-$_', '["
	  . join(',', map { "{\"payload\":{\"n\":$_},\"dedup_key\":\"k$_\"}" } 1 .. 10)
	  . "]'::jsonb);\n"
} 1 .. 30;
# transactions that die by error after appending (ON_ERROR_STOP off)
my $errors = join '', map {
	"BEGIN;\nSELECT ledger.append('err', '{\"gone\": $_}');\nSELECT 1/0;\nCOMMIT;\n"
	  . "SELECT ledger.append('err', '{\"kept\": $_}');\n"
} 1 .. 20;

my $t0 = time;
start_script($_, $scripts{$_}) for sort keys %scripts;
start_script('errors', $errors, 0);

my $consumer = $node->background_psql('postgres');
my @seen;
my $last = 0;
my $calls = 0;
my $order_ok = 1;
my $consume = sub {
	my ($wait) = @_;
	my $csv = $consumer->query_safe(
		"SELECT string_agg(id::text, ',' ORDER BY ordinality) FROM ledger.read_all($last, 37"
		  . ($wait ? ", wait => '$wait'" : '') . ") WITH ORDINALITY AS r");
	$calls++;
	for my $id (ids_of($csv))
	{
		if ($id <= $last)
		{
			$order_ok = 0;
			diag "read_all returned id $id after $last";
		}
		push @seen, $id;
		$last = $id;
	}
	return scalar ids_of($csv);
};

while (grep { $_->{h}->pumpable } @workers)
{
	eval { $_->{h}->pump_nb } for @workers;
	$consume->($calls % 3 == 0 ? '20ms' : undef);
}
$_->{h}->finish for @workers;
for my $w (@workers)
{
	next if $w->{name} eq 'errors';
	is($w->{err}, '', "worker $w->{name} ran without errors");
}
my @zerodiv = ($workers[-1]{err} =~ /division by zero/g);
is(scalar @zerodiv, 20, 'the error worker hit its 20 deliberate errors');

# drain: nothing is open any more, so read_all must catch up completely
1 while $consume->(undef) > 0;
my $elapsed = time - $t0;
note "consumer: $calls read_all calls, " . scalar(@seen) . " ids, $elapsed s";

my @committed = ids_of($node->safe_psql('postgres',
	q{SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.entries}));
ok($order_ok, 'read_all ids strictly increasing across calls');
is(scalar @seen, scalar @committed, 'consumer saw as many ids as were committed');
is(join(',', @seen), join(',', @committed), 'consumer ids equal the committed ids exactly');
my $expected_total = 150 + 40 * 3 + 4 + 5 * 3 + 30 + 30 * 2 + 30 * 10 + 20;
is(scalar @committed, $expected_total, "all $expected_total committed entries are there");
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM ledger.entries WHERE payload ? 'gone'}), '0',
	'no rolled-back entry was stored');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ledger.read_all(0, 1000) WHERE payload ? 'gone'}),
	'0', 'read_all never returns a rolled-back entry');
is($node->safe_psql('postgres', q{
	SELECT bool_and(seqs_ok) FROM (
	  SELECT array_agg(seq ORDER BY seq) = array_agg(rn ORDER BY seq) AS seqs_ok
	    FROM (SELECT stream_id, seq, row_number() OVER (PARTITION BY stream_id ORDER BY seq) AS rn
	            FROM ledger.entries) x GROUP BY stream_id) y}),
	't', 'every stream has gap-free seqs 1..n despite rollbacks');
is($node->safe_psql('postgres', q{
	SELECT bool_and(a.seq_order = a.id_order) FROM (
	  SELECT array_agg(seq ORDER BY seq) AS seq_order, array_agg(seq ORDER BY id) AS id_order
	    FROM ledger.entries GROUP BY stream_id) a}),
	't', 'inside each stream, seq order equals id order');

# --- 2. an idle-in-transaction appender stalls read_all, visible in health ----

my $base = $node->safe_psql('postgres', 'SELECT max(id) FROM ledger.entries');
my $idle = $node->background_psql('postgres');
my $idle_pid = $idle->query_safe('SELECT pg_backend_pid()');
$idle->query_safe('BEGIN');
my $idle_id = $idle->query_safe(q{SELECT ledger.append('idle', '{"idle": true}')});
my @later = map {
	$node->safe_psql('postgres', qq{SELECT ledger.append('busy', '{"n": $_}')})
} 1 .. 5;
cmp_ok($later[0], '>', $idle_id, 'later appends get higher ids');
is($node->safe_psql('postgres', "SELECT count(*) FROM ledger.read_all($base, 100)"), '0',
	'read_all returns nothing above the open appender floor');
is($node->safe_psql('postgres', "SELECT count(*) FROM ledger.read_all($base, 100, wait => '300ms')"), '0',
	'read_all with wait times out empty while the appender is open');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ledger.read('busy')}), '5',
	'per-stream read of another stream is not held back');
my ($hok, $hdetail) = split /\|/, $node->safe_psql('postgres',
	q{SELECT ok, detail FROM ledger.health() WHERE check_name = 'read_all_horizon'});
like($hdetail, qr/pid $idle_pid\b/, "health names the idle appender's pid: $hdetail");
like($hdetail, qr/below id $idle_id\b/, 'health names the floor id');
like($hdetail, qr/open for \d+\.\d+ s/, 'health says how long');
is($hok, 't', 'a young open append is still ok');
$idle->query_safe('COMMIT');
is($node->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.read_all($base, 100)"),
	join(',', $idle_id, @later), 'after commit: the stalled entry and everything after it, in order');
is($node->safe_psql('postgres', q{SELECT ok, detail FROM ledger.health() WHERE check_name = 'read_all_horizon'}),
	't|no unsettled appends', 'health is clean again');

# --- 3. pg_terminate_backend of an appender mid-transaction releases the horizon

$base = $later[-1];
$idle->query_safe('BEGIN');
my $doomed_id = $idle->query_safe(q{SELECT ledger.append('doomed', '{"gone": true}')});
my $after_id = $node->safe_psql('postgres', q{SELECT ledger.append('busy', '{"after": "doomed"}')});
is($node->safe_psql('postgres', "SELECT count(*) FROM ledger.read_all($base, 100)"), '0',
	'held back by the doomed appender');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($idle_pid)");
ok($node->poll_query_until('postgres',
		"SELECT string_agg(id::text, ',') FROM ledger.read_all($base, 100)", $after_id),
	'after pg_terminate_backend read_all moves on, without the terminated entry');
ok($node->poll_query_until('postgres',
		q{SELECT detail FROM ledger.health() WHERE check_name = 'read_all_horizon'}, 'no unsettled appends'),
	'health forgets the terminated appender');
$idle->{run}->kill_kill;

# --- 4. PREPARE TRANSACTION after an append is refused -----------------------

my ($ret, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT ledger.append('prep', '{}'); PREPARE TRANSACTION 'ledger_p';},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:\s+0A000/, 'PREPARE TRANSACTION after append: 0A000');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0', 'nothing was prepared');
is($node->safe_psql('postgres', q{SELECT ledger.count('prep')}), '0', 'the append rolled back');
$node->safe_psql('postgres', q{BEGIN; SELECT ledger.count('prep'); PREPARE TRANSACTION 'ledger_ro'; COMMIT PREPARED 'ledger_ro';});
pass('PREPARE TRANSACTION without an append still works');
$base = $node->safe_psql('postgres', 'SELECT max(id) FROM ledger.entries');
my $fresh = $node->safe_psql('postgres', q{SELECT ledger.append('prep', '{}')});
is($node->safe_psql('postgres', "SELECT string_agg(id::text, ',') FROM ledger.read_all($base, 100)"), $fresh,
	'read_all is not stuck after the refused prepare');

# --- 5. a rolled-back id never appears ----------------------------------------

$base = $fresh;
my $rb = $node->background_psql('postgres');
$rb->query_safe('BEGIN');
my $rb_id = $rb->query_safe(q{SELECT ledger.append('rolled', '{"gone": true}')});
my $keep_id = $node->safe_psql('postgres', q{SELECT ledger.append('kept', '{}')});
$rb->query_safe('ROLLBACK');
is($node->safe_psql('postgres', "SELECT string_agg(id::text, ',') FROM ledger.read_all($base, 100)"), $keep_id,
	'after rollback read_all skips only the rolled-back id');
is($node->safe_psql('postgres', "SELECT count(*) FROM ledger.entries WHERE id = $rb_id"), '0',
	'the rolled-back id is not stored');

# --- 6. a REPEATABLE READ consumer must not skip a late commit ---------------
# The lower id commits after the consumer's transaction snapshot was taken but
# before read_all computes its horizon.

$base = $keep_id;
$rb->query_safe('BEGIN');
my $low = $rb->query_safe(q{SELECT ledger.append('rr', '{"low": true}')});
# (another stream: the same one would wait for the open one's stream row)
my $high = $node->safe_psql('postgres', q{SELECT ledger.append('rr-other', '{"high": true}')});
my $rr = $node->background_psql('postgres');
$rr->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$rr->query_safe('SELECT count(*) FROM pg_class');    # takes the snapshot
$rb->query_safe('COMMIT');
my $rr_seen = $rr->query_safe("SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.read_all($base, 100)");
$rr->query_safe('COMMIT');
my @rr_ids = ids_of($rr_seen);
ok(!@rr_ids || $rr_ids[0] == $low,
	"REPEATABLE READ consumer does not return id $high without the earlier id $low (got '$rr_seen')");
$rr->quit;
$rb->quit;

# --- 6b. the floor survives a rolled-back savepoint / failed exception block --
# The transaction's first append ran in a subtransaction that was rolled
# back; its later append is still open and must hold read_all back.

sub consume_once
{
	my ($after) = @_;
	my $csv = $node->safe_psql('postgres',
		"SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.read_all($after, 100)");
	return ids_of($csv);
}
$rb = $node->background_psql('postgres');
for my $variant ('SAVEPOINT s; SELECT ledger.append(\'sub\', \'{"gone": 1}\'); ROLLBACK TO SAVEPOINT s;',
	q{DO $$ BEGIN PERFORM ledger.append('sub', '{"gone": 2}'); RAISE EXCEPTION 'undo'; EXCEPTION WHEN raise_exception THEN NULL; END $$;})
{
	$base = $node->safe_psql('postgres', 'SELECT max(id) FROM ledger.entries');
	$rb->query_safe('BEGIN');
	$rb->query_safe($variant);
	my $open_id = $rb->query_safe(q{SELECT ledger.append('sub', '{"kept": true}')});
	my $later_id = $node->safe_psql('postgres', q{SELECT ledger.append('sub-other', '{}')});
	my @got = consume_once($base);
	is(scalar @got, 0, 'read_all held back after a rolled-back subtransaction: ' . substr($variant, 0, 20));
	$rb->query_safe('COMMIT');
	push @got, consume_once(@got ? $got[-1] : $base);
	is(join(',', @got), "$open_id,$later_id", 'the consumer sees both, in order');
}
$rb->quit;

# --- 6c. an open appender in another database does not hold this one back ----

$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION ledger');
my $elsewhere = $node->background_psql('other');
$elsewhere->query_safe('BEGIN');
$elsewhere->query_safe(q{SELECT ledger.append('x', '{}')});
$base = $node->safe_psql('postgres', 'SELECT max(id) FROM ledger.entries');
my $here = $node->safe_psql('postgres', q{SELECT ledger.append('here', '{}')});
is($node->safe_psql('postgres', "SELECT string_agg(id::text, ',') FROM ledger.read_all($base, 100)"), $here,
	'an open appender in another database does not hold read_all back');
is($node->safe_psql('postgres', q{SELECT detail FROM ledger.health() WHERE check_name = 'read_all_horizon'}),
	'no unsettled appends', "health does not report another database's appender");
like($node->safe_psql('other', q{SELECT detail FROM ledger.health() WHERE check_name = 'read_all_horizon'}),
	qr/oldest unsettled append/, 'but that database does');
$elsewhere->query_safe('COMMIT');
$elsewhere->quit;

# --- 6d. concurrent first appends and concurrent dedup keys -------------------

$node->safe_psql('postgres', 'CREATE TABLE first_ok (client int, stream text, id bigint)');
$node->safe_psql('postgres', 'CREATE TABLE dedup_ids (client int, k text, id bigint)');
@workers = ();
for my $c (1 .. 5)
{
	start_script("first$c", qq{
DO \$\$
DECLARE
	new_id bigint;
BEGIN
	FOR i IN 1 .. 30 LOOP
		BEGIN
			new_id := ledger.append('fresh-' || i, jsonb_build_object('c', $c), expected_seq => 0);
			INSERT INTO first_ok VALUES ($c, 'fresh-' || i, new_id);
		EXCEPTION WHEN serialization_failure THEN NULL;
		END;
		INSERT INTO dedup_ids VALUES ($c, 'k' || (i % 10), ledger.append('dd', jsonb_build_object('c', $c), dedup_key => 'k' || (i % 10)));
		COMMIT;
	END LOOP;
END
\$\$;
});
}
$_->{h}->finish for @workers;
is(join('', map { $_->{err} } @workers), '', 'concurrent first appends: no error but 40001');
is($node->safe_psql('postgres', q{SELECT count(*), count(DISTINCT stream) FROM first_ok}), '30|30',
	'expected_seq => 0 on a new stream: exactly one winner per stream');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE s.name LIKE 'fresh-%'}),
	'30', 'one entry per new stream');
is($node->safe_psql('postgres', q{SELECT count(*), count(DISTINCT k), count(DISTINCT id), bool_and(n = 1) FROM (SELECT k, count(DISTINCT id) AS n, min(id) AS id FROM dedup_ids GROUP BY k) x}),
	'10|10|10|t', 'concurrent appends with the same dedup key all got the one id');
is($node->safe_psql('postgres', q{SELECT ledger.count('dd')}), '10', 'one entry per dedup key');

# --- 7. parallel expected_seq appends: no gaps, no lost writes ---------------

$node->safe_psql('postgres', q{
CREATE TABLE es_ok (client int, id bigint, seq bigint);
CREATE TABLE es_fail (client int, detail text);
});
@workers = ();
my $clients = 6;
for my $c (1 .. $clients)
{
	start_script("es$c", qq{
DO \$\$
DECLARE
	s bigint;
	new_id bigint;
	d text;
BEGIN
	FOR i IN 1 .. 40 LOOP
		BEGIN
			SELECT coalesce(last_seq, 0) INTO s FROM ledger.stat('es');
			s := coalesce(s, 0);
			PERFORM pg_sleep(random() * 0.005);
			new_id := ledger.append('es', jsonb_build_object('c', $c, 'i', i), expected_seq => s);
			INSERT INTO es_ok VALUES ($c, new_id, s + 1);
		EXCEPTION WHEN serialization_failure THEN
			GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
			INSERT INTO es_fail VALUES ($c, d);
		END;
		COMMIT;
	END LOOP;
END
\$\$;
});
}
$_->{h}->finish for @workers;
is(join('', map { $_->{err} } @workers), '', 'expected_seq clients: only 40001 failures, all caught');
my ($nok, $nfail) = split /\|/, $node->safe_psql('postgres',
	q{SELECT (SELECT count(*) FROM es_ok), (SELECT count(*) FROM es_fail)});
is($nok + $nfail, $clients * 40, "every attempt either succeeded ($nok) or failed with 40001 ($nfail)");
cmp_ok($nok, '>', 0, 'some expected_seq appends succeeded');
is($node->safe_psql('postgres', q{SELECT ledger.count('es')}), $nok,
	'count() equals the number of successful appends: no lost write');
is($node->safe_psql('postgres', q{
	SELECT string_agg(e.seq::text, ',' ORDER BY e.seq) = string_agg(g::text, ',' ORDER BY g)
	  FROM ledger.read('es', "limit" => 10000) e
	  FULL JOIN generate_series(1, (SELECT count(*) FROM es_ok)) g ON g = e.seq}),
	't', 'successful appends hold seqs 1..n without gaps');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM es_ok o JOIN ledger.entries e ON e.id = o.id AND e.seq = o.seq}), $nok,
	'every success got exactly the seq it expected + 1');
is($node->safe_psql('postgres', q{SELECT count(*) FROM es_fail WHERE detail !~ 'last seq is [0-9]+'}), '0',
	'every 40001 detail names the actual seq');

$consumer->quit;
$node->stop;
done_testing();
