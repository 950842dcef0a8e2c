# test/t/021_router.pl
#	ledger_router: three ledger nodes and a router database, each in a
#	cluster of its own, on loopback.
#	  - the router's ledger functions have ledger's exact signatures, and
#	    every routed function works through the router, as on the node;
#	  - each stream lives on exactly one node, the one node_of() names;
#	    ids are unique across nodes and carry their node's number;
#	  - per-node consumers (read_all with one cursor per node, and
#	    read_node with wait) miss and repeat nothing while appends run on
#	    every node, through the router and directly;
#	  - roles: the router checks its grants, the node checks its own;
#	  - slot moves pin existing streams, new streams go to the new node,
#	    a moving slot refuses writes; pins that would lose a stream are
#	    refused; a joining node must be empty and numbered as it says;
#	  - pg_dump/pg_restore keeps a node's identity and a router's nodes;
#	  - a hot standby of the router routes calls;
#	  - a node that is down, or that hangs, gives an error naming it
#	    at once or within ledger_router.call_timeout; a read's wait
#	    extends that deadline.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);

my @nodes;
for my $k (1 .. 3)
{
	my $node = PostgreSQL::Test::Cluster->new("node$k");
	$node->init;
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ledger'
listen_addresses = '127.0.0.1'
max_connections = 40
});
	$node->start;
	$node->safe_psql('postgres', qq{
CREATE EXTENSION ledger;
SELECT ledger.set_node($k);
CREATE ROLE alice LOGIN IN ROLE ledger_writer;
CREATE ROLE bob LOGIN IN ROLE ledger_reader;
CREATE ROLE carol LOGIN IN ROLE ledger_reader;
CREATE FUNCTION public.add_v2(p jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
	AS \$\$ SELECT p || '{"v2": true}' \$\$;
});
	push @nodes, $node;
}

my $router = PostgreSQL::Test::Cluster->new('router');
$router->init(allows_streaming => 1);
$router->append_conf('postgresql.conf', "max_connections = 40\n");
$router->start;
$router->safe_psql('postgres', 'CREATE DATABASE router');

sub rq { return $router->safe_psql('router', $_[0]); }

# psql on the router as a role; returns (exit code, stdout, stderr)
sub router_try
{
	my ($sql, $user) = @_;
	my ($out, $err, $timed_out) = ('', '', 0);
	# a call that hangs fails the test instead of stalling it
	my $rc = $router->psql('router', $sql, stdout => \$out, stderr => \$err,
		timeout => 60, timed_out => \$timed_out,
		extra_params => [ '-v', 'VERBOSITY=verbose', (defined $user ? ('-U', $user) : ()) ]);
	$err .= "\n(psql timed out)" if $timed_out;
	return ($rc, $out, $err);
}

sub connstr_of
{
	my ($node) = @_;
	return 'host=127.0.0.1 port=' . $node->port . ' dbname=postgres';
}

