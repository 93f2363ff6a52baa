package envconfig

import (
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	DSN     string        `env:"T_DSN" required:"true" secret:"true" doc:"database"`
	Listen  string        `env:"T_LISTEN" default:"127.0.0.1:1"`
	Wait    time.Duration `env:"T_WAIT" default:"25s"`
	Rate    float64       `env:"T_RATE" default:"0.5"`
	On      bool          `env:"T_ON"`
	N       int           `env:"T_N" default:"3"`
	Origins []string      `env:"T_ORIGINS"`
	ignored string
}

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadAppliesDefaultsAndValues(t *testing.T) {
	var c testConfig
	err := load(&c, lookup(map[string]string{"T_DSN": "postgres://x", "T_WAIT": "2s", "T_ON": "true", "T_ORIGINS": "a:*, b:1,"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.DSN != "postgres://x" || c.Listen != "127.0.0.1:1" || c.Wait != 2*time.Second || c.Rate != 0.5 || !c.On || c.N != 3 {
		t.Fatalf("got %+v", c)
	}
	if len(c.Origins) != 2 || c.Origins[0] != "a:*" || c.Origins[1] != "b:1" {
		t.Fatalf("origins %q", c.Origins)
	}
}

func TestLoadNamesEveryBadVariableAndMasksSecrets(t *testing.T) {
	var c testConfig
	err := load(&c, lookup(map[string]string{"T_WAIT": "soon", "T_N": "three"}))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"T_DSN is required (database)", `T_WAIT="soon": not a duration`, `T_N="three": not an integer`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	c = testConfig{DSN: "postgres://user:pw@h/db"}
	if s := LogValue(c).String(); strings.Contains(s, "pw") || !strings.Contains(s, "T_DSN=****") {
		t.Errorf("log value leaks or lacks the masked secret: %s", s)
	}
}

func TestVarsListsTaggedFields(t *testing.T) {
	vars := Vars(&testConfig{})
	if len(vars) != 7 || vars[0].Name != "T_DSN" || !vars[0].Required || !vars[0].Secret || vars[1].Default != "127.0.0.1:1" {
		t.Fatalf("vars %+v", vars)
	}
}
