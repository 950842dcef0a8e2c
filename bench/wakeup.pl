#!/usr/bin/perl
# bench/wakeup.pl — W5 wake-up latency: session A blocks in
#   ledger.read('wake', after => <last id>, wait => '5 s')
# session B then appends one entry to 'wake' (autocommit).  Both run as
# asynchronous queries and one select() loop watches both sockets, so we see
# when B's commit is acknowledged and when A's read returns the new entry.
# Prints per iteration: "<append-to-delivery ms> <commit-ack-to-delivery ms>".
# Connects through the libpq environment (PGHOST, PGPORT, ...).
#
# usage: wakeup.pl ITERATIONS
use strict;
use warnings;
use DBI;
use DBD::Pg qw(:async);
use Time::HiRes qw(time sleep);

my $n = shift // 200;
my %opt = (AutoCommit => 1, RaiseError => 1, PrintError => 0);
my $a = DBI->connect('dbi:Pg:', undef, undef, \%opt);
my $b = DBI->connect('dbi:Pg:', undef, undef, \%opt);

my ($last) = $b->selectrow_array(q{SELECT ledger.append('wake', '{"warmup": true}')});
my $rd = $a->prepare(q{SELECT id FROM ledger.read('wake', after => ?, wait => '5 s')}, { pg_async => PG_ASYNC });
my $ap = $b->prepare(q{SELECT ledger.append('wake', '{"ping": true}')}, { pg_async => PG_ASYNC });
my ($fa, $fb) = ($a->{pg_socket}, $b->{pg_socket});
my $bad = 0;

for my $i (1 .. $n) {
	$rd->execute($last);
	sleep 0.03;		# let the reader reach its wait
	die "reader returned before the append (iteration $i)\n" if $a->pg_ready;
	my $t0 = time;
	$ap->execute;
	my ($t_ack, $t_wake);
	while (!defined $t_ack || !defined $t_wake) {
		my $rin = '';
		vec($rin, $fa, 1) = 1 unless defined $t_wake;
		vec($rin, $fb, 1) = 1 unless defined $t_ack;
		select(my $rout = $rin, undef, undef, 6.0);
		my $now = time;
		$t_wake //= $now if !defined $t_wake && $a->pg_ready;
		$t_ack //= $now if !defined $t_ack && $b->pg_ready;
		die "no wake-up within 6 s (iteration $i)\n" if $now - $t0 > 6;
	}
	$b->pg_result;
	my ($id) = $ap->fetchrow_array;
	$a->pg_result;
	my $rows = $rd->fetchall_arrayref;
	$bad++ unless @$rows == 1 && $rows->[0][0] == $id;
	$last = $id;
	printf "%.3f %.3f\n", ($t_wake - $t0) * 1000.0, ($t_wake - $t_ack) * 1000.0;
}
print STDERR "wakeup: $bad iteration(s) returned something other than the appended entry\n" if $bad;
exit($bad ? 1 : 0);
