# test/t/022_standby.pl
#	ledger on a hot standby (pg_basebackup -R, streaming):
#	  - the deterministic case: a primary transaction A draws id 2 and stays
#	    open while B appends id 3 and commits; the standby's
#	    read_all(after => 1) does not return 3 before 2 is settled, then
#	    returns both (also when A rolls back);
#	  - a read_all consumer on the standby, while 4 sessions append on the
#	    primary, misses and repeats no id;
#	  - a standby read(wait) returns within 100 ms of the entry's replay;
#	  - a restarted standby keeps its horizon while the primary is idle;
#	  - health() on the standby reports the replayed horizon, not a missing
#	    worker; writes fail with 25006;
#	  - after promotion appends continue gapless and the worker takes over.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ledger'
max_connections = 40
});
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION ledger');
$primary->safe_psql('postgres', q{SELECT ledger.append('first', '{}')});

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->append_conf('postgresql.conf', "hot_standby_feedback = on\n");
$standby->start;
$primary->wait_for_catchup($standby);

sub on_standby { return $standby->safe_psql('postgres', $_[0]); }

# --- the deterministic case ------------------------------------------------

my $a = $primary->background_psql('postgres');
my $b = $primary->background_psql('postgres');
$b->query_safe(q{SELECT ledger.append('b', '{}')});    # a record the standby's horizon starts from
$primary->wait_for_catchup($standby);
my $base = on_standby(q{SELECT max(id) FROM ledger.read_all(0, 100)});
is($base, '2', 'the standby has a horizon once a record is replayed');

$a->query_safe('BEGIN');
my $id_a = $a->query_safe(q{SELECT ledger.append('a', '{"who": "A"}')});
my $id_b = $b->query_safe(q{SELECT ledger.append('b', '{"who": "B"}')});
cmp_ok($id_a, '<', $id_b, "A drew $id_a, B drew $id_b");
$primary->wait_for_catchup($standby);
is(on_standby("SELECT count(*) FROM ledger.read('b', after => $base)"), '1',
	"the standby has replayed B's entry $id_b");
is(on_standby("SELECT count(*) FROM ledger.read_all(after => $base)"), '0',
	"read_all on the standby does not return $id_b while $id_a is open on the primary");
$a->query_safe('COMMIT');
$standby->poll_query_until('postgres',
	"SELECT string_agg(id::text, ',' ORDER BY id) = '$id_a,$id_b' FROM ledger.read_all(after => $base)")
  or die 'the standby never returned both';
pass("after A commits, read_all on the standby returns $id_a, $id_b in order");

# the same with a rollback: the abort's record lets the horizon move
$a->query_safe('BEGIN');
my $id_a2 = $a->query_safe(q{SELECT ledger.append('a', '{"who": "A2"}')});
my $id_b2 = $b->query_safe(q{SELECT ledger.append('b', '{"who": "B2"}')});
$primary->wait_for_catchup($standby);
is(on_standby("SELECT count(*) FROM ledger.read_all(after => $id_b)"), '0',
	"read_all on the standby holds back $id_b2 while $id_a2 is open");
$a->query_safe('ROLLBACK');
$standby->poll_query_until('postgres',
	"SELECT string_agg(id::text, ',' ORDER BY id) = '$id_b2' FROM ledger.read_all(after => $id_b)")
  or die 'the standby never returned B2';
pass("after A rolls back, read_all on the standby returns $id_b2");

# --- a restarted standby keeps its horizon, the primary idle ---------------

my $all = q{SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger.read_all(0, 1000)};
my $before_restart = on_standby($all);
# a restartpoint after the last horizon record, so that replay after the
# restart starts beyond it
$primary->safe_psql('postgres', 'CHECKPOINT');
$primary->wait_for_catchup($standby);
$standby->safe_psql('postgres', 'CHECKPOINT');
$standby->restart;
$primary->wait_for_catchup($standby);
is(on_standby($all), $before_restart, 'a restarted standby returns what it returned before, with no new record');
like(on_standby(q{SELECT detail FROM ledger.health() WHERE check_name = 'read_all_horizon' AND ok}),
	qr/saved before this standby restarted/, 'health() says where that horizon comes from');

