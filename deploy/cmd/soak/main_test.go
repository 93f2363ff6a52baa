package main

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsRejectsWhatCannotBeJudged(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{nil, true},
		{[]string{"-duration", "4m", "-every", "1m"}, true},
		{[]string{"-duration", "3m", "-every", "1m"}, false},
		{[]string{"-rate", "0"}, false},
		{[]string{"-every", "-1s"}, false},
		{[]string{"-chats", "0"}, false},
	} {
		if _, err := parseFlags(tc.args); (err == nil) != tc.ok {
			t.Errorf("parseFlags(%q) = %v, want ok %v", tc.args, err, tc.ok)
		}
	}
}

// TestGrowthJudgesTheSecondHalfAgainstTheMiddle feeds samples of a flat
// series, one growing by 30 % after the middle and one that shrank, and a
// series missing from some rows (a restarted service).
func TestGrowthJudgesTheSecondHalfAgainstTheMiddle(t *testing.T) {
	t.Parallel()
	s := &sampler{}
	for i := range 10 {
		r := row{at: time.Duration(i) * time.Minute, mb: map[string]float64{
			"internal-a1": 100 + float64(i%2), // flat within 1 %
			"writer-a1":   float64(50 + 5*max(0, i-5)),
			redisSeries:   200 - float64(10*i),
		}}
		if i != 7 {
			r.mb["external"] = 40
		}
		s.rows = append(s.rows, r)
	}
	g := s.growth()
	for name, want := range map[string]float64{"internal-a1": 1, "writer-a1": 40, redisSeries: 100 * 40.0 / 150, "external": 0} {
		if got := g[name]; got < want-0.01 || got > want+0.01 {
			t.Errorf("growth of %s = %.2f %%, want %.2f %%", name, got, want)
		}
	}
	if _, ok := g["sync-a1"]; ok {
		t.Errorf("growth of a series never sampled: %v", g["sync-a1"])
	}
}

func TestChartIsWellFormedSVG(t *testing.T) {
	t.Parallel()
	rows := []row{
		{at: 0, mb: map[string]float64{"internal-a1": 30, redisSeries: 2}},
		{at: time.Minute, mb: map[string]float64{"internal-a1": 31, redisSeries: 3}},
		{at: 2 * time.Minute, mb: map[string]float64{"internal-a1": 31.5, redisSeries: 3}},
	}
	path := filepath.Join(t.TempDir(), "soak.svg")
	if err := writeChart(path, rows, []string{"internal-a1", redisSeries, "writer-a1"}, config{duration: 2 * time.Minute, rate: 200, every: time.Minute}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(strings.NewReader(string(data)))
	polylines := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("chart is not well-formed XML: %v", err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			polylines++
		}
	}
	if polylines != 2 {
		t.Errorf("%d lines drawn, want 2 (a series without samples draws none)", polylines)
	}
}

func TestInfoField(t *testing.T) {
	t.Parallel()
	info := "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n"
	if v, err := infoField(info, "used_memory"); err != nil || v != 1<<20 {
		t.Errorf("infoField = %d, %v", v, err)
	}
	if _, err := infoField(info, "maxmemory"); err == nil {
		t.Error("infoField of a missing field: no error")
	}
}