rq(q{
CREATE EXTENSION ledger_router CASCADE;
CREATE ROLE alice LOGIN IN ROLE ledger_writer;
CREATE ROLE bob LOGIN IN ROLE ledger_reader;
CREATE ROLE carol LOGIN IN ROLE ledger_writer;
CREATE FUNCTION public.add_v2(p jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
	AS $$ SELECT p || '{"v2": true}' $$;
});

# --- joining --------------------------------------------------------------

# calls to nodes give up after 3 s beyond the wait they ask for
$router->safe_psql('postgres', q{ALTER DATABASE router SET ledger_router.call_timeout = '3s'});

my ($rc, $out, $err) = router_try(q{SELECT ledger.count('x')});
like($err, qr/55000: the ledger router has no nodes/, 'an empty router says it has no nodes');

($rc, $out, $err) = router_try("SELECT ledger_router.add_node('n1', '" . connstr_of($nodes[0]) . " password=x', 1)");
like($err, qr/22023: the connection string of node "n1" contains a password/, 'a password in a connection string is refused');

($rc, $out, $err) = router_try("SELECT ledger_router.add_node('n1', '" . connstr_of($nodes[0]) . "', 7)");
like($err, qr/55000: node "n1" is node number 1 with 10 node bits, not node number 7/,
	'a node must be the number it is given');

$nodes[2]->safe_psql('postgres', q{SELECT ledger.append('stray', '{}')});
($rc, $out, $err) = router_try("SELECT ledger_router.add_node('n3', '" . connstr_of($nodes[2]) . "', 3)");
like($err, qr/55000: node "n3" already holds streams/, 'a node holding streams cannot join');
$nodes[2]->safe_psql('postgres', q{SELECT ledger.trim('stray', 1000000)});

($rc, $out, $err) = router_try(q{SELECT ledger_router.add_node('nx', 'host=127.0.0.1 port=1 dbname=postgres', 9)});
like($err, qr/08006: ledger router: node "nx" cannot be reached/, 'an unreachable node cannot join, and is named');

for my $k (1 .. 3)
{
	rq("SELECT ledger_router.add_node('n$k', '" . connstr_of($nodes[ $k - 1 ]) . "', $k)");
}
($rc, $out, $err) = router_try("SELECT ledger_router.add_node('n1', '" . connstr_of($nodes[0]) . "', 1)");
like($err, qr/42710/, 'a node joins once');
($rc, $out, $err) = router_try("SELECT ledger_router.add_node('n4', 'host=x', 4)", 'alice');
like($err, qr/42501/, 'add_node needs a superuser');

is(rq(q{SELECT string_agg(n.name || ':' || c, ',' ORDER BY n.name) FROM
	(SELECT node, count(*) c FROM ledger_router.slots GROUP BY node) s JOIN ledger_router.nodes n USING (node)}),
	'n1:4096', 'the first node owns every slot');
is(rq(q{SELECT ledger_router.rebalance()}), '2730', 'rebalance moves two thirds of the slots');
is(rq(q{SELECT string_agg(c::text, ',' ORDER BY node) FROM (SELECT node, count(*) c FROM ledger_router.slots GROUP BY node) s}),
	'1366,1365,1365', 'every node owns a fair share of the slots');
is(rq(q{SELECT ledger_router.rebalance()}), '0', 'a balanced router moves nothing');

# --- signatures -----------------------------------------------------------

my $signatures = q{
SELECT string_agg(p.proname || '(' || pg_get_function_arguments(p.oid) || ') ' || pg_get_function_result(p.oid),
                  E'\n' ORDER BY p.proname, pg_get_function_arguments(p.oid))
  FROM pg_proc p
 WHERE p.pronamespace = 'ledger'::regnamespace
   AND p.proname IN ('append', 'append_batch', 'read', 'get', 'count', 'stat', 'streams', 'set_tags',
                     'set_annotations', 'trim', 'set_schema_version', 'set_retention',
                     'register_upcaster', 'drop_upcaster')};
my $types = q{
SELECT string_agg(t.typname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod), E'\n' ORDER BY t.typname, a.attnum)
  FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid
 WHERE t.typnamespace = 'ledger'::regnamespace AND t.typname IN ('entry', 'append_input', 'stream_stat')
   AND a.attnum > 0};
is(rq($signatures), $nodes[0]->safe_psql('postgres', $signatures),
	'the router has ledger\'s stream functions with the same signatures and defaults');
is(rq($types), $nodes[0]->safe_psql('postgres', $types), 'and the same types');

# --- every routed function ------------------------------------------------

rq(q{SELECT ledger.append('orders-' || g, jsonb_build_object('amt', g), order_key => 'k' || (g % 2),
                          dedup_key => 'd' || g, metadata => '{"src":"r"}', tags => ARRAY['t' || (g % 3)])
       FROM generate_series(1, 30) g});
my $direct = 0;
my %owner;
for my $g (1 .. 30)
{
	my $name = rq("SELECT ledger_router.node_of('orders-$g')");
	$owner{"orders-$g"} = $name;
	my @counts = map { $_->safe_psql('postgres', "SELECT ledger.count('orders-$g')") } @nodes;
	my @holders = grep { $counts[ $_ - 1 ] ne '0' } 1 .. 3;
	$direct++ if @holders == 1 && "n$holders[0]" eq $name;
}
is($direct, 30, 'each stream lives on exactly the node node_of() names');
my %used = map { $_ => 1 } values %owner;
is(scalar(keys %used), 3, 'streams spread over all three nodes');

my $s = 'orders-7';
my $home = $nodes[ substr($owner{$s}, 1) - 1 ];
is(rq(qq{SELECT ledger.append('$s', '{"amt": 0}', dedup_key => 'd7')}),
	$home->safe_psql('postgres', qq{SELECT id FROM ledger.read('$s')}), 'a dedup hit returns the existing id');