# --- read(wait) on the standby wakes on replay -----------------------------

$primary->safe_psql('postgres', q{SELECT ledger.append('tail', '{}')});	# waited on as itself
$primary->wait_for_catchup($standby);
my $after = $primary->safe_psql('postgres', q{SELECT max(id) FROM ledger.entries});
my $waited = '';
my $reader = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $standby->connstr('postgres'), '-c',
	  qq{SELECT extract(epoch FROM clock_timestamp()), count(*) FROM ledger.read('tail', after => $after, wait => '20 s')} ],
	'>', \$waited, '2>', \$waited);
$standby->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%read(''tail''%'})
  or die 'the waiting read did not start';
my $poller = $standby->background_psql('postgres');
$primary->safe_psql('postgres', q{SELECT ledger.append('tail', '{}')});
my $visible_at;
my $deadline = time + 30;
while (time < $deadline)
{
	# the entry's replay, as an ordinary snapshot on the standby sees it
	my $r = $poller->query_safe(qq{SELECT extract(epoch FROM clock_timestamp()) FROM ledger.entries WHERE id > $after});
	if ($r ne '') { $visible_at = $r; last; }
}
$reader->finish;
my ($returned_at, $count) = split /\|/, (split /\n/, $waited)[0];
ok(defined $visible_at, 'the entry was replayed');
is($count, '1', 'the waiting read returned the entry');
my $late = ($returned_at - $visible_at) * 1000;
cmp_ok($late, '<', 100, sprintf('the waiting read returned %.1f ms after the entry was visible on the standby', $late));
$poller->quit;

# --- health and writes on the standby --------------------------------------

my $health = on_standby(q{SELECT string_agg(check_name || '=' || ok || ': ' || detail, E'\n' ORDER BY check_name) FROM ledger.health()});
like($health, qr/read_all_horizon=true: hot standby: read_all returns ids below \d+, as of the primary's horizon record at [0-9A-F]+\/[0-9A-F]+, logged .*; replayed \d+ ms after it was logged, \d+ ms ago/,
	'health() on the standby reports the replayed horizon and its lag');
like($health, qr/worker=true: hot standby: the ledger worker runs on the primary/, 'and no missing worker');
my ($rc, $out, $err) = $standby->psql('postgres', q{SELECT ledger.append('x', '{}')});
like($err, qr/read-only transaction/, 'appends on the standby fail');
($rc, $out, $err) = $standby->psql('postgres', q{SELECT ledger.append('x', '{}')}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/25006/, 'with 25006');

# --- a consumer on the standby under 4 appenders ---------------------------

my @appenders;
for my $k (1 .. 4)
{
	my $sql = join '', map {
		$_ % 3 == 0
		  ? "SELECT ledger.append('load-$k', '{\"i\": $_}');\n"
		  : "BEGIN;\nSELECT ledger.append('load-$k', '{\"i\": $_}');\nSELECT pg_sleep(random() * 0.02);\n"
			. "SELECT ledger.append('load-$k-' || (random() * 3)::int, '{\"j\": $_}');\n"
			. ($_ % 7 == 0 ? "ROLLBACK;\n" : "COMMIT;\n")
	} 1 .. 400;
	my $file = $primary->basedir . "/appender$k.sql";
	open my $fh, '>', $file or die $!;
	print $fh $sql;
	close $fh;
	my $o = '';
	push @appenders, [ IPC::Run::start([ 'psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $primary->connstr('postgres'), '-f', $file ], '>', \$o, '2>', \$o), \$o ];
}
sub finished
{
	my ($h) = @_;
	$h->pump_nb if $h->pumpable;
	return !$h->pumpable;
}
my $consumer = $standby->background_psql('postgres');
my $cursor = $id_b2;
my @seen;
my ($marker, $ended);
my $consume_until = time + 180;
while (time < $consume_until && !defined $marker)
{
	my $page = $consumer->query_safe(qq{SELECT string_agg(id || ':' || stream, ',' ORDER BY id) FROM ledger.read_all(after => $cursor, "limit" => 100, wait => '200 ms')});
	for my $row (split /,/, $page)
	{
		my ($id, $stream) = split /:/, $row;
		push @seen, $id;
		$cursor = $id;
		$marker = $id if $stream eq 'end';
	}
	if (!$ended && !grep { !finished($_->[0]) } @appenders)
	{
		# every appender is done: an end marker above all their ids
		$primary->safe_psql('postgres', q{SELECT ledger.append('end', '{}')});
		$ended = 1;
	}
}
for my $ap (@appenders)
{
	$ap->[0]->finish;
	is($ap->[0]->result(0), 0, 'an appender ran') or diag(${ $ap->[1] });
}
ok(defined $marker, 'the consumer reached the end marker');
my @expected = split /\n/, $primary->safe_psql('postgres', "SELECT id FROM ledger.entries WHERE id > $id_b2 ORDER BY id");
my %count;
$count{$_}++ for @seen;
is(scalar(grep { $count{$_} > 1 } keys %count), 0, 'the standby consumer saw no id twice');
is(join(',', @seen), join(',', @expected), 'and every id the primary holds, in order (' . scalar(@expected) . ' ids)')
  or do
{
	# what the consumer missed, to tell a skip from a harness problem
	my %got = map { $_ => 1 } @seen;
	my @missing = grep { !$got{$_} } @expected;
	diag('missing: ' . $primary->safe_psql('postgres',
		'SELECT string_agg(e.id || \' \' || s.name || \' xmin \' || e.xmin, \', \' ORDER BY e.id)'
		. ' FROM ledger.entries e JOIN ledger.streams s USING (stream_id) WHERE e.id = ANY (ARRAY['
		. join(',', @missing[0 .. ($#missing < 19 ? $#missing : 19)]) . ']::bigint[])'))
	  if @missing;
	my ($wal) = run_command([ 'pg_waldump', '-p', $primary->data_dir . '/pg_wal', '-r', 'custom197',
		$primary->safe_psql('postgres', q{SELECT pg_walfile_name(pg_current_wal_lsn())}) ]);
	my @lines = split /\n/, ($wal // '');
	splice(@lines, 0, @lines - 40) if @lines > 40;
	diag("horizon records (last 40):\n" . join("\n", @lines));
};
$consumer->quit;

# --- promotion ---------------------------------------------------------------

$a->quit;
$b->quit;
my $before_seq = on_standby(q{SELECT (ledger.stat('load-1')).last_seq});
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die 'no promotion';
my $next = on_standby(q{SELECT ledger.append('load-1', '{"after": "promotion"}')});
cmp_ok($next, '>', $cursor, 'the promoted server appends above every replayed id');
is(on_standby(q{SELECT (ledger.stat('load-1')).last_seq}), $before_seq + 1, 'seq goes on without a gap');
is(on_standby(q{SELECT count(*) FROM (SELECT seq, row_number() OVER (ORDER BY seq) rn FROM ledger.read('load-1', "limit" => 10000)) s WHERE seq <> rn}),
	'0', 'the stream\'s seqs are 1, 2, 3, ... with no gap');
is(on_standby("SELECT string_agg(id::text, ',') FROM ledger.read_all(after => $cursor)"), $next,
	'read_all on the promoted server returns the new entry');
on_standby(q{SELECT ledger.set_retention('load-*', max_entries => 100000)});
$standby->poll_query_until('postgres',
	q{SELECT ok AND detail LIKE 'ledger worker running%' FROM ledger.health() WHERE check_name = 'worker'})
  or die 'no worker after promotion';
pass('the worker takes over after promotion');

$standby->stop;
$primary->stop;
done_testing();
