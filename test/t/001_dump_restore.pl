# test/t/001_dump_restore.pl
#	pg_dump -Fc / pg_restore of a database holding ledger data into a new
#	database: every entry, stream state (count, first/last seq after a trim),
#	stream settings, upcasters and both sequences survive; the next append
#	continues above the highest id at the next seq; dedup still works.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'ledger'\nwal_level = logical\n");
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{
CREATE EXTENSION ledger;

-- a function upcaster, referenced by regprocedure from ledger.upcasters
CREATE FUNCTION public.audit_v1_to_v2(p jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT p || jsonb_build_object('v2', true) $$;

-- orders-1: version 1 entries, then a trim, then version 2 entries
SELECT ledger.append('orders-1', jsonb_build_object('amt', g), order_key => 'o' || (g % 3),
                     dedup_key => 'k' || g, metadata => '{"src":"test"}', tags => ARRAY['t' || (g % 2)])
  FROM generate_series(1, 10) g;
SELECT ledger.append('audit', jsonb_build_object('who', 'u' || g), dedup_key => 'a' || g)
  FROM generate_series(1, 5) g;
SELECT ledger.trim('orders-1', (SELECT id FROM ledger.read('orders-1', "limit" => 4) ORDER BY id DESC LIMIT 1));
SELECT ledger.set_schema_version('orders-*', 2);
SELECT ledger.register_upcaster('orders-*', 1, 2, rename => '{"amt":"amount"}', defaults => '{"currency":"EUR"}');
SELECT ledger.register_upcaster('audit', 1, 2, 'public.audit_v1_to_v2(jsonb)'::regprocedure);
SELECT ledger.set_schema_version('audit', 2);
SELECT ledger.append('orders-1', '{"amount": 99, "currency": "USD"}', dedup_key => 'k11');
SELECT ledger.append_batch('other', '[{"payload":{"x":1}},{"payload":{"x":2},"dedup_key":"d2"}]'::jsonb);
SELECT ledger.set_retention('audit', max_entries => 1000, max_age => '7 days');
SELECT ledger.set_retention('orders-*', max_entries => 500);
});

# tags and annotations of one entry
my $tagged = $node->safe_psql('src',
	q{SELECT id FROM ledger.read('orders-1', "limit" => 1)});
$node->safe_psql('src', qq{
SELECT ledger.set_tags('orders-1', $tagged, ARRAY['vip','checked']);
SELECT ledger.set_annotations('orders-1', $tagged, '{"note":"hello"}');
});

# what must survive
my %q = (
	entries => q{SELECT e.id, s.name, e.seq, e.payload, e.order_key, e.dedup_key, e.schema_version,
	                    e.metadata, e.tags, e.annotations, e.created_at, e.updated_at
	               FROM ledger.entries e JOIN ledger.streams s USING (stream_id) ORDER BY e.id},
	streams => q{SELECT name, last_seq, trimmed_seq, created_at, last_appended_at
	               FROM ledger.streams ORDER BY name},
	stats => q{SELECT (ledger.stat(s)).*, ledger.count(s)
	             FROM unnest(ARRAY['orders-1','audit','other','missing']) s ORDER BY 1},
	settings => q{SELECT pattern, schema_version, max_entries, max_age FROM ledger.stream_settings ORDER BY pattern},
	upcasters => q{SELECT streams, from_version, to_version, rename, defaults, remove, fn::text
	                 FROM ledger.upcasters ORDER BY streams, from_version},
	read_orders => q{SELECT id, seq, payload, schema_version, tags, annotations FROM ledger.read('orders-1')},
	read_audit => q{SELECT id, seq, payload, schema_version FROM ledger.read('audit')},
	read_all => q{SELECT id, stream, seq, payload FROM ledger.read_all(0, 1000)},
	seq_cache => q{SELECT sequencename, cache_size FROM pg_sequences WHERE schemaname = 'ledger' ORDER BY 1},
);
my %before;
$before{$_} = $node->safe_psql('src', $q{$_}) for keys %q;

# sanity of the source state
is($node->safe_psql('src', q{SELECT count, first_seq, last_seq FROM ledger.stat('orders-1')}),
	'7|5|11', 'source: orders-1 trimmed to seqs 5..11');
like($before{read_orders}, qr/"amount": 5, "currency": "EUR"/,
	'source: declarative upcaster applied on read');
like($before{read_audit}, qr/"v2": true/, 'source: function upcaster applied on read');

my $max_id = $node->safe_psql('src', 'SELECT max(id) FROM ledger.entries');

# dump, restore into a fresh database
my $dump = $node->basedir . '/src.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', 'src', '-f', $dump ], 'pg_dump -Fc');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
my ($stdout, $stderr);
IPC::Run::run(
	[ 'pg_restore', '-h', $node->host, '-p', $node->port, '-d', 'dst', '--exit-on-error', $dump ],
	'>', \$stdout, '2>', \$stderr);
is($?, 0, 'pg_restore exits 0');
is($stderr, '', 'pg_restore prints no error');

for my $k (sort keys %q)
{
	is($node->safe_psql('dst', $q{$k}), $before{$k}, "restored $k equal to source");
}

