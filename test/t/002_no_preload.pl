# test/t/002_no_preload.pl
#	A server WITHOUT shared_preload_libraries = 'ledger': append, read, count,
#	stat, trim and upcasting work; wait fails with 55000 and a hint naming
#	shared_preload_libraries; read_all still never skips an entry of a slow
#	transaction (the horizon is published through the lock table); health()
#	reports preload = false.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->append_conf('postgresql.conf', "wal_level = logical\n");
$node->start;

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'), '',
	'ledger is not preloaded');
$node->safe_psql('postgres', 'CREATE EXTENSION ledger');

# Run SQL that must fail; return (sqlstate, whole stderr).
sub sql_error
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return ($state // "no error (ret $ret)", $err);
}

# --- the basics work -------------------------------------------------------
my $ids = $node->safe_psql('postgres', q{
SELECT string_agg(ledger.append('s', jsonb_build_object('n', g), dedup_key => 'd' || g)::text, ',' ORDER BY g)
  FROM generate_series(1, 5) g});
my @ids = split /,/, $ids;
is(scalar @ids, 5, 'five appends');
is($node->safe_psql('postgres', q{SELECT ledger.append('s', '{"n":1}', dedup_key => 'd1')}),
	$ids[0], 'dedup works');
is($node->safe_psql('postgres', q{SELECT string_agg(seq::text, ',') FROM ledger.read('s')}),
	'1,2,3,4,5', 'read returns seqs 1..5');
is($node->safe_psql('postgres', q{SELECT ledger.count('s')}), '5', 'count');
is($node->safe_psql('postgres', "SELECT ledger.trim('s', $ids[1])"), '2', 'trim removes two');
is($node->safe_psql('postgres', q{SELECT count, first_seq, last_seq, first_id, last_id FROM ledger.stat('s')}),
	"3|3|5|$ids[2]|$ids[4]", 'stat after trim');
is($node->safe_psql('postgres', q{SELECT (ledger.get('s', 4)).id}), $ids[3], 'get');
is((sql_error(q{SELECT ledger.get('s', 1)}))[0], '22003', 'get of a trimmed seq: 22003');

my $batch = $node->safe_psql('postgres',
	q{SELECT count(*) FILTER (WHERE NOT duplicate), max(seq) FROM ledger.append_batch('s', '[{"payload":{"n":6}},{"payload":{"n":7}}]'::jsonb)});
is($batch, '2|7', 'append_batch');

# upcasting
$node->safe_psql('postgres', q{
SELECT ledger.register_upcaster('s', 1, 2, rename => '{"n":"num"}');
SELECT ledger.set_schema_version('s', 2);
});
is($node->safe_psql('postgres', q{SELECT payload FROM ledger.read('s', "limit" => 1)}),
	'{"num": 3}', 'declarative upcaster applies on read');
is($node->safe_psql('postgres', q{SELECT payload FROM ledger.read('s', "limit" => 1, as_version => 1)}),
	'{"n": 3}', 'as_version 1 reads the stored payload');
my $v2id = $node->safe_psql('postgres', q{SELECT ledger.append('s', '{"num": 8}')});
is($node->safe_psql('postgres', "SELECT schema_version FROM ledger.entries WHERE id = $v2id"),
	'2', 'new appends are stamped with version 2');

# --- wait needs the preloaded library --------------------------------------
for my $call (q{SELECT * FROM ledger.read('s', after => 1000000, wait => '1 s')},
	q{SELECT * FROM ledger.read_all(after => 1000000, wait => '1 s')},
	q{SELECT * FROM ledger.read('nope', wait => '0 s')})
{
	my ($state, $err) = sql_error($call);
	is($state, '55000', "55000 for: $call");
	like($err, qr/HINT:.*shared_preload_libraries/, 'hint names shared_preload_libraries');
}

# --- health -----------------------------------------------------------------
is($node->safe_psql('postgres', q{SELECT ok FROM ledger.health() WHERE check_name = 'preload'}),
	'f', 'health: preload row is false');

# --- read_all works and does not skip a slow transaction ---------------------
my $all = $node->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.read_all(0, 1000)});
is($all, $node->safe_psql('postgres', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.entries}),
	'read_all returns every entry when nothing is open');
my $last = $node->safe_psql('postgres', q{SELECT max(id) FROM ledger.entries});

my $slow = $node->background_psql('postgres');
$slow->query_safe('BEGIN');
my $slow_id = $slow->query_safe(q{SELECT ledger.append('slow', '{"slow": true}')});
like($slow_id, qr/^\d+$/, "slow transaction appended id $slow_id and stays open");

