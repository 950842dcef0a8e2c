#!/usr/bin/perl
# bench/report.pl — turns the raw measurements of bench/run.sh into
# results.csv, summary.md and chart.dat (for bench/chart.gp).
#
# usage: report.pl RESULTS_DIR
# reads RESULTS_DIR/{raw.csv,metrics.csv,problems.txt,w5_*.txt,pg_test_fsync.txt}
use strict;
use warnings;

my $dir = shift or die "usage: $0 RESULTS_DIR\n";

# ---------------------------------------------------------------- inputs
my (@rows, %m);
open my $fh, '<', "$dir/raw.csv" or die "$dir/raw.csv: $!";
<$fh>;
while (<$fh>) {
	chomp;
	my ($wl, $var, $sync, $cl, $tps, $lat) = split /,/;
	push @rows, { wl => $wl, var => $var, sync => $sync, cl => $cl,
		tps => ($tps eq 'NA' ? undef : $tps), lat => ($lat eq 'NA' ? undef : $lat) };
}
close $fh;
open $fh, '<', "$dir/metrics.csv" or die "$dir/metrics.csv: $!";
<$fh>;
while (<$fh>) {
	chomp;
	my ($k, $v, $u) = /^([^,]*),("[^"]*"|[^,]*),(.*)$/ or next;
	$v =~ s/^"|"$//g;
	$m{$k} = $v;
}
close $fh;
my @problems;
if (open $fh, '<', "$dir/problems.txt") { chomp(@problems = <$fh>); close $fh; }

sub find {
	my ($wl, $var, $sync, $cl) = @_;
	for (@rows) {
		return $_ if $_->{wl} eq $wl && $_->{var} eq $var && $_->{sync} eq $sync && $_->{cl} eq $cl;
	}
	return undef;
}
sub div { my ($a, $b) = @_; return (defined $a && defined $b && $b > 0) ? $a / $b : undef; }
sub f2 { my $x = shift; return defined $x ? sprintf('%.2f', $x) : 'NA'; }
sub f3 { my $x = shift; return defined $x ? sprintf('%.3f', $x) : 'NA'; }
sub f0 { my $x = shift; return defined $x ? sprintf('%.0f', $x) : 'NA'; }

# ---------------------------------------------------------------- ratios
# ratio = this row's tps / its reference's tps (same workload, sync, clients);
# scale rows: latency at the big stream / latency at the small one.
my %ref = (W1 => 'plain', W2 => 'messagedb', W3 => 'plain', W4 => 'plain', W4rows => 'plain',
	horizon => 'plain_nopreload');
for my $r (@rows) {
	if ($r->{wl} eq 'scale') {
		if ($r->{var} =~ /^(\w+)_big$/) {
			my $small = find('scale', $1 eq 'read' ? 'read_1k' : "$1_s10", $r->{sync}, $r->{cl});
			$r->{ratio} = div($r->{lat}, $small && $small->{lat});
		} else {
			$r->{ratio} = 1;
		}
		next;
	}
	my $rv = $ref{$r->{wl}} or next;
	my $b = find($r->{wl}, $rv, $r->{sync}, $r->{cl});
	$r->{ratio} = div($r->{tps}, $b && $b->{tps});
}
# derived: the horizon (preloaded W1 4-client run) against no preload
my @derived;
for my $sync (qw(off on)) {
	my $pre = find('W1', 'ledger', $sync, 4);
	my $nop = find('horizon', 'ledger_nopreload', $sync, 4);
	next unless $pre && $nop;
	push @derived, { wl => 'horizon', var => 'preload_vs_nopreload', sync => $sync, cl => 4,
		tps => $pre->{tps}, lat => $pre->{lat}, ratio => div($pre->{tps}, $nop->{tps}) };
}

open my $csv, '>', "$dir/results.csv" or die $!;
print $csv "workload,variant,sync_commit,clients,tps,latency_ms,ratio\n";
for my $r (@rows, @derived) {
	printf $csv "%s,%s,%s,%s,%s,%s,%s\n", $r->{wl}, $r->{var}, $r->{sync}, $r->{cl},
		$r->{tps} // 'NA', $r->{lat} // 'NA', defined $r->{ratio} ? sprintf('%.3f', $r->{ratio}) : '';
}
close $csv;

