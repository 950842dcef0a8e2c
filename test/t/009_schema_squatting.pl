# test/t/009_schema_squatting.pl
#	A database owner who is not a superuser cannot become one through ledger:
#	  - a schema "ledger" made in advance (with operators = and || whose code
#	    would make its owner superuser) makes CREATE EXTENSION fail, and none
#	    of that code ever runs -- not then, not in trim() or health() later;
#	  - once installed, schema ledger accepts no objects from that owner;
#	  - a LATIN1 client gets the real SQLSTATE (22023) of an error quoting a
#	    long non-ASCII name, not an encoding error.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('squat');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'ledger'\n");
$node->start;

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
CREATE DATABASE squat OWNER mallory;
});

# mallory prepares the trap in the database she owns
$node->safe_psql('squat', q{
SET ROLE mallory;
CREATE TABLE public.sprung (who text, at timestamptz DEFAULT now());
GRANT INSERT ON public.sprung TO PUBLIC;
CREATE SCHEMA ledger;
CREATE FUNCTION ledger.trap_eq(a bigint, b bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.sprung (who) VALUES (current_user);
	IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
		ALTER ROLE mallory SUPERUSER;
	END IF;
	RETURN a OPERATOR(pg_catalog.=) b;
END $$;
CREATE OPERATOR ledger.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = ledger.trap_eq);
CREATE FUNCTION ledger.trap_cat(a text, b text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.sprung (who) VALUES (current_user);
	IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
		ALTER ROLE mallory SUPERUSER;
	END IF;
	RETURN pg_catalog.textcat(a, b);
END $$;
CREATE OPERATOR ledger.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = ledger.trap_cat);
});

my ($ret, $out, $err) = $node->psql('squat', 'CREATE EXTENSION ledger', extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($ret, 0, 'CREATE EXTENSION refuses the existing schema ledger');
like($err, qr/42P06/, 'with 42P06 (duplicate schema)');
is($node->safe_psql('squat', 'SELECT count(*) FROM pg_extension WHERE extname = \'ledger\''), '0',
	'nothing was installed');

# mallory's schema goes; the extension installs into its own new schema
$node->safe_psql('squat', 'SET ROLE mallory; DROP SCHEMA ledger CASCADE');
$node->safe_psql('squat', 'CREATE EXTENSION ledger');
is($node->safe_psql('squat', q{SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'ledger'}),
	'postgres', 'schema ledger belongs to the superuser that installed the extension');
($ret, $out, $err) = $node->psql('squat', q{SET ROLE mallory;
CREATE FUNCTION ledger.trap_eq(a bigint, b bigint) RETURNS boolean LANGUAGE sql AS 'SELECT true'});
like($err, qr/permission denied for schema ledger/, 'and takes no objects from the database owner');

# everything that used 0.1.0's unqualified operators, run by a superuser
$node->safe_psql('squat', q{
SELECT ledger.append('s', jsonb_build_object('i', g)) FROM generate_series(1, 5) g;
SELECT ledger.trim('s', (SELECT max(id) FROM ledger.read('s', "limit" => 2)));
SELECT * FROM ledger.health();
SELECT ledger.set_retention('s', max_entries => 1);
SELECT ledger.enforce_retention('s');
SELECT * FROM ledger.read_all();
});
is($node->safe_psql('squat', 'SELECT count(*) FROM public.sprung'), '0', 'the trap never ran');
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
	'mallory is not a superuser');

# a LATIN1 client and a long name with non-ASCII characters
for my $case ([ "'x' || repeat(chr(233), 300)", 'é, cut at an odd byte' ],
	[ 'repeat(chr(8364), 300)', '€, which LATIN1 lacks' ])
{
	my ($expr, $what) = @$case;
	my ($r, $o, $e);
	{
		local $ENV{PGCLIENTENCODING} = 'LATIN1';
		($r, $o, $e) = $node->psql('squat', "SELECT ledger.append($expr, '{}')",
			extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	}
	like($e, qr/ERROR:\s+22023: stream name .* is too long/, "a LATIN1 client gets 22023 for a name of $what");
}

$node->stop;
done_testing();