my $fast_id = $node->safe_psql('postgres', q{SELECT ledger.append('fast', '{"fast": true}')});
cmp_ok($fast_id, '>', $slow_id, "a later autocommit append got the higher id $fast_id");
is($node->safe_psql('postgres', q{SELECT count(*) FROM ledger.read('fast')}), '1',
	'per-stream read sees the committed fast entry at once');
is($node->safe_psql('postgres', "SELECT count(*) FROM ledger.read_all($last, 100)"), '0',
	'read_all returns nothing above the open transaction floor');
is($node->safe_psql('postgres', "SELECT count(*) FROM ledger.read_all($last, 100, streams => 'fast')"), '0',
	'read_all with a stream filter is held back too');

# a second open transaction with an even higher id, then commit the slow one
my $slow2 = $node->background_psql('postgres');
$slow2->query_safe('BEGIN');
my $slow2_id = $slow2->query_safe(q{SELECT ledger.append('slow2', '{}')});
my $fast2_id = $node->safe_psql('postgres', q{SELECT ledger.append('fast', '{"fast": 2}')});

$slow->query_safe('COMMIT');
is($node->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.read_all($last, 100)"),
	"$slow_id,$fast_id", 'after the slow commit: its id, then the fast one, stopping below the second open transaction');

$slow2->query_safe('ROLLBACK');
is($node->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.read_all($fast_id, 100)"),
	"$fast2_id", 'after the rollback: the rolled-back id is gone, the later one appears');

# a terminated appender releases the horizon
$slow2->query_safe('BEGIN');
my $doomed_id = $slow2->query_safe(q{SELECT ledger.append('doomed', '{}')});
my $doomed_pid = $slow2->query_safe('SELECT pg_backend_pid()');
my $after_doomed = $node->safe_psql('postgres', q{SELECT ledger.append('fast', '{"fast": 3}')});
is($node->safe_psql('postgres', "SELECT count(*) FROM ledger.read_all($fast2_id, 100)"), '0',
	'held back by the doomed transaction');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($doomed_pid)");
ok($node->poll_query_until('postgres',
		"SELECT string_agg(id::text, ',') FROM ledger.read_all($fast2_id, 100)", $after_doomed),
	'terminating the appender releases the horizon; its entry never appears');
$slow2->quit;
$slow->quit;

# The floor must survive a rolled-back savepoint: the first append of the
# transaction ran inside a savepoint that was rolled back, a later append of
# the same transaction is still open and must hold read_all back.
sub consume_once
{
	my ($after) = @_;
	my $csv = $node->safe_psql('postgres',
		"SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.read_all($after, 100)");
	return $csv eq '' ? () : split(/,/, $csv);
}
my $sp = $node->background_psql('postgres');
my $sp_base = $node->safe_psql('postgres', q{SELECT max(id) FROM ledger.entries});
$sp->query_safe('BEGIN');
$sp->query_safe('SAVEPOINT s');
$sp->query_safe(q{SELECT ledger.append('sp', '{"gone": true}')});
$sp->query_safe('ROLLBACK TO SAVEPOINT s');
my $sp_id = $sp->query_safe(q{SELECT ledger.append('sp', '{"kept": true}')});
my $sp_later = $node->safe_psql('postgres', q{SELECT ledger.append('fast', '{"after": "savepoint"}')});
cmp_ok($sp_later, '>', $sp_id, 'the committed append got a higher id than the open one');
my @sp_seen = consume_once($sp_base);
is(scalar @sp_seen, 0, 'read_all is held back by an append made after a rolled-back savepoint');
$sp->query_safe('COMMIT');
push @sp_seen, consume_once(@sp_seen ? $sp_seen[-1] : $sp_base);
is(join(',', @sp_seen), "$sp_id,$sp_later",
	'a consumer following read_all(after => last) sees both, in order (no skip)');

