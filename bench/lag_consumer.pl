#!/usr/bin/perl
# bench/lag_consumer.pl — W5: a read_all consumer that follows streams 'w5-*'
# while pgbench appends to them, and records, per delivered entry, the lag from
# the appender's clock_timestamp() (payload field "t", taken inside the
# appending statement, just before its commit) to the moment the consumer's
# read_all call returned.  Stops once STOPFILE exists and a call comes back
# empty.  Connects through the libpq environment (PGHOST, PGPORT, ...).
#
# usage: lag_consumer.pl AFTER_ID STOPFILE OUTFILE
# OUTFILE gets: "delivered N", "calls N", "order_errors N", "last_id N",
# then one lag in milliseconds per line after a "lags" line.
use strict;
use warnings;
use DBI;
use Time::HiRes qw(time);

my ($after, $stop, $out) = @ARGV;
die "usage: $0 AFTER_ID STOPFILE OUTFILE\n" unless defined $out;

my $dbh = DBI->connect('dbi:Pg:', undef, undef, { AutoCommit => 1, RaiseError => 1, PrintError => 0 });
my $sth = $dbh->prepare(q{
	SELECT id, (payload->>'t')::float8
	FROM ledger.read_all(after => ?, "limit" => 1000, streams => 'w5-*', wait => '1 s')});

my ($last, $calls, $order_errors, @lags) = ($after, 0, 0);
my %seen;
while (1) {
	$sth->execute($last);
	my $rows = $sth->fetchall_arrayref;
	my $now = time;
	$calls++;
	if (!@$rows) {
		last if -e $stop;
		next;
	}
	for my $r (@$rows) {
		my ($id, $t) = @$r;
		$order_errors++ if $id <= $last || $seen{$id}++;
		$last = $id;
		push @lags, ($now - $t) * 1000.0 if defined $t;
	}
}
open my $fh, '>', $out or die "$out: $!";
printf $fh "delivered %d\ncalls %d\norder_errors %d\nlast_id %d\nlags\n", scalar(@lags), $calls, $order_errors, $last;
printf $fh "%.3f\n", $_ for @lags;
close $fh;
