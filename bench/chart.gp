# bench/chart.gp — ledger/baseline ratios against their targets.
# gnuplot -e "datafile='chart.dat'; outfile='chart.png'" chart.gp
set terminal pngcairo size 1400,700 font ",10"
set output outfile
set title "ledger / baseline (same cluster, back to back); bars = measured, diamonds = target"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.8
set yrange [0:3]
set ylabel "ratio"
set xtics rotate by -40 left noenhanced
set grid ytics
set key top right
set bmargin 12
cap(x) = x > 2.9 ? 2.9 : x
plot datafile using (cap($2)):xtic(1) title "measured (capped at 2.9, value printed)" lc rgb "#3b75af", \
     '' using 0:3 with points pt 13 ps 2 lc rgb "#d62728" title "target", \
     '' using 0:(cap($2) + 0.06):(sprintf("%.2f", $2)) with labels notitle
