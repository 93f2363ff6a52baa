package converge

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"slices"
)

// WriteSummary writes r for people: the verdict, the counts, at most show
// findings of each kind, and the latency distributions.
func WriteSummary(w io.Writer, r Report, show int) error {
	b := bufio.NewWriter(w)
	verdict := "OK"
	if r.Failed() {
		verdict = "FAILED"
	}
	fmt.Fprintf(b, "convergence %s: %d lost, %d stale, %d duplicate rows, %d stream regressions, %d stream duplicates, %d lost in stream\n",
		verdict, len(r.Lost), len(r.Stale), len(r.Duplicates), len(r.Regressions), len(r.StreamDuplicates), len(r.LostInStream))
	fmt.Fprintf(b, "log       %d acknowledged writes naming %d chats and %d messages (%d unusable)\n",
		r.Acked, r.Chats, r.Messages, r.Unusable)
	fmt.Fprintf(b, "database  %d chat rows, %d message rows; %d rows the log does not name; %d rows newer than the log\n",
		r.RowsChats, r.RowsMessages, r.Unlogged, len(r.Ahead))
	fmt.Fprintf(b, "streams   %d streams, %d frames\n", r.Streams, r.Frames)
	for _, list := range []struct {
		name     string
		findings []Finding
	}{
		{"lost", r.Lost}, {"stale", r.Stale}, {"duplicate rows", r.Duplicates},
		{"stream regressions", r.Regressions}, {"stream duplicates", r.StreamDuplicates}, {"lost in stream", r.LostInStream},
		{"newer than the log (not a failure)", r.Ahead},
	} {
		if len(list.findings) == 0 {
			continue
		}
		fmt.Fprintf(b, "%s: %d\n", list.name, len(list.findings))
		for i, f := range list.findings {
			if i == show {
				fmt.Fprintf(b, "  … and %d more\n", len(list.findings)-show)
				break
			}
			where := ""
			if f.Stream != "" {
				where = fmt.Sprintf(" [%s frame %d]", f.Stream, f.Frame)
			}
			fmt.Fprintf(b, "  %s %s%s: %s\n", f.Entity, f.ID, where, f.Detail)
		}
	}
	writeLatencies(b, "latency ack → database row written (Postgres clock)", r.DBLatency)
	writeLatencies(b, "latency ack → stream frame received", r.StreamLatency)
	return b.Flush()
}

func writeLatencies(w io.Writer, title string, l Latencies) {
	fmt.Fprintf(w, "%s: %s\n", title, l.All)
	for _, op := range slices.Sorted(maps.Keys(l.ByOp)) {
		fmt.Fprintf(w, "  %-16s %s\n", op, l.ByOp[op])
	}
}