# ---------------------------------------------------------------- checks
my (@checks, @chart);
sub check {
	my ($name, $sync, $cl, $ledger, $base, $ratio, $op, $target) = @_;
	my $status = 'info';
	if (defined $target) {
		$status = !defined $ratio ? 'NO DATA'
			: ($op eq '>=' ? $ratio >= $target : $ratio <= $target) ? 'met' : '**not met**';
		push @chart, [ "$name" . ($sync ? " $sync" : '') . ($cl ? " c$cl" : ''), $ratio // 0, $target ];
	}
	push @checks, [ $name, $sync // '', $cl // '', $ledger, $base, f2($ratio),
		defined $target ? "$op $target" : '—', $status ];
}
for my $sync (qw(off on)) {
	for my $cl (1, 2, 4) {
		my $l = find('W1', 'ledger', $sync, $cl);
		my $p = find('W1', 'plain', $sync, $cl);
		check('W1 append vs bare INSERT', $sync, $cl, f0($l && $l->{tps}) . ' tps', f0($p && $p->{tps}) . ' tps',
			$l && $l->{ratio}, '>=', $sync eq 'off' ? 0.85 : 0.95);
	}
}
for my $sync (qw(off on)) {
	my $l = find('W2', 'ledger', $sync, 4);
	my $md = find('W2', 'messagedb', $sync, 4);
	my $p = find('W2', 'plain', $sync, 4);
	check('W2 hot stream vs message-db', $sync, 4, f0($l && $l->{tps}) . ' tps', f0($md && $md->{tps}) . ' tps',
		$l && $l->{ratio}, '>=', 1.5);
	check('W2 hot stream vs bare INSERT', $sync, 4, f0($l && $l->{tps}) . ' tps', f0($p && $p->{tps}) . ' tps',
		div($l && $l->{tps}, $p && $p->{tps}), undef, undef);
}
for my $sync (qw(off on)) {
	my $p = find('W3', 'plain', $sync, 2);
	for my $form (qw(jsonb composite)) {
		my $l = find('W3', "ledger_$form", $sync, 2);
		check("W3 append_batch($form) x100 vs multi-row INSERT", $sync, 2, f0($l && $l->{tps}) . ' tps',
			f0($p && $p->{tps}) . ' tps', $l && $l->{ratio}, '>=', 0.8);
	}
}
{
	my $l = find('W4', 'ledger', 'on', 2);
	my $p = find('W4', 'plain', 'on', 2);
	check('W4 read 100 after pos vs keyset SELECT', '', 2, f0($l && $l->{tps}) . ' tps', f0($p && $p->{tps}) . ' tps',
		$l && $l->{ratio}, '>=', 0.9);
	$l = find('W4rows', 'ledger', 'on', 2);
	$p = find('W4rows', 'plain', 'on', 2);
	check('W4 same, rows sent to the client', '', 2, f0($l && $l->{tps}) . ' tps', f0($p && $p->{tps}) . ' tps',
		$l && $l->{ratio}, undef, undef);
}
{
	my $lb = $m{storage_ledger_bytes_per_entry};
	my $pb = $m{storage_plain_bytes_per_entry};
	check('storage bytes/entry vs plain table', '', '', defined $lb ? "$lb B" : 'NA', defined $pb ? "$pb B" : 'NA',
		div($lb, $pb), '<=', 1.3);
}
for my $sync (qw(off on)) {
	my ($d) = grep { $_->{sync} eq $sync } @derived;
	my $nop = find('horizon', 'ledger_nopreload', $sync, 4);
	check('W1 c4 with horizon (preload) vs without', $sync, 4, f0($d && $d->{tps}) . ' tps',
		f0($nop && $nop->{tps}) . ' tps', $d && $d->{ratio}, undef, undef);
}

# scaling table
my $big = $m{big_stream_entries} // '?';
my @scale;
for my $pair ([ 'read 100 after a position', 'read_1k', 'read_big', '1,000' ],
		[ 'count', 'count_s10', 'count_big', '10' ], [ 'stat', 'stat_s10', 'stat_big', '10' ],
		[ 'get (random seq)', 'get_s10', 'get_big', '10' ]) {
	my ($label, $s, $b, $n) = @$pair;
	my $rs = find('scale', $s, 'on', 1);
	my $rb = find('scale', $b, 'on', 1);
	push @scale, [ $label, $n, f3($rs && $rs->{lat}), f3($rb && $rb->{lat}), f2($rb && $rb->{ratio}) ];
}

# W5
sub pct {
	my ($p, @v) = @_;
	return undef unless @v;
	my $i = int($p / 100 * $#v + 0.5);
	return $v[$i];
}
my @w5;
for my $mode (qw(rate full)) {
	my $f = "$dir/w5_lag_$mode.txt";
	next unless -f $f;
	open my $lf, '<', $f or next;
	my ($in, @lags, %h) = (0);
	while (<$lf>) {
		chomp;
		if ($in) { push @lags, $_; next; }
		if ($_ eq 'lags') { $in = 1; next; }
		my ($k, $v) = split / /; $h{$k} = $v;
	}
	close $lf;
	@lags = sort { $a <=> $b } @lags;
	my $a = find('W5', "appenders_$mode", 'on', 4);
	push @w5, [ $mode eq 'rate' ? "4 appenders, throttled to $m{w5_rate_target} appends/s in total" : '4 appenders, unthrottled',
		f0($a && $a->{tps}), scalar(@lags), $h{calls} // 'NA', f2(pct(50, @lags)), f2(pct(99, @lags)),
		f2($lags[-1]) ];
}
my @wake;
if (open my $wf, '<', "$dir/w5_wakeup.txt") {
	my (@e2e, @ack);
	while (<$wf>) { my ($x, $y) = split; push @e2e, $x; push @ack, $y; }
	close $wf;
	@e2e = sort { $a <=> $b } @e2e;
	@ack = sort { $a <=> $b } @ack;
	@wake = (scalar(@e2e), f2(pct(50, @e2e)), f2(pct(99, @e2e)), f2(pct(50, @ack)), f2(pct(99, @ack)));
}

# ---------------------------------------------------------------- summary.md
open my $md, '>', "$dir/summary.md" or die $!;
my $mode = $m{mode} // '?';
print $md "# ledger benchmark — " . ($dir =~ m{([^/]+)$})[0] . "\n\n";
print $md "Machine: $m{nproc} cores ($m{cpu_model}), $m{memory_total} GiB RAM; $m{postgres}; "
	. "pg_test_fsync -s 1, fdatasync one 8kB write: " . ($m{pg_test_fsync_fdatasync} || 'NA') . " ops/sec.  \n";
print $md "Run: $mode, $m{duration_per_run} s per pgbench run (-M prepared), 'big' stream of $big entries, "
	. "fsync on, total runtime $m{runtime_seconds} s.  \n";
print $md "Ratios are ledger / baseline throughput measured back to back in the same cluster.\n\n";
print $md "| check | sync_commit | clients | ledger | baseline | ratio | target | status |\n";
print $md "|---|---|---|---|---|---|---|---|\n";
print $md '| ' . join(' | ', @$_) . " |\n" for @checks;
my $met = grep { $_->[7] eq 'met' } @checks;
my $targets = grep { $_->[6] ne '—' } @checks;
print $md "\n$met of $targets targets met.\n";

print $md "\n## Cost against stream size (1 client, pgbench latency average)\n\n";
print $md "| call | small stream | latency small (ms) | latency at $big entries (ms) | big / small |\n|---|---|---|---|---|\n";
print $md '| ' . join(' | ', @$_) . " |\n" for @scale;

print $md "\n## W5: read_all consumer lag (appender's clock_timestamp() in the append to the consumer's read_all returning it)\n\n";
if (@w5) {
	print $md "| appenders | append tps | entries delivered | read_all calls | median ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|\n";
	print $md '| ' . join(' | ', @$_) . " |\n" for @w5;
	print $md "\nread_all delivered every appended entry once, in id order: "
		. ((grep { /^W5/ } @problems) ? 'NO (see problems)' : 'yes') . ".\n";
} else {
	print $md "not measured (see problems)\n";
}
if (@wake) {
	print $md "\nWake-up of a blocked `read(wait => '5 s')` by an append in another session, $wake[0] iterations: "
		. "append issued → reader has the entry: median $wake[1] ms, p99 $wake[2] ms; "
		. "commit acknowledged → reader has the entry: median $wake[3] ms, p99 $wake[4] ms.\n";
}

print $md "\n## Other figures\n\n";
print $md "- storage after loading the same $m{storage_entries} entries: ledger $m{storage_ledger_bytes_per_entry} B/entry "
	. "(entries + indexes + TOAST + streams), plain table $m{storage_plain_bytes_per_entry} B/entry\n";
print $md "- load: ledger.append_batch (10,000 per call) $m{load_ledger_entries_per_s} entries/s, "
	. "INSERT … SELECT $m{load_plain_entries_per_s} entries/s\n";
for my $sync (qw(off on)) {
	my ($lp, $pp, $ln, $pn) = (find('W1', 'ledger', $sync, 4), find('W1', 'plain', $sync, 4),
		find('horizon', 'ledger_nopreload', $sync, 4), find('horizon', 'plain_nopreload', $sync, 4));
	next unless $lp && $pp && $ln && $pn;
	my ($a, $b) = (div($lp->{tps}, $pp->{tps}), div($ln->{tps}, $pn->{tps}));
	print $md "- horizon, sync $sync, 4 clients: ledger/plain " . f2($a) . " preloaded vs " . f2($b)
		. " without preload (each in its own cluster) → the horizon costs " . f0(100 * (1 - (div($a, $b) // 1))) . "% of append throughput\n";
}
print $md "- all measurements: results.csv (ratio = tps / the workload's reference: W1, W3, W4 plain; "
	. "W2 messagedb; horizon plain_nopreload; scale rows: latency big / small)\n";

print $md "\n## Problems\n\n";
if (@problems) { print $md "- $_\n" for @problems; } else { print $md "none\n"; }
close $md;

# ---------------------------------------------------------------- chart.dat
open my $cd, '>', "$dir/chart.dat" or die $!;
for (@chart) {
	(my $label = $_->[0]) =~ s/ vs .*?( (?:on|off))?( c\d+)?$/($1 \/\/ '') . ($2 \/\/ '')/e;
	$label =~ s/"/'/g;
	printf $cd "\"%s\" %.3f %.2f\n", $label, $_->[1], $_->[2];
}
close $cd;