rq(qq{SELECT * FROM ledger.append_batch('$s', '[{"payload":{"b":1}},{"payload":{"b":2},"dedup_key":"bd"}]')});
rq(qq{SELECT * FROM ledger.append_batch('$s', '[{"payload":{"b":3},"dedup_key":"bd"}]'::jsonb)});
is(rq(qq{SELECT string_agg(seq || ':' || duplicate, ',') FROM ledger.append_batch('$s',
	ARRAY[ROW('{"b":4}', 'k1', '', '{}', '{x}')::ledger.append_input, ROW('{"b":5}', '', 'bd', '{}', '{}')::ledger.append_input])}),
	'4:false,3:true', 'append_batch with ledger.append_input[] (and a duplicate)');
is(rq(qq{SELECT string_agg(seq::text, ',') FROM ledger.append_batch('$s', '[]'::jsonb)}), '', 'an empty batch');

my $read = qq{SELECT id, seq, payload, order_key, tags FROM ledger.read('$s') ORDER BY id};
is(rq($read), $home->safe_psql('postgres', $read), 'read through the router returns what the node has');
is(rq(qq{SELECT string_agg(seq::text, ',') FROM ledger.read('$s', order_key => 'k1')}), '1,4', 'read with a filter');
is(rq(qq{SELECT string_agg(seq::text, ',') FROM ledger.read('$s', descending => true, "limit" => 2)}), '4,3', 'read descending');
is(rq(qq{SELECT (ledger.get('$s', 2)).payload}), '{"b": 1}', 'get');
is(rq(qq{SELECT ledger.count('$s')}), '4', 'count');
is(rq(qq{SELECT (s).last_seq || ',' || (s).count FROM ledger.stat('$s') s}), '4,4', 'stat');
my $first = rq(qq{SELECT (ledger.get('$s', 1)).id});
rq(qq{SELECT ledger.set_tags('$s', $first, '{vip}'); SELECT ledger.set_annotations('$s', $first, '{"n":"1"}')});
is(rq(qq{SELECT tags::text || ' ' || annotations::text FROM ledger.get('$s', 1)}), '{vip} {"n": "1"}', 'set_tags and set_annotations');
is(rq(qq{SELECT ledger.trim('$s', $first)}), '1', 'trim');
is(rq(qq{SELECT (s).first_seq FROM ledger.stat('$s') s}), '2', 'trim reached the node');
is(rq(q{SELECT count(*) FROM ledger.streams("limit" => 1000) s WHERE s LIKE 'orders-%'}), '30',
	'streams() lists every node\'s streams');
is(rq(q{SELECT string_agg(s, ',') FROM ledger.streams(after => 'orders-3', "limit" => 3, prefix => 'orders-') s}),
	'orders-30,orders-4,orders-5', 'streams() pages across nodes in order');

# errors read as the node's, with its SQLSTATE
($rc, $out, $err) = router_try(qq{SELECT ledger.get('$s', 99)});
like($err, qr/ERROR:  22003: seq 99 of stream "orders-7" is beyond its last entry\nDETAIL:  The stream's last seq is 4\./,
	'a node\'s error keeps its SQLSTATE, message and detail');
($rc, $out, $err) = router_try(qq{SELECT ledger.append('$s', '{}', expected_seq => 1)});
like($err, qr/40001: stream "orders-7" is at seq 4, not at the expected seq 1/, 'expected_seq mismatch');
($rc, $out, $err) = router_try(qq{SELECT ledger.set_tags('$s', 1, '{}')});
like($err, qr/P0002/, 'set_tags of a missing entry');
($rc, $out, $err) = router_try(q{SELECT ledger.append(NULL, '{}')});
like($err, qr/22023/, 'a NULL stream gets ledger\'s error');

