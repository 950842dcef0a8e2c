# test/t/006_upgrade.pl
#	ALTER EXTENSION ledger UPDATE from 0.1.0: a 0.1.0 database holding
#	entries, a trim, tags, sinks, upcasters (declarative and function) and
#	retention settings is updated to the current version.  Afterwards
#	  - its schema is exactly what CREATE EXTENSION of the current version
#	    makes (every table, column, index, constraint, trigger, view, type,
#	    function with its definition and settings, comment, ACL, reloption);
#	  - its data reads back the same, upcasting still works, and appends,
#	    dedup and side data go on where they stopped.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'ledger'\nwal_level = logical\n");
$node->start;

my $current = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'ledger'});
isnt($current, '0.1.0', "the current version ($current) is not 0.1.0");

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('fresh', 'CREATE EXTENSION ledger');
$node->safe_psql('old', q{CREATE EXTENSION ledger VERSION '0.1.0'});
is($node->safe_psql('old', q{SELECT extversion FROM pg_extension WHERE extname = 'ledger'}),
	'0.1.0', 'a 0.1.0 extension is installed');

my $db_file = $node->basedir . '/old_archive.db';
$node->safe_psql('old', qq{
CREATE FUNCTION public.audit_v1_to_v2(p jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS \$\$ SELECT p || jsonb_build_object('v2', true) \$\$;
SELECT ledger.append('orders-1', jsonb_build_object('amt', g), order_key => 'o' || (g % 3),
                     dedup_key => 'k' || g, metadata => '{"src":"test"}', tags => ARRAY['t' || (g % 2)])
  FROM generate_series(1, 10) g;
SELECT ledger.append('audit', jsonb_build_object('who', 'u' || g)) FROM generate_series(1, 5) g;
SELECT ledger.trim('orders-1', (SELECT max(id) FROM ledger.read('orders-1', "limit" => 3)));
SELECT ledger.register_upcaster('orders-*', 1, 2, rename => '{"amt":"amount"}', defaults => '{"currency":"EUR"}');
SELECT ledger.register_upcaster('audit', 1, 2, 'public.audit_v1_to_v2(jsonb)'::regprocedure);
SELECT ledger.set_schema_version('orders-*', 2);
SELECT ledger.set_schema_version('audit', 2);
SELECT ledger.set_retention('audit', max_entries => 1000);
SELECT ledger.create_sink('archive', 'sqlite', '$db_file', 'orders-*');
SELECT ledger.set_tags('orders-1', (SELECT max(id) FROM ledger.read('orders-1')), ARRAY['vip']);
});

my $read_sql = q{SELECT id, stream, seq, payload, order_key, dedup_key, schema_version,
	metadata, tags, annotations FROM ledger.read_all(0, 1000) ORDER BY id};
my $read_orders = q{SELECT seq, payload, schema_version FROM ledger.read('orders-1') ORDER BY seq};
my $read_audit = q{SELECT seq, payload FROM ledger.read('audit') ORDER BY seq};
my %before = map { $_ => $node->safe_psql('old', $_) } ($read_sql, $read_orders, $read_audit);
like($before{$read_orders}, qr/"amount": 4, "currency": "EUR"/, '0.1.0 upcasts declaratively');

$node->safe_psql('old', 'ALTER EXTENSION ledger UPDATE');
is($node->safe_psql('old', q{SELECT extversion FROM pg_extension WHERE extname = 'ledger'}),
	$current, "updated to $current");

# A normalized description of every object in schema ledger.
my $describe = q{
WITH n AS (SELECT oid FROM pg_namespace WHERE nspname = 'ledger')
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
  SELECT 'rel ' || c.relname || ' kind=' || c.relkind::text || ' opts=' || coalesce(c.reloptions::text, '')
         || ' acl=' || coalesce(c.relacl::text, '') || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
         || ' persist=' || c.relpersistence::text || ' rls=' || c.relrowsecurity AS line
    FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM n)
  UNION ALL
  SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
         || ' coll=' || coalesce((SELECT collname FROM pg_collation WHERE oid = a.attcollation), '')
         || ' pos=' || (SELECT count(*) FROM pg_attribute a2 WHERE a2.attrelid = a.attrelid
                           AND a2.attnum > 0 AND NOT a2.attisdropped AND a2.attnum <= a.attnum)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relnamespace = (SELECT oid FROM n) AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'idx ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
   WHERE c.relnamespace = (SELECT oid FROM n)
  UNION ALL
  SELECT 'con ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = (SELECT oid FROM n)
  UNION ALL
  SELECT 'trg ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE c.relnamespace = (SELECT oid FROM n) AND NOT t.tgisinternal
  UNION ALL
  SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid) FROM pg_class c
   WHERE c.relnamespace = (SELECT oid FROM n) AND c.relkind = 'v'
  UNION ALL
  SELECT 'fn ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid)
         || ' acl=' || coalesce(p.proacl::text, '') || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
    FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM n)
  UNION ALL
  SELECT 'type ' || t.typname || ' ' || coalesce((SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
                                          FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), '')
         || ' comment=' || coalesce(obj_description(t.oid, 'pg_type'), '')
    FROM pg_type t WHERE t.typnamespace = (SELECT oid FROM n) AND t.typtype = 'c'
         AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'
  UNION ALL
  SELECT 'seq ' || s.seqrelid::regclass || ' ' || format_type(s.seqtypid, NULL) || ' inc=' || s.seqincrement
         || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = (SELECT oid FROM n)
  UNION ALL
  -- schema ledger itself is a member only where 0.2.0's script created it:
  -- an updated 0.1.0 database keeps it as the extension's own schema
  -- (PostgreSQL cannot make an extension's schema a member of it)
  SELECT 'member ' || pg_describe_object(classid, objid, objsubid) FROM pg_depend
   WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
     AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ledger')
     AND classid <> 'pg_namespace'::regclass
  UNION ALL
  SELECT 'dump ' || unnest(extconfig)::regclass || ' ' FROM pg_extension WHERE extname = 'ledger'
  UNION ALL
  SELECT 'schema acl=' || coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'ledger'
) d};

