package devstack_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
)

// alertRules is the part of a Prometheus rule file the test checks.
type alertRules struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// TestAlertRulesNameExportedMetrics reads deploy/prometheus/alerts.yml and
// checks each rule (a name, a severity, a summary, a runbook naming a README
// section that exists) and that every metric its expression names is one
// that a running service of the stack exports on /metrics — an alert on a
// misspelt or renamed metric would never fire.
func TestAlertRulesNameExportedMetrics(t *testing.T) {
	t.Parallel()
	stack := stacktest.Connect(t)
	data, err := os.ReadFile(filepath.Join("..", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("alerts.yml is not YAML: %v", err)
	}
	var rules alertRules
	dec := json.NewDecoder(strings.NewReader(string(js)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t, stack.Dir())
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			switch {
			case r.Alert == "" || r.Expr == "":
				t.Errorf("group %s: a rule without alert or expr: %+v", g.Name, r)
			case !slices.Contains([]string{"info", "warning", "critical"}, r.Labels["severity"]):
				t.Errorf("%s: severity %q, want info, warning or critical", r.Alert, r.Labels["severity"])
			case r.Annotations["summary"] == "":
				t.Errorf("%s: no summary", r.Alert)
			}
			section, ok := strings.CutPrefix(r.Annotations["runbook"], "README.md: ")
			if !ok || !strings.Contains(string(readme), section) {
				t.Errorf("%s: runbook %q does not name a part of README.md", r.Alert, r.Annotations["runbook"])
			}
			for _, m := range metricsOf(r.Expr) {
				if !exported[m] {
					t.Errorf("%s: metric %s is exported by no service of the stack", r.Alert, m)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("alerts.yml has no rules")
	}
}

var (
	// inBraces and inBrackets are a PromQL expression's label matchers and
	// range durations, which name no metric.
	inBraces   = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]|"[^"]*"`)
	identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*\s*\(?`)
)

// metricsOf returns the metric names an expression uses: identifiers with an
// underscore (every metric of ours has one, no function or keyword used
// here has one) that are not calls, outside label matchers and ranges.
func metricsOf(expr string) []string {
	var out []string
	for _, tok := range identifier.FindAllString(inBraces.ReplaceAllString(expr, " "), -1) {
		if strings.HasSuffix(tok, "(") || !strings.Contains(tok, "_") {
			continue
		}
		out = append(out, strings.TrimSpace(tok))
	}
	return out
}

func TestMetricsOf(t *testing.T) {
	t.Parallel()
	got := metricsOf(`sum by (kind) (increase(writer_records_total{outcome="dead_lettered"}[15m])) > 0.5 * internal_cache_window_seconds or max_over_time(a_b[1m])`)
	want := []string{"writer_records_total", "internal_cache_window_seconds", "a_b"}
	if !slices.Equal(got, want) {
		t.Errorf("metricsOf = %v, want %v", got, want)
	}
}

// exportedMetrics scrapes /metrics of every service of ours in the stack
// at dir and returns the metric names they export (a histogram's series
// names too).
func exportedMetrics(t *testing.T, dir string) map[string]bool {
	t.Helper()
	ports, err := os.ReadFile(filepath.Join(dir, "ports.env"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	client := &http.Client{Timeout: 10 * time.Second}
	scraped := 0
	for line := range strings.Lines(string(ports)) {
		name, port, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || !slices.ContainsFunc([]string{"external", "sync-", "writer-", "internal-"}, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, fmt.Sprintf("http://127.0.0.1:%s/metrics", port), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Logf("%s: %v (not running?)", name, err)
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
				out[f[2]] = true
				if f[3] == "histogram" || f[3] == "summary" {
					out[f[2]+"_bucket"], out[f[2]+"_sum"], out[f[2]+"_count"] = true, true, true
				}
			}
		}
		resp.Body.Close()
		scraped++
	}
	if scraped < 4 {
		t.Fatalf("scraped %d services, want every one of ours", scraped)
	}
	return out
}