# settings go to every node, and to a node that joins later
rq(q{SELECT ledger.register_upcaster('orders-*', 1, 2, rename => '{"amt":"amount"}')});
rq(q{SELECT ledger.register_upcaster('orders-*', 2, 3, '{}', '{"currency":"EUR"}')});
rq(q{SELECT ledger.register_upcaster('audit', 1, 2, 'public.add_v2(jsonb)'::regprocedure)});
rq(q{SELECT ledger.set_schema_version('orders-*', 3)});
rq(q{SELECT ledger.set_retention('audit', max_entries => 1000)});
for my $k (1 .. 3)
{
	is($nodes[ $k - 1 ]->safe_psql('postgres', q{SELECT count(*) FROM ledger.upcasters}), '3', "node $k has the upcasters");
}
is(rq(q{SELECT payload FROM ledger.read('orders-3')}), '{"amount": 3, "currency": "EUR"}', 'reads upcast on the node');
rq(q{SELECT ledger.append('audit', '{"who":"x"}')});
is(rq(q{SELECT payload FROM ledger.read('audit', as_version => 2)}), '{"v2": true, "who": "x"}', 'a function upcaster');
rq(q{SELECT ledger.drop_upcaster('orders-*', 2)});
is($nodes[1]->safe_psql('postgres', q{SELECT count(*) FROM ledger.upcasters}), '2', 'drop_upcaster reaches the nodes');
is(rq(q{SELECT count(*) FROM ledger_router.upcasters}), '2', 'and the router\'s record');
rq(q{SELECT ledger.set_schema_version('orders-*', 2)});

# read(wait) through the router wakes on an append
my $waited = '';
my $h = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $router->connstr('router'), '-c',
	  q{SELECT clock_timestamp() - now() < '4 s', count(*) FROM ledger.read('waited', wait => '20 s')} ],
	'>', \$waited, '2>', \$waited);
