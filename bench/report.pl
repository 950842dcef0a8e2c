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
my %ref = (W1 => 'plain', W2 => 'plain', W3 => 'plain', W4 => 'plain', horizon => 'plain_nopreload');
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

# ---------------------------------------------------------------- the table
# One row per workload and sync_commit; columns ledger / pgq / message-db as
# ratios to plain in the same run; the target applies to the ledger column.
my (@table, @chart);
sub cell { my ($wl, $var, $sync, $cl) = @_; my $r = find($wl, $var, $sync, $cl); return $r ? $r->{ratio} : undef; }
sub trow {
	my ($label, $sync, $wl, $cl, $lvar, $target, $others) = @_;
	my $p = find($wl, 'plain', $sync, $cl);
	my $l = cell($wl, $lvar, $sync, $cl);
	my @o = map { $others ? f2(cell($wl, $_, $sync, $cl)) : '–' } qw(pgq messagedb);
	$o[0] = '–' if $wl eq 'W4';
	my $status = !defined $target ? '' : !defined $l ? 'NO DATA' : $l >= $target ? 'met' : '**not met**';
	push @chart, [ "$wl" . ($lvar =~ /jsonb/ ? ' jsonb' : '') . " $sync c$cl", $l // 0, $target ] if defined $target;
	push @table, [ $label, $sync, f0($p && $p->{tps}), f2($l), @o, defined $target ? ">= $target" . ($wl eq 'W2' ? ' (stretch)' : '') : '—', $status ];
}
for my $sync (qw(on off)) {
	trow('W1 one append per txn, 1 client', $sync, 'W1', 1, 'ledger', 0.95, 1);
}
for my $sync (qw(on off)) {
	trow('W1 one append per txn, 4 clients', $sync, 'W1', 4, 'ledger', 0.95, 1);
}
for my $sync (qw(on off)) {
	trow('W2 4 clients, one hot stream', $sync, 'W2', 4, 'ledger', $sync eq 'on' ? 0.8 : undef, 1);
}
for my $sync (qw(on off)) {
	trow('W3 100 entries per call, 2 clients (append_batch, composite array)', $sync, 'W3', 2, 'ledger', 1.0, 1);
}
for my $sync (qw(on off)) {
	trow('W3 same, jsonb form of append_batch', $sync, 'W3', 2, 'ledger_jsonb', 0.9, 0);
}
for my $sync (qw(on off)) {
	trow('W4 read 100 rows after a random position, rows sent, 2 clients', $sync, 'W4', 2, 'ledger', 0.9, 1);
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
print $md "Each cell: throughput / plain's throughput in the same run (plain = bench.plain, the same columns and indexes as a ledger entry; "
	. "W3 plain = one 100-row INSERT … VALUES; W4 plain = the keyset SELECT). '–' = no equivalent. Target on the ledger column.\n\n";
print $md "| workload | sync_commit | plain tps | ledger | pgq | message-db | target | status |\n";
print $md "|---|---|---|---|---|---|---|---|\n";
print $md '| ' . join(' | ', @$_) . " |\n" for @table;
my $met = grep { $_->[-1] eq 'met' } @table;
my $targets = grep { $_->[-2] ne '—' } @table;
print $md "\n$met of $targets targets met.\n";

print $md "\n## Batch dedup and cancel (append_batch, jsonb form, wall time of the call)\n\n";
my @sizes = sort { $a <=> $b } map { /^dedup_distinct_(\d+)$/ ? $1 : () } keys %m;
if (@sizes) {
	print $md "| entries | distinct dedup keys (ms) | half duplicates (ms) |\n|---|---|---|\n";
	print $md "| $_ | " . ($m{"dedup_distinct_$_"} // 'NA') . ' | ' . ($m{"dedup_halfdup_$_"} // 'NA') . " |\n" for @sizes;
	if (@sizes >= 2) {
		my ($s0, $s1) = ($sizes[0], $sizes[-1]);
		my $t0 = $m{"dedup_distinct_$s0"}; my $t1 = $m{"dedup_distinct_$s1"};
		if (defined $t0 && defined $t1 && $t0 =~ /^\d/ && $t1 =~ /^\d/ && $t0 > 0) {
			printf $md "\n%s→%s entries: time ×%.1f for ×%.0f entries (linear: ×%.0f, quadratic: ×%.0f).\n",
				$s0, $s1, $t1 / $t0, $s1 / $s0, $s1 / $s0, ($s1 / $s0) ** 2;
		}
	}
}
if (defined $m{cancel_ms}) {
	print $md "\nCancel: `statement_timeout = 1s` on the $m{cancel_n}-entry batch returned after $m{cancel_ms} ms ($m{cancel_error}).\n";
}

print $md "\n## Memory: one read of $m{mem_n} entries (work_mem $m{work_mem}), peak RSS of the backend\n\n";
if (defined $m{mem_ledger_vmhwm} || defined $m{mem_plain_vmhwm}) {
	print $md "| query | VmHWM before (kB) | VmHWM after (kB) | RssShmem after (kB) | private peak ≈ (kB) | time (ms) |\n|---|---|---|---|---|---|\n";
	for my $side (qw(ledger plain)) {
		my $label = $side eq 'ledger' ? "`ledger.read('big', \"limit\" => $m{mem_n})`"
			: "`SELECT * FROM bench.plain WHERE stream = 'big' ORDER BY id LIMIT $m{mem_n}`";
		print $md "| $label | " . join(' | ', map { $m{"mem_${side}_$_"} // 'NA' } qw(vmhwm_start vmhwm rssshmem private_peak ms)) . " |\n";
	}
	print $md "\nRows streamed to the client with COPY (…) TO STDOUT. VmHWM includes the shared_buffers pages the backend touched "
		. "(they stay mapped, RssShmem); private peak = VmHWM − RssShmem − RssFile after the query.\n";
} else {
	print $md "not measured (see problems)\n";
}

print $md "\n## Read cost against database size (bench/read_cost.sh)\n\n";
if (open my $rc, '<', "$dir/read_cost/summary.md") {
	local $/; my $t = <$rc>; close $rc;
	$t =~ s/^#\s.*\n+//;
	print $md $t, "\n";
} elsif (open $rc, '<', "$dir/read_cost.log") {
	my $first = <$rc> // ''; close $rc; chomp $first;
	print $md ($first =~ /not present/ ? "read_cost.sh not present\n" : "no summary written; see read_cost.log\n");
} else {
	print $md "not run\n";
}

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
print $md "- storage ratio ledger/plain: " . f2(div($m{storage_ledger_bytes_per_entry}, $m{storage_plain_bytes_per_entry})) . " (target ≤ 1.3)\n";
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
print $md "- all measurements: results.csv (ratio = tps / the workload's reference: W1-W4 plain; "
	. "horizon plain_nopreload; scale rows: latency big / small)\n";

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
