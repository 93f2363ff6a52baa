// Command benchmd copies `go test -bench` output from stdin to stdout and
// writes the figures it reports into a section of BENCHMARKS.md: a table of
// benchmark, figure, value, target, machine, date and the command that
// reproduces it. The section is delimited by
//
//	<!-- benchmd:NAME begin --> ... <!-- benchmd:NAME end -->
//
// and replaced as a whole (appended to the file when it is not there yet).
// Usage:
//
//	go test -run '^$' -bench . ./pkg/ | go run ./deploy/cmd/benchmd -section NAME -command 'make bench'
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// targets are the goals set for a benchmark's figures (issue texts, DESIGN.md).
var targets = map[string]string{
	"BenchmarkSyncFailoverGap/gap-p50-s":             "≤ 6 s (heartbeat timeout 4 s + 2 s)",
	"BenchmarkSyncFailoverGap/lost":                  "0",
	"BenchmarkSyncLatency/produce-p50-ms":            "≤ 20 ms",
	"BenchmarkSyncLatency/produce-p99-ms":            "≤ 100 ms",
	"BenchmarkSyncThroughput/changes/s":              "≥ 5,000",
	"BenchmarkWriteToLongPoll/p99-ms":                "≤ 50 ms",
	"BenchmarkLoadgenThroughput/acked-writes/s":      "≥ 470 (the original's end-to-end rate)",
	"BenchmarkWriterThroughput/batch=1000/records/s": "≥ 10,000",
	"BenchmarkWriterThroughput/batch=100/records/s":  "≥ 10,000",
	"BenchmarkWriterLatency/e2e-p99-ms":              "≤ 50 ms (at 200 records/s)",
	"BenchmarkInternalFanout/fanout-p99-ms":          "≤ 100 ms (1,000 clients, 200 changes/s)",
	"BenchmarkInternalFanout/KiB/conn":               "≤ 50 KiB",
	"BenchmarkInternalOpenChat/open-100k-p99-ms":     "≈ open-10-p99-ms (a chat opens as fast whatever its size)",
	"BenchmarkCacheCAS/scripts/s":                    "≥ 20,000",
	"BenchmarkIdleRSS/max-MB":                        "≤ 50 MB each",
	"BenchmarkEndToEndLatency/rate=200/e2e-p50-ms":   "≤ 30 ms",
	"BenchmarkEndToEndLatency/rate=200/e2e-p99-ms":   "≤ 150 ms",
	"BenchmarkSustainedThroughput/changes/s":         "≥ 2,000 for 5 minutes",
	"BenchmarkSoak/1h0m0s-200wps/lost":               "0",
	"BenchmarkSoak/1h0m0s-200wps/stream-findings":    "0",
	"BenchmarkSoak/1h0m0s-200wps/max-growth-%":       "≤ 10 % (last 30 min against minute 30)",
	"BenchmarkLegacySyncKillStorm/lease/lost":        "– (ours: 0, BenchmarkSyncFailoverGap)",
	"BenchmarkLegacySyncKillStorm/all/lost":          "– (ours: 0, BenchmarkSyncFailoverGap)",
}

func main() {
	if err := run(os.Stdin, os.Stdout, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchmd:", err)
		os.Exit(1)
	}
}

type figure struct{ bench, metric, value string }

func run(in io.Reader, out io.Writer, args []string) error {
	fs := flag.NewFlagSet("benchmd", flag.ContinueOnError)
	file := fs.String("file", "BENCHMARKS.md", "the Markdown file to update")
	section := fs.String("section", "", "name of the section to replace (required)")
	command := fs.String("command", "make bench", "the command that reproduces the figures")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *section == "" {
		return errors.New("-section is required")
	}
	var figs []figure
	failed := false
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(out, line)
		if strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "--- FAIL") {
			failed = true
		}
		figs = append(figs, parse(line)...)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if failed {
		return fmt.Errorf("a benchmark failed: %s left unchanged", *file)
	}
	if len(figs) == 0 {
		return fmt.Errorf("no benchmark figures on stdin: %s left unchanged", *file)
	}
	return update(*file, *section, table(figs, *command))
}

// parse reads a benchmark result line: name, iterations, then value/unit pairs.
func parse(line string) []figure {
	f := strings.Fields(line)
	if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
		return nil
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		return nil
	}
	name := f[0]
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			name = name[:i] // the GOMAXPROCS suffix
		}
	}
	var figs []figure
	for i := 2; i+1 < len(f); i += 2 {
		if f[i+1] == "ns/op" || f[i+1] == "B/op" || f[i+1] == "allocs/op" {
			continue
		}
		figs = append(figs, figure{bench: name, metric: f[i+1], value: f[i]})
	}
	return figs
}

func table(figs []figure, command string) string {
	var b strings.Builder
	machine := machine()
	date := time.Now().UTC().Format("2006-01-02")
	b.WriteString("| benchmark | figure | value | target | machine | date | command |\n")
	b.WriteString("|-----------|--------|-------|--------|---------|------|---------|\n")
	for _, f := range figs {
		target := targets[f.bench+"/"+f.metric]
		if target == "" {
			target = "–"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | `%s` |\n", f.bench, f.metric, f.value, target, machine, date, command)
	}
	return b.String()
}

// machine describes this machine in a few words: CPU model, cores, memory.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.Atoi(f[1]); err == nil {
					mem = fmt.Sprintf(", %d GiB", (kb+(1<<19))>>20)
				}
			}
		}
	}
	return fmt.Sprintf("%s, %d cores%s", model, runtime.NumCPU(), mem)
}

// update replaces the named section of the file with body.
func update(path, section, body string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin := "<!-- benchmd:" + section + " begin -->"
	end := "<!-- benchmd:" + section + " end -->"
	block := begin + "\n" + body + end
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(end):]
	case i < 0 && j < 0:
		s = strings.TrimRight(s, "\n") + "\n\n" + block + "\n"
	default:
		return fmt.Errorf("%s: unbalanced markers of section %q", path, section)
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