$router->poll_query_until('router',
	q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%waited%' AND pid <> pg_backend_pid() AND state = 'active'})
  or die 'the waiting read did not start';
rq(q{SELECT ledger.append('waited', '{}')});
$h->finish;
is($waited, "t|1\n", 'read(wait) through the router returns when an entry is appended');
my $t_wait = time;
is(rq(q{SET ledger_router.call_timeout = '1s'; SELECT count(*) FROM ledger.read('empty', wait => '3 s')}), '0',
	'a wait longer than call_timeout is no timeout');
cmp_ok(time - $t_wait, '>=', 2.9, 'the read waited its 3 s');

# --- roles ----------------------------------------------------------------

($rc, $out, $err) = router_try(q{SELECT count(*) FROM ledger.read('orders-3')}, 'bob');
is($out, '1', 'a reader reads through the router');
($rc, $out, $err) = router_try(q{SELECT ledger.append('orders-3', '{}')}, 'bob');
like($err, qr/42501: permission denied for function append/, 'a reader cannot append on the router');
($rc, $out, $err) = router_try(q{SELECT ledger.append('orders-3', '{}')}, 'alice');
is($rc, 0, 'a writer appends through the router');
($rc, $out, $err) = router_try(q{SELECT ledger.trim('orders-3', 1)}, 'alice');
like($err, qr/42501/, 'a writer cannot trim');
($rc, $out, $err) = router_try(q{SELECT ledger.append('orders-3', '{}')}, 'carol');
like($err, qr/42501: permission denied for function append/,
	'the node checks the calling role too (carol writes on the router, reads on the node)');

# --- ids and consumers ----------------------------------------------------

# one stream per node for the direct appenders and the end markers
for my $k (1 .. 3)
{
	rq("SELECT ledger_router.pin_stream('direct-n$k', 'n$k'); SELECT ledger_router.pin_stream('marker-n$k', 'n$k')");
}

rq(q{
CREATE TABLE seen_all (id bigint, node text);
CREATE TABLE seen_node (id bigint, node text);
});

my @procs;
sub start_psql
{
	my ($connstr, $sql, $name) = @_;
	my $file = $router->basedir . "/$name.sql";
	open my $fh, '>', $file or die "cannot write $file: $!";
	print $fh $sql;
	close $fh;
	my %p = (name => $name, out => '');
	$p{h} = IPC::Run::start([ 'psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $connstr, '-f', $file ],
		'>', \$p{out}, '2>', \$p{out});
	push @procs, \%p;
	return \%p;
}

# Consumer 1: pages of every node, one cursor per node (the largest id it
# got from that node), until it has seen every node's end marker.
my $consumer_all = start_psql($router->connstr('router'), q{
DO $$
DECLARE
	cursors		bigint[] := '{}';
	page		bigint[];
	markers		integer := 0;
	deadline	timestamptz := clock_timestamp() + interval '240 s';
	r			record;
BEGIN
	WHILE markers < 3 LOOP
		IF clock_timestamp() > deadline THEN RAISE EXCEPTION 'consumer timed out'; END IF;
		page := '{}';
		FOR r IN SELECT * FROM ledger_router.read_all(cursors, 50) LOOP
			INSERT INTO seen_all VALUES (r.id, r.node);
			page := page || r.id;
			IF r.stream LIKE 'marker-%' THEN markers := markers + 1; END IF;
		END LOOP;
		IF cardinality(page) = 0 THEN
			PERFORM pg_sleep(0.01);
		ELSE
			cursors := ARRAY(SELECT max(c) FROM unnest(cursors || page) c GROUP BY c & 1023);
		END IF;
	END LOOP;
END
$$;
}, 'consumer_all');

# Consumer 2: one node at a time with read_node and wait.
my $consumer_node = start_psql($router->connstr('router'), q{
DO $$
DECLARE
	cursor_of	bigint[] := '{0,0,0}';
	done		boolean[] := '{f,f,f}';
	deadline	timestamptz := clock_timestamp() + interval '240 s';
	k			integer := 1;
	r			record;
BEGIN
	WHILE NOT (done[1] AND done[2] AND done[3]) LOOP
		IF clock_timestamp() > deadline THEN RAISE EXCEPTION 'consumer timed out'; END IF;
		FOR r IN SELECT * FROM ledger_router.read_node('n' || k, cursor_of[k], 30, wait => '20 ms') LOOP
			INSERT INTO seen_node VALUES (r.id, 'n' || k);
			cursor_of[k] := r.id;
			IF r.stream LIKE 'marker-%' THEN done[k] := true; END IF;
		END LOOP;
		k := k % 3 + 1;
	END LOOP;
END
$$;
}, 'consumer_node');

# Appenders: two through the router, one directly on each node with
# transactions that stay open while others commit.
my $router_script = join '', map {
	"SELECT ledger.append('load-' || (random() * 40)::int, '{\"i\": $_}');\n"
	  . ($_ % 10 == 0 ? "SELECT count(*) FROM ledger.append_batch('batch-$_', '[{\"payload\":{}},{\"payload\":{}}]'::jsonb);\n" : '')
} 1 .. 150;
start_psql($router->connstr('router'), $router_script, "router_appender_$_") for 1 .. 2;
for my $k (1 .. 3)
{
	my $script = join '', map {
		"BEGIN;\nSELECT ledger.append('direct-n$k', '{\"t\": $_}');\n"
		  . "SELECT pg_sleep(random() * 0.03);\n"
		  . "SELECT ledger.append('direct-n$k', '{\"t\": $_, \"last\": true}');\nCOMMIT;\n"
	} 1 .. 60;
	start_psql($nodes[ $k - 1 ]->connstr('postgres'), $script, "direct_appender_$k");
}
for my $p (grep { $_->{name} =~ /appender/ } @procs)
{
	$p->{h}->finish;
	is($p->{h}->result(0), 0, "$p->{name} ran") or diag($p->{out});
}
rq("SELECT ledger.append('marker-n$_', '{}')") for 1 .. 3;
for my $p ($consumer_all, $consumer_node)
{
	$p->{h}->finish;
	is($p->{h}->result(0), 0, "$p->{name} saw every node's end marker") or diag($p->{out});
}

my @all;
for my $k (1 .. 3)
{
	my @ids = split /\n/, $nodes[ $k - 1 ]->safe_psql('postgres', q{SELECT id FROM ledger.entries ORDER BY id});
	is(scalar(grep { $_ % 1024 != $k } @ids), 0, "every id on node $k carries its number in the low bits");
	push @all, @ids;
}
my %distinct = map { $_ => 1 } @all;
is(scalar(keys %distinct), scalar(@all), 'ids are unique across the nodes (' . scalar(@all) . ' entries)');
my $expected = join ',', sort { $a <=> $b } @all;
for my $table ('seen_all', 'seen_node')
{
	is(rq("SELECT count(*) - count(DISTINCT id) FROM $table"), '0', "$table: no entry seen twice");
	# entries trimmed before the consumers started are not expected
	my $seen = rq("SELECT string_agg(id::text, ',' ORDER BY id) FROM $table");
	is($seen, $expected, "$table: every entry of every node seen");
	is(rq("SELECT count(*) FROM $table WHERE id % 1024 <> substr(node, 2)::int"), '0', "$table: rows tagged with their node");
}

# --- moving slots, pins ---------------------------------------------------

my $stream = 'orders-12';
my $from = rq("SELECT ledger_router.node_of('$stream')");
my $to = $from eq 'n1' ? 'n2' : 'n1';
my $slot = rq("SELECT ledger_router.slot_of('$stream')");
my $fresh = rq("SELECT 'fresh-' || g FROM generate_series(1, 500000) g WHERE ledger_router.slot_of('fresh-' || g) = $slot LIMIT 1");
my $before = rq("SELECT ledger.count('$stream')");
cmp_ok(rq("SELECT ledger_router.move_slots(ARRAY[$slot], '$to')"), '>=', 1, 'move_slots pins the slot\'s existing streams');
is(rq("SELECT ledger_router.node_of('$stream')"), $from, 'an existing stream stays on its node');
ok(rq("SELECT ledger.append('$stream', '{}')") % 1024 == substr($from, 1), 'and takes appends there');
is(rq("SELECT ledger.count('$stream')"), $before + 1, 'its count goes on');
rq("SELECT ledger.append('$fresh', '{}')");
is($nodes[ substr($to, 1) - 1 ]->safe_psql('postgres', "SELECT ledger.count('$fresh')"), '1',
	'a new stream of the moved slot is created on the new node');

($rc, $out, $err) = router_try("SELECT ledger_router.pin_stream('$stream', '$to')");
like($err, qr/55000: stream "orders-12" already has entries on node "$from"/, 'a stream with entries cannot be pinned elsewhere');
($rc, $out, $err) = router_try("SELECT ledger_router.unpin_stream('$stream')");
like($err, qr/55000: stream "orders-12" has entries on node "$from", where it is pinned/, 'nor unpinned away from them');
rq("SELECT ledger_router.pin_stream('placed', 'n3'); SELECT ledger.append('placed', '{}')");
is($nodes[2]->safe_psql('postgres', q{SELECT ledger.count('placed')}), '1', 'a stream pinned before its first append');

my $mover = 'orders-20';
my $mslot = rq("SELECT ledger_router.slot_of('$mover')");
my $mfrom = rq("SELECT ledger_router.node_of('$mover')");
my $mto = $mfrom eq 'n3' ? 'n2' : 'n3';
is(rq("SELECT ledger_router.begin_move(ARRAY[$mslot], '$mto')"), '1', 'begin_move marks the slot');
($rc, $out, $err) = router_try("SELECT ledger.append('$mover', '{}')");
like($err, qr/55006: stream "orders-20" is in slot $mslot, which is moving to node "$mto"/, 'a moving slot refuses writes');
is(rq("SELECT ledger.count('$mover')"), '1', 'and still serves reads');
cmp_ok(rq("SELECT ledger_router.finish_move(ARRAY[$mslot])"), '>=', 1, 'finish_move pins and hands over');
ok(rq("SELECT ledger.append('$mover', '{}')") > 0, 'the stream takes writes again');
is(rq("SELECT ledger.count('$mover')"), '2', 'on its old node');
($rc, $out, $err) = router_try("SELECT ledger_router.drop_node('$from')");
like($err, qr/55000: node "$from" holds pinned streams/, 'a node holding pinned streams cannot be dropped');

# --- dump and restore -----------------------------------------------------

my $dump = $router->basedir . '/router.dump';
$router->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $router->connstr('router') ], 'pg_dump of the router');
$router->safe_psql('postgres', 'CREATE DATABASE router2');
$router->command_ok([ 'pg_restore', '-d', $router->connstr('router2'), $dump ], 'pg_restore of the router');
is($router->safe_psql('router2', q{SELECT count(*) FROM ledger_router.nodes}), '3', 'the restored router has its nodes');
like($router->safe_psql('router2', q{SELECT srvoptions FROM pg_foreign_server WHERE srvname = 'ledger_nodes'}),
	qr/^\{modular_mapping=1,"p0=host=127.0.0.1 port=\d+ dbname=postgres","p1=[^"]*","p2=[^"]*"\}$/,
	'and its PL/Proxy cluster');