my $fresh = $node->safe_psql('fresh', $describe);
my $old = $node->safe_psql('old', $describe);
if ($fresh ne $old)
{
	my %f = map { $_ => 1 } split /\n/, $fresh;
	my %o = map { $_ => 1 } split /\n/, $old;
	diag("only in a fresh install: $_") for grep { !$o{$_} } sort keys %f;
	diag("only in the updated one: $_") for grep { !$f{$_} } sort keys %o;
}
ok($fresh eq $old, 'the updated schema equals a fresh install');

for my $sql ($read_sql, $read_orders, $read_audit)
{
	is($node->safe_psql('old', $sql), $before{$sql}, 'reads are unchanged by the update');
}
like($node->safe_psql('old', $read_audit), qr/"v2": true/, 'the function upcaster still runs');

# the log goes on
my $next = $node->safe_psql('old', q{SELECT ledger.append('orders-1', '{"amount": 1}', dedup_key => 'k10')});
like($before{$read_sql}, qr/^$next\|/m, 'dedup keys from 0.1.0 still deduplicate');
my $id = $node->safe_psql('old', q{SELECT ledger.append('orders-1', '{"amount": 11}', dedup_key => 'k11')});
my $maxid = $node->safe_psql('old', q{SELECT max(id) FROM ledger.entries});
is($id, $maxid, 'a new append takes the highest id');
is($node->safe_psql('old', q{SELECT (ledger.stat('orders-1')).last_seq}), '11', 'seq goes on gaplessly');
is($node->safe_psql('old', q{SELECT ledger.count('orders-1')}), '8', 'count after trim and append');
$node->safe_psql('old', qq{SELECT ledger.set_annotations('orders-1', $id, '{"k":"v"}')});
is($node->safe_psql('old', qq{SELECT annotations->>'k' FROM ledger.read('orders-1', after => $id - 1)}),
	'v', 'side data works after the update');
is($node->safe_psql('old', q{SELECT count(*) FROM ledger.sinks_status WHERE name = 'archive'}),
	'1', 'the sink survives the update');
# the worker serves the database once it is updated (not before: its
# statements need the current schema), without a restart
ok($node->poll_query_until('old',
	q{SELECT lag_entries = 0 AND position > 0 FROM ledger.sinks_status WHERE name = 'archive'}),
	'the sink created under 0.1.0 exports once the extension is updated');

$node->stop;
done_testing();