# the next append continues above the highest id, at the next seq
my $next = $node->safe_psql('dst',
	q{SELECT ledger.append('orders-1', '{"amount": 1}', dedup_key => 'k12')});
cmp_ok($next, '>', $max_id, "next id $next is above the restored maximum $max_id");
is($node->safe_psql('dst', "SELECT seq, schema_version FROM ledger.entries WHERE id = $next"),
	'12|2', 'next append gets seq 12 and the restored schema version');
is($node->safe_psql('dst', q{SELECT count, first_seq, last_seq FROM ledger.stat('orders-1')}),
	'8|5|12', 'stat after the next append');

# a new stream gets a fresh stream_id, no collision with restored ones
my $new = $node->safe_psql('dst', q{SELECT ledger.append('brand-new', '{"n":1}')});
cmp_ok($new, '>', $next, 'append to a new stream after restore');
is($node->safe_psql('dst', q{SELECT seq FROM ledger.read('brand-new')}), '1',
	'new stream starts at seq 1');
is($node->safe_psql('dst', q{SELECT count(DISTINCT stream_id) = count(*) FROM ledger.streams}),
	't', 'stream ids unique after restore');

# dedup keys still deduplicate
my $orig_k3 = $node->safe_psql('src',
	q{SELECT id FROM ledger.entries WHERE dedup_key = 'k7'});
is($node->safe_psql('dst', q{SELECT ledger.append('orders-1', '{"amount": 0}', dedup_key => 'k7')}),
	$orig_k3, 'restored dedup key returns the existing id');
is($node->safe_psql('dst', q{SELECT ledger.append('audit', '{"who": "x"}', dedup_key => 'a1')}),
	$node->safe_psql('src', q{SELECT id FROM ledger.entries WHERE dedup_key = 'a1'}),
	'dedup in a second stream');
is($node->safe_psql('dst', q{SELECT duplicate FROM ledger.append_batch('other', '[{"payload":{"x":3},"dedup_key":"d2"}]'::jsonb)}),
	't', 'append_batch sees the restored dedup key');
is($node->safe_psql('dst', q{SELECT ledger.count('orders-1'), ledger.count('audit'), ledger.count('other')}),
	'8|5|2', 'duplicates wrote nothing');

# expected_seq against the restored last seq
is($node->safe_psql('dst', q{SELECT ledger.append('audit', '{"who":"y"}', expected_seq => 5) > 0}),
	't', 'expected_seq = restored last seq succeeds');
my ($ret, $out, $err) = $node->psql('dst',
	q{SELECT ledger.append('audit', '{"who":"z"}', expected_seq => 5)},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/40001/, 'stale expected_seq after restore fails with 40001');

# reads after restore still upcast (function upcaster resolved by name)
like($node->safe_psql('dst', q{SELECT payload FROM ledger.read('audit', "limit" => 1)}),
	qr/"v2": true/, 'function upcaster works in the restored database');

# read_all sees everything right after restore (horizon not stuck)
is($node->safe_psql('dst', q{SELECT count(*) FROM ledger.read_all(0, 1000)}),
	$node->safe_psql('dst', q{SELECT count(*) FROM ledger.entries}),
	'read_all returns every restored and new entry');

# the restored database can itself be dumped and restored again
$node->command_ok([ 'pg_dump', '-Fc', '-d', 'dst', '-f', $node->basedir . '/dst.dump' ],
	'second pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE dst2');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', 'dst2', $node->basedir . '/dst.dump' ],
	'second pg_restore');
is($node->safe_psql('dst2', $q{entries}), $node->safe_psql('dst', $q{entries}),
	'second round trip keeps entries');

# parallel restore (-j 2) of the same archive
$node->safe_psql('postgres', 'CREATE DATABASE dstj');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-j', '2', '-d', 'dstj', $dump ],
	'pg_restore -j 2');
for my $k (qw(entries streams settings upcasters read_all))
{
	is($node->safe_psql('dstj', $q{$k}), $before{$k}, "parallel restore: $k equal to source");
}
cmp_ok($node->safe_psql('dstj', q{SELECT ledger.append('audit', '{}')}), '>', $max_id,
	'parallel restore: next id above the restored maximum');

# an empty ledger (sequence never used) dumps and restores, and starts at id 1
$node->safe_psql('postgres', 'CREATE DATABASE empty_src');
$node->safe_psql('empty_src', 'CREATE EXTENSION ledger');
$node->command_ok([ 'pg_dump', '-Fc', '-d', 'empty_src', '-f', $node->basedir . '/empty.dump' ],
	'pg_dump of an empty ledger');
$node->safe_psql('postgres', 'CREATE DATABASE empty_dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', 'empty_dst', $node->basedir . '/empty.dump' ],
	'pg_restore of an empty ledger');
is($node->safe_psql('empty_dst', q{SELECT count(*) FROM ledger.read_all()}), '0', 'empty read_all');
is($node->safe_psql('empty_dst', q{SELECT ledger.append('s', '{}')}), '1', 'first id is 1');
is($node->safe_psql('empty_dst', q{SELECT string_agg(id::text, ',') FROM ledger.read_all()}), '1',
	'read_all sees it');

$node->stop;
done_testing();