is($router->safe_psql('router2', q{SELECT ledger.count('orders-12') || ',' || ledger_router.node_of('orders-12')}),
	rq(q{SELECT ledger.count('orders-12') || ',' || ledger_router.node_of('orders-12')}), 'and routes as before');

my $ndump = $nodes[0]->basedir . '/node.dump';
$nodes[0]->command_ok([ 'pg_dump', '-Fc', '-f', $ndump, '-d', $nodes[0]->connstr('postgres') ], 'pg_dump of a node');
$nodes[0]->safe_psql('postgres', 'CREATE DATABASE copy');
$nodes[0]->command_ok([ 'pg_restore', '-d', $nodes[0]->connstr('copy'), $ndump ], 'pg_restore of the node');
is($nodes[0]->safe_psql('copy', q{SELECT node || ',' || node_bits FROM ledger.node()}), '1,10', 'the restored node keeps its number');
my $maxid = $nodes[0]->safe_psql('copy', q{SELECT max(id) FROM ledger.entries});
my $next = $nodes[0]->safe_psql('copy', q{SELECT ledger.append('after-restore', '{}')});
ok($next > $maxid && $next % 1024 == 1, "the restored node's next id ($next) is above $maxid and carries its number");

# --- a second router: a hot standby of the first -------------------------