# the same through a PL/pgSQL exception block (a subtransaction) that fails
$sp_base = $sp_later;
$sp->query_safe('BEGIN');
$sp->query_safe(q{DO $$ BEGIN PERFORM ledger.append('sp', '{"gone": 2}'); RAISE EXCEPTION 'undo'; EXCEPTION WHEN raise_exception THEN NULL; END $$});
my $sp_id2 = $sp->query_safe(q{SELECT ledger.append('sp', '{"kept": 2}')});
my $sp_later2 = $node->safe_psql('postgres', q{SELECT ledger.append('fast', '{"after": "exception block"}')});
@sp_seen = consume_once($sp_base);
is(scalar @sp_seen, 0, 'read_all is held back after a failed exception block in the appender');
$sp->query_safe('COMMIT');
push @sp_seen, consume_once(@sp_seen ? $sp_seen[-1] : $sp_base);
is(join(',', @sp_seen), "$sp_id2,$sp_later2",
	'a consumer following read_all(after => last) sees both, in order (no skip)');
$sp->quit;

# --- a consumer loop against concurrent appenders, through the lock table ---
my @workers;
sub start_script
{
	my ($name, $sql) = @_;
	my $file = $node->basedir . "/$name.sql";
	open my $fh, '>', $file or die "cannot write $file: $!";
	print $fh $sql;
	close $fh;
	my %w = (name => $name, out => '', err => '');
	$w{h} = IPC::Run::start(
		[ 'psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-f', $file ],
		'>', \$w{out}, '2>', \$w{err});
	push @workers, \%w;
}
my $c_last = $node->safe_psql('postgres', 'SELECT max(id) FROM ledger.entries');
my $c_start = $c_last;
start_script('auto', join '', map { "SELECT ledger.append('w-auto', '{\"i\": $_}');\n" } 1 .. 100);
start_script('slow', join '', map {
	"BEGIN;\nSELECT ledger.append('w-slow', '{\"s\": $_}');\nSELECT pg_sleep(0.8);\nCOMMIT;\n" } 1 .. 3);
start_script('multi', join '', map {
	"BEGIN;\nSELECT ledger.append('w-m1', '{}');\nSELECT pg_sleep(random() * 0.03);\n"
	  . "SELECT count(*) FROM ledger.append_batch('w-m2', '[{\"payload\":{}},{\"payload\":{}}]'::jsonb);\nCOMMIT;\n" } 1 .. 30);
start_script('rollback', join '', map {
	"BEGIN;\nSELECT ledger.append('w-rb', '{\"gone\": $_}');\nSELECT pg_sleep(random() * 0.05);\nROLLBACK;\n"
	  . "SELECT ledger.append('w-rb', '{\"kept\": $_}');\n" } 1 .. 30);
my $consumer = $node->background_psql('postgres');
my (@c_seen, $c_order_ok);
$c_order_ok = 1;
my $c_step = sub {
	my $csv = $consumer->query_safe(
		"SELECT string_agg(id::text, ',' ORDER BY ordinality) FROM ledger.read_all($c_last, 25) WITH ORDINALITY");
	my @ids = $csv eq '' ? () : split /,/, $csv;
	for my $id (@ids)
	{
		$c_order_ok = 0 if $id <= $c_last;
		push @c_seen, $id;
		$c_last = $id;
	}
	return scalar @ids;
};
while (grep { $_->{h}->pumpable } @workers)
{
	eval { $_->{h}->pump_nb } for @workers;
	$c_step->();
}
$_->{h}->finish for @workers;
is(join('', map { $_->{err} } @workers), '', 'concurrent appenders ran without errors');
1 while $c_step->() > 0;
$consumer->quit;
ok($c_order_ok, 'consumer ids strictly increasing');
is(join(',', @c_seen),
	$node->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.entries WHERE id > $c_start"),
	'consumer saw exactly the committed ids: nothing skipped, nothing rolled back');
is(scalar @c_seen, 100 + 3 + 30 * 3 + 30, 'and all of them')
  or diag $node->safe_psql('postgres', "SELECT s.name, count(*), min(e.id), max(e.id), min(seq), max(seq) FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE e.id > $c_start GROUP BY 1 ORDER BY 1");

# PREPARE TRANSACTION after an append is refused here too (needs max_prepared_transactions)
$node->append_conf('postgresql.conf', "max_prepared_transactions = 5\n");
$node->restart;
my ($state) = sql_error(q{BEGIN; SELECT ledger.append('p', '{}'); PREPARE TRANSACTION 'p1';});
is($state, '0A000', 'PREPARE TRANSACTION after an append: 0A000');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_prepared_xacts}), '0', 'nothing prepared');
is($node->safe_psql('postgres', q{SELECT ledger.count('p')}), '0', 'the append was rolled back');
is($node->safe_psql('postgres', q{SELECT count(*) > 0 FROM ledger.read_all(0, 1000)}), 't',
	'read_all still works after the refused prepare');

$node->stop;
done_testing();
