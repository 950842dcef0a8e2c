# test/t/020_decoding_history.pl
#	The output plugin names streams right across the history of a database:
#	  - WAL written while the database was still at 0.1.0 (no
#	    ledger.stream_names yet), decoded after ALTER EXTENSION UPDATE in the
#	    same session as later WAL;
#	  - a session that decodes an entry, DROP EXTENSION, CREATE EXTENSION,
#	    and an entry of another stream that got the same stream_id;
#	    and a slot of another plugin gets past the dropped extension's WAL
#	    (ledger.stream_names is a user catalog table: changes of a dropped one
#	    could not be decoded, so its rows are kept out of the change stream);
#	  - a dump restored into another database keeps ledger.stream_names whole.
#	No decoding WARNING ("no name for stream_id") in any of it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('history');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'ledger'\n");
$node->start;

# Decode a slot's pending changes: (lines as text, stderr).
sub changes
{
	my ($db, $slot, @options) = @_;
	my $opts = join '', map { ", '$_'" } @options;
	my ($stdout, $stderr);
	$node->psql($db,
		"SELECT data FROM pg_logical_slot_get_changes('$slot', NULL, NULL$opts)",
		stdout => \$stdout, stderr => \$stderr);
	return ($stdout, $stderr);
}

# -- WAL from before ALTER EXTENSION UPDATE ------------------------------------

$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('old', q{CREATE EXTENSION ledger VERSION '0.1.0'});
$node->safe_psql('old',
	q{SELECT 'init' FROM pg_create_logical_replication_slot('s_old', 'ledger')});
$node->safe_psql('old', q{
BEGIN;
SELECT ledger.append('h-pre', '{"n": 1}');
SELECT ledger.append('h-pre', '{"n": 2}');
COMMIT;
SELECT ledger.append('h-pre2', '{"n": 3}');
SELECT ledger.set_tags('h-pre', (SELECT min(id) FROM ledger.read('h-pre')), '{before}');
});
my $v1 = $node->safe_psql('old', q{SELECT data FROM
	pg_logical_slot_peek_changes('s_old', NULL, NULL, 'format-version', '1')});
like($v1, qr/^\{"kind":"entry","xid":\d+,"lsn":"[0-9A-F]+\/[0-9A-F]+","id":\d+,"stream":"h-pre","seq":1,"payload":\{"n": 1\},"order_key":"","dedup_key":"","schema_version":1,"metadata":\{\},"tags":\[\],"created_at":"[^"]+"\}$/m,
	'format version 1 writes the lines of ledger 0.1');

$node->safe_psql('old', 'ALTER EXTENSION ledger UPDATE');
is($node->safe_psql('old', q{SELECT count(*) FROM ledger.stream_names n
	JOIN ledger.streams s USING (stream_id) WHERE n.name = s.name}),
	'2', 'the update fills ledger.stream_names with the existing streams');
$node->safe_psql('old', q{
SELECT ledger.set_tags('h-pre2', (SELECT min(id) FROM ledger.read('h-pre2')), '{after}');
BEGIN;
SELECT ledger.append('h-post', '{"n": 4}');
SELECT ledger.set_annotations('h-post', (SELECT min(id) FROM ledger.read('h-post')), '{"a": "b"}');
COMMIT;
});
my ($lines, $stderr) = changes('old', 's_old');
my @got = map { /"kind":"(\w+)".*?"stream":"([^"]*)"/ ? "$1 $2" : "? $_" } split /\n/, $lines;
is_deeply(\@got,
	[ 'entry h-pre', 'entry h-pre', 'entry h-pre2', 'tags h-pre', 'tags h-pre2',
	  'entry h-post', 'annotations h-post' ],
	'lines before and after the update name their streams');
unlike($stderr, qr/no name for stream_id/, 'no stream without a name');

# -- one session across DROP EXTENSION and CREATE EXTENSION -----------------------

$node->safe_psql('postgres', 'CREATE DATABASE recreate');
$node->safe_psql('recreate', 'CREATE EXTENSION ledger');
$node->safe_psql('recreate',
	q{SELECT 'init' FROM pg_create_logical_replication_slot('s_re', 'ledger')});
$node->safe_psql('recreate',
	q{SELECT 'init' FROM pg_create_logical_replication_slot('s_other', 'test_decoding')});
$node->safe_psql('recreate', q{SELECT ledger.append('r-first', '{}')});
$node->safe_psql('recreate', 'DROP EXTENSION ledger');
$node->safe_psql('recreate', 'CREATE EXTENSION ledger');
$node->safe_psql('recreate', q{SELECT ledger.append('r-second', '{}')});
$node->safe_psql('recreate', q{
SELECT ledger.set_tags('r-second', (SELECT min(id) FROM ledger.read('r-second')), '{x}')});
is($node->safe_psql('recreate', q{SELECT stream_id FROM ledger.streams}), '1',
	'the new stream took the dropped one\'s stream_id');
($lines, $stderr) = changes('recreate', 's_re');
@got = map { /"kind":"(\w+)".*?"stream":"([^"]*)"/ ? "$1 $2" : "? $_" } split /\n/, $lines;
is_deeply(\@got, [ 'entry r-first', 'entry r-second', 'tags r-second' ],
	'a re-created extension\'s stream_id names its own stream');
unlike($stderr, qr/no name for stream_id/, 'no stream without a name');
my ($other_out, $other_err);
$node->psql('recreate', q{SELECT count(*) > 0 FROM pg_logical_slot_get_changes('s_other', NULL, NULL)},
	stdout => \$other_out, stderr => \$other_err);
is($other_out, 't', 'another plugin\'s slot decodes past the dropped extension')
  or diag($other_err);

# -- dump and restore --------------------------------------------------------------

$node->safe_psql('recreate', q{SELECT ledger.append('r-third', '{}')});
my $dump = $node->basedir . '/recreate.sql';
$node->command_ok([ 'pg_dump', '-d', $node->connstr('recreate'), '-f', $dump ],
	'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d',
	$node->connstr('restored'), '-f', $dump ], 'restore');
is($node->safe_psql('restored', q{SELECT string_agg(s.name || '=' || coalesce(n.name, '-'), ',' ORDER BY s.stream_id)
	FROM ledger.streams s LEFT JOIN ledger.stream_names n USING (stream_id)}),
	'r-second=r-second,r-third=r-third', 'a restored database names every stream');
$node->safe_psql('restored',
	q{SELECT 'init' FROM pg_create_logical_replication_slot('s_restored', 'ledger')});
$node->safe_psql('restored', q{
SELECT ledger.set_tags('r-third', (SELECT min(id) FROM ledger.read('r-third')), '{y}')});
($lines, $stderr) = changes('restored', 's_restored', 'streams', 'r-third');
like($lines, qr/^\{"kind":"tags",.*"stream":"r-third","tags":\["y"\]/,
	'and decodes it after the restore');

$node->stop;
done_testing();