$router->backup('router_backup');
my $standby = PostgreSQL::Test::Cluster->new('router_standby');
$standby->init_from_backup($router, 'router_backup', has_streaming => 1);
$standby->start;
$router->wait_for_catchup($standby);
my $on_standby = $standby->safe_psql('router', q{SELECT ledger.append('orders-5', '{"via": "standby"}')});
ok($on_standby > 0, 'a hot-standby router routes appends');
is($standby->safe_psql('router', qq{SELECT payload->>'via' FROM ledger.read('orders-5', after => $on_standby - 1)}),
	'standby', 'and reads');
my ($src, $sout, $serr) = ('', '', '');
$src = $standby->psql('router', q{SELECT ledger.set_schema_version('standby-*', 2)}, stderr => \$serr);
like($serr, qr/read-only transaction/, 'configuration changes go to the router primary');
is($nodes[0]->safe_psql('postgres', q{SELECT count(*) FROM ledger.stream_settings WHERE pattern = 'standby-*'}),
	'0', 'and a refused one changes no node');
$standby->stop;

# --- a node down, a node that hangs --------------------------------------

is(rq(q{SELECT string_agg(ok::text, ',') FROM ledger_router.health()}), 'true,true,true,true', 'health: all nodes ok');

my $victim = rq(q{SELECT ledger_router.node_of('orders-1')});
my $other = (grep { rq("SELECT ledger_router.node_of('orders-$_')") ne $victim } 1 .. 30)[0];
$nodes[ substr($victim, 1) - 1 ]->stop('immediate');
my $t0 = time;
($rc, $out, $err) = router_try(q{SELECT ledger.append('orders-1', '{}')});
like($err, qr/08006: ledger router: node "$victim" cannot be reached/, 'a node down: the error names it');
like($err, qr/DETAIL:  PL\/Proxy: PQconnectPoll: .*Connection refused/s, 'with libpq\'s reason');
cmp_ok(time - $t0, '<', 10, 'and comes at once');
($rc, $out, $err) = router_try("SELECT ledger.count('orders-$other')");
is($rc, 0, 'streams of the other nodes still work');
($rc, $out, $err) = router_try(q{SELECT count(*) FROM ledger.streams()});
like($err, qr/08006: ledger router: node "$victim" cannot be reached/, 'a call to every node names the node that is down');
like(rq(q{SELECT string_agg(check_name || '=' || ok, ',') FROM ledger_router.health()}),
	qr/node "$victim"=false/, 'health shows the node down');
$nodes[ substr($victim, 1) - 1 ]->start;
is(rq(q{SELECT ledger.count('orders-1')}), '1', 'the node is back');

# a postmaster that accepts no connection (SIGSTOP): connect_timeout ends the wait
my $hung = $nodes[ substr($victim, 1) - 1 ];
open my $pidfh, '<', $hung->data_dir . '/postmaster.pid' or die;
my $pmpid = <$pidfh>;
chomp $pmpid;
close $pidfh;
my $stopped = $pmpid;
END { kill 'CONT', $stopped if $stopped; }
kill 'STOP', $pmpid;
$t0 = time;
($rc, $out, $err) = router_try(q{SELECT ledger.count('orders-1')});
my $elapsed = time - $t0;
kill 'CONT', $pmpid;
like($err, qr/08006: ledger router: node "$victim" did not answer/, 'a hanging node: the error names it');
like($err, qr/did not answer within ledger_router.call_timeout \(3s\)/, 'after call_timeout');
cmp_ok($elapsed, '<', 10, "within call_timeout ($elapsed s), not a hang");

$_->stop for @nodes;
$router->stop;
done_testing();
