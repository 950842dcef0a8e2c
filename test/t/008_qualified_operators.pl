# test/t/008_qualified_operators.pl
#	Every operator in ledger's SQL -- the extension scripts and the SQL
#	statements in the C sources -- is schema-qualified
#	(OPERATOR(pg_catalog.=)), and no construct calls an operator implicitly
#	(IN (...), BETWEEN, LIKE, IS DISTINCT FROM, NULLIF, a simple CASE, ANY
#	without a qualified operator).  SECURITY DEFINER code resolving an
#	unqualified operator could run an operator someone else created: that
#	is how 0.1.0's trim() and health() handed out superuser.  The scanner
#	first proves on samples that it finds what it must.
use strict;
use warnings;

use File::Basename qw(dirname);
use Test::More;

my $root = dirname(__FILE__) . '/../..';

# Remove comments and string literals; keep dollar-quoted bodies (code).
sub strip_sql
{
	my ($sql) = @_;
	$sql =~ s{/\*.*?\*/}{ }gs;
	$sql =~ s{--[^\n]*}{ }g;
	$sql =~ s{\$[a-z_]*\$}{ }gi;		# dollar quotes: scan the body as code
	$sql =~ s{E?'(?:[^']|'')*'}{ 'lit' }g;
	return $sql;
}

