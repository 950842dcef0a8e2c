# test/t/023_node_export.pl
#	A sink on a node whose ids stride by 2^node_bits (ledger.set_node) still
#	exports full batches: the export's id window counts ids handed out, not
#	id values.  With a window of export_batch * 4 id values, 3,000 entries
#	with ids 1024 apart took ~750 batches of 4; now they take 3 of 1,000.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('node_export');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ledger'
ledger.export_batch = 1000
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE n5');
$node->safe_psql('n5', 'CREATE EXTENSION ledger');
# the worker's batch lines, and only this database's
$node->safe_psql('postgres', 'ALTER DATABASE n5 SET log_min_messages = debug2');
$node->safe_psql('n5', 'SELECT ledger.set_node(5)');
$node->safe_psql('n5', q{
	SELECT count(*) FROM ledger.append_batch('s',
		(SELECT array_agg(ROW(jsonb_build_object('i', i), '', '', '{}', '{}')::ledger.append_input)
		 FROM generate_series(1, 3000) i))});
my ($first, $last) = split /\|/, $node->safe_psql('n5', q{SELECT min(id), max(id) FROM ledger.read_all(0, 10000)});
is($first % 1024, 5, 'ids carry the node number');
is($last - $first, 2999 * 1024, 'ids stride by 1024');

my $file = $node->basedir . '/export.db';
my $log_offset = -s $node->logfile;
$node->safe_psql('n5', "SELECT ledger.create_sink('mirror', 'sqlite', '$file')");
ok($node->poll_query_until('n5',
		"SELECT position = $last AND lag_entries = 0 FROM ledger.sinks_status WHERE name = 'mirror'"),
	'the sink exports every entry');
is($node->safe_psql('n5', q{SELECT exported_total FROM ledger.sinks_status}), '3000',
	'3,000 entries exported');

my $log = slurp_file($node->logfile, $log_offset);
my @batches = grep { /batch of ([1-9]\d*) items/ } split /\n/, $log;
my $items = 0;
$items += ($_ =~ /batch of (\d+) items/)[0] for @batches;
is($items, 3000, 'the batch lines account for every entry');
cmp_ok(scalar(@batches), '<=', 4, 'full batches: at most 4 non-empty batches for 3,000 entries')
  or diag(scalar(@batches) . " batches");

done_testing();