# Problems in one SQL text, as a list of short descriptions.
sub unqualified
{
	my ($sql) = @_;
	my @found;
	$sql = strip_sql($sql);
	$sql =~ s/'lit'/LIT/g;
	# qualified operators become one marker token
	$sql =~ s/OPERATOR\s*\(\s*pg_catalog\s*\.\s*[^)\s]+\s*\)/ QOP /g;
	# allowed uses of operator characters
	$sql =~ s/::/ CAST /g;
	$sql =~ s/=>/ NAMED /g;
	$sql =~ s/:=/ ASSIGN /g;
	$sql =~ s/\bSELECT\s+\*/SELECT ALLCOLS/gi;
	$sql =~ s/\(\s*\*\s*\)/(ALLROWS)/g;
	$sql =~ s/\.\s*\*/.ALLCOLS/g;
	$sql =~ s/([(,=]\s*|QOP\s*|\bTHEN\s+|\bELSE\s+)-(?=\s*\d)/$1NEG/gi;	# negative literal: folded, no operator

	# "=" of assignments: SET col = ..., WITH (option = ...), SET search_path = ...
	my @clause = (0);
	my $out = '';
	my $last_kw = '';
	while ($sql =~ /\G(\s+|[A-Za-z_][A-Za-z_0-9]*|"[^"]*"|\$\d+|\d+(?:\.\d+)?|[+\-*\/<>=~!@#%^&|`?]+|.)/gcs)
	{
		my $tok = $1;
		if ($tok =~ /^[A-Za-z_]/)
		{
			my $u = uc $tok;
			$last_kw = $u if $u =~ /^(SET|WHERE|RETURNING|FROM|SELECT|WHEN|AND|OR|ON|WITH|VALUES|JOIN|HAVING|CASE|THEN|ELSE|BY|LIMIT|CHECK)$/;
			next;
		}
		next unless $tok =~ /^[+\-*\/<>=~!@#%^&|`?]+$/;
		if ($tok eq '=' && ($last_kw eq 'SET' || $last_kw eq 'WITH'))
		{
			next;
		}
		push @found, "operator '$tok'";
	}
	pos($sql) = 0;
	push @found, 'implicit = of IN (...)' while $sql =~ /\bIN\s*\(/gi;
	push @found, 'implicit operators of BETWEEN' if $sql =~ /\bBETWEEN\b/i;
	push @found, 'implicit ~~ of LIKE' if $sql =~ /\bI?LIKE\b/i;
	push @found, 'implicit operator of SIMILAR TO' if $sql =~ /\bSIMILAR\s+TO\b/i;
	push @found, 'implicit = of IS DISTINCT FROM' if $sql =~ /\bIS\s+(?:NOT\s+)?DISTINCT\s+FROM\b/i;
	push @found, 'implicit = of NULLIF' if $sql =~ /\bNULLIF\s*\(/i;
	push @found, 'implicit = of a simple CASE' if $sql =~ /\bCASE\s+(?!WHEN\b)/i;
	pos($sql) = 0;
	while ($sql =~ /(\S+)\s+(ANY|ALL|SOME)\s*\(/gi)
	{
		push @found, "implicit operator of $2" unless $1 eq 'QOP';
	}
	return @found;
}

# --- the scanner finds what it must, and nothing else ------------------------

my %bad = (
	q{SELECT 1 FROM t WHERE id IN (SELECT 2)} => 'IN',
	q{SELECT a = b} => "'='",
	q{SELECT name || ': ' || x} => "'\\|\\|'",
	q{SELECT x FROM t WHERE a @> b} => "'\@>'",
	q{SELECT x FROM t WHERE a OPERATOR(pg_catalog.=) ANY ($1) AND b = ANY ($2)} => "'='",
	q{SELECT x FROM t WHERE a BETWEEN 1 AND 2} => 'BETWEEN',
	q{SELECT x FROM t WHERE a LIKE 'x%'} => 'LIKE',
	q{SELECT NULLIF(a, b)} => 'NULLIF',
	q{SELECT CASE a WHEN 1 THEN 2 END} => 'simple CASE',
	q{SELECT a IS DISTINCT FROM b} => 'DISTINCT',
	q{SELECT a - b} => "'-'",
	q{UPDATE t SET a = a + 1} => "'\\+'",
	q{DO $x$ BEGIN IF EXISTS (SELECT 1 FROM r WHERE n = 'a') THEN NULL; END IF; END $x$} => "'='",
);
my @good = (
	q{SELECT * FROM t WHERE a OPERATOR(pg_catalog.=) $1 AND b OPERATOR(pg_catalog.<>) '' -- a = b},
	q{UPDATE t SET a = a OPERATOR(pg_catalog.+) 1, b = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) $1},
	q{SELECT pg_catalog.count(*), pg_catalog.left(x, -1), e.*, 'a = b', x::pg_catalog.text FROM t e},
	q{CREATE TABLE t (a int) WITH (fillfactor = 50)},
	q{SELECT f(a => 1) FROM t WHERE a OPERATOR(pg_catalog.=) ANY ($2)},
	q{LOCK TABLE ledger.stream_settings IN SHARE MODE},
	q{SELECT CASE WHEN a OPERATOR(pg_catalog.=) 1 THEN 2 ELSE 3 END},
	q{CREATE FUNCTION f() RETURNS int AS 'x' LANGUAGE C SET search_path = pg_catalog, ledger, pg_temp},
);
for my $sql (sort keys %bad)
{
	my @f = unqualified($sql);
	ok(scalar(grep { /$bad{$sql}/ } @f), "the scanner flags: $sql") or diag(join('; ', @f) || 'nothing');
}
for my $sql (@good)
{
	my @f = unqualified($sql);
	is(join('; ', @f), '', "the scanner accepts: $sql");
}

# --- the extension scripts --------------------------------------------------

for my $script (grep { !/--0\.1\.0\.sql$/ } glob("$root/sql/ledger*--*.sql"))
{
	open my $fh, '<', $script or die "$script: $!";
	my $text = do { local $/; <$fh> };
	close $fh;
	$text =~ s/^\\echo.*$//mg;
	my $n = 0;
	my @problems;
	for my $stmt (split /;\s*\n/, $text)
	{
		$n++;
		# GRANT/REVOKE/COMMENT/ALTER ... OWNER and the like name objects, no expressions
		next if $stmt =~ /^\s*(GRANT|REVOKE|COMMENT ON|SELECT pg_catalog\.pg_extension_config_dump)/m;
		push @problems, map { "$_ in: " . substr(($stmt =~ s/\s+/ /gr), 0, 160) } unqualified($stmt);
	}
	ok($n > 0, "read " . ($script =~ s{.*/}{}r));
	is(join("\n", @problems), '', 'every operator of ' . ($script =~ s{.*/}{}r) . ' is qualified');
}

# --- the SQL statements of the C sources -------------------------------------

# SQLite's statements (sink_sqlite.c) are not PostgreSQL's, and mongo has none.
for my $file (grep { !/sink_(sqlite|mongo)\.c$/ } glob("$root/src/*.c"))
{
	open my $fh, '<', $file or die "$file: $!";
	my $text = do { local $/; <$fh> };
	close $fh;
	$text =~ s{/\*.*?\*/}{ }gs;
	$text =~ s{//[^\n]*}{ }g;
	my @problems;
	# runs of adjacent string literals, also across macro arguments and
	# macro calls between them ("SET " set_clause ", x = y"; ENTRY_COLUMNS("$1"))
	my $lit = qr/"(?:[^"\\\n]|\\.)*"/;
	my $glue = qr/(?:\s|\\\n)*(?:[A-Za-z_][A-Za-z_0-9]*(?:\s*\(\s*$lit\s*\))?(?:\s|\\\n)*)?/;
	while ($text =~ /($lit(?:$glue$lit)*)/g)
	{
		my $run = $1;
		my $sql = join(' ', $run =~ /"((?:[^"\\\n]|\\.)*)"/g);
		$sql =~ s/\\"/"/g;
		$sql =~ s/%s/ FRAGMENT /g;
		# our SQL spells keywords in capitals; messages do not
		next unless $sql =~ /\b(SELECT|INSERT|UPDATE|DELETE|WHERE|AND|OPERATOR|RETURNING|LOCK)\b/;
		# a SET-clause fragment passed to a macro ("col = expr")
		$sql = "SET $sql" if $sql =~ /^\s*[a-z_]+\s*=[^=]/;
		push @problems, map { "$_ in: " . substr($sql, 0, 160) } unqualified($sql);
	}
	is(join("\n", @problems), '', 'every operator in the SQL of ' . ($file =~ s{.*/}{}r) . ' is qualified');
}

done_testing();
