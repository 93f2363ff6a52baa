package browsertest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatpoc/chat-poc/deploy/browsertest"
)

// livePage counts clicks and keeps the last thing said, and pushes both to
// every open page over server-sent events.
const livePage = `<!doctype html>
<html><head><meta charset="utf-8"><title>live</title></head><body>
<p>Clicks: <span data-testid="count" data-count="">?</span></p>
<p>Said: <span data-testid="said"></span></p>
<button data-testid="inc">+1</button>
<label>Say <input data-testid="say-input"></label>
<button data-testid="say">Say</button>
<script>
const es = new EventSource("/events");
es.onmessage = (e) => {
  const s = JSON.parse(e.data);
  const count = document.querySelector('[data-testid=count]');
  count.textContent = s.count;
  count.dataset.count = s.count;
  document.querySelector('[data-testid=said]').textContent = s.said;
};
document.querySelector('[data-testid=inc]').onclick = () => fetch("/inc", {method: "POST"});
document.querySelector('[data-testid=say]').onclick = () =>
  fetch("/say", {method: "POST", body: document.querySelector('[data-testid=say-input]').value});
</script></body></html>`

// brokenPage reports errors in each way the harness must catch.
const brokenPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>broken</title></head><body>
<p data-testid="hello">hello</p>
<script>
console.log("just a log line");
console.error("boom from console.error");
setTimeout(() => { throw new Error("kaboom from a timer"); });
Promise.reject(new Error("rejected on purpose"));
fetch("/missing").then(() => { window.done = true; });
</script></body></html>`

// liveServer is the state behind livePage: one owner of the subscriber set.
type liveServer struct {
	mu    sync.Mutex
	count int
	said  string
	subs  map[chan string]struct{}
}

func (s *liveServer) stateLocked() string {
	return fmt.Sprintf(`{"count":%d,"said":%q}`, s.count, s.said)
}

func (s *liveServer) publishLocked() {
	msg := s.stateLocked()
	for ch := range s.subs {
		select {
		case ch <- msg:
		default: // a slow page catches up with the next state
		}
	}
}

func newTestServer(t *testing.T) *httptest.Server {
	t.Helper()
	ls := &liveServer{subs: map[chan string]struct{}{}}
	mux := http.NewServeMux()
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(body))
		}
	}
	mux.HandleFunc("GET /{$}", page(livePage))
	mux.HandleFunc("GET /broken", page(brokenPage))
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /inc", func(w http.ResponseWriter, _ *http.Request) {
		ls.mu.Lock()
		ls.count++
		ls.publishLocked()
		ls.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /say", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 256))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ls.mu.Lock()
		ls.said = string(body)
		ls.publishLocked()
		ls.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		ch := make(chan string, 16)
		ls.mu.Lock()
		ls.subs[ch] = struct{}{}
		first := ls.stateLocked()
		ls.mu.Unlock()
		defer func() {
			ls.mu.Lock()
			delete(ls.subs, ch)
			ls.mu.Unlock()
		}()
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for msg := first; ; {
			if _, err := fmt.Fprintf(w, "data: %s\n\n", msg); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case msg = <-ch:
			case <-r.Context().Done():
				return
			}
		}
	})
	srv := httptest.NewServer(mux)
	// Registered before the browser's cleanup, so it runs after the browser
	// (and its event streams) are gone.
	t.Cleanup(srv.Close)
	return srv
}

func TestTwoTabsSeeLiveUpdates(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	start := time.Now()
	b := browsertest.New(t)
	t.Logf("started %s in %s", b.Version(t), time.Since(start).Round(time.Millisecond))

	alice, bob := b.NewTab(t), b.NewTab(t)
	alice.Navigate(srv.URL)
	bob.Navigate(srv.URL)
	alice.WaitText(browsertest.TestID("count"), "0")
	bob.WaitText(browsertest.TestID("count"), "0")

	alice.Click(browsertest.TestID("inc"))
	bob.WaitVisible(browsertest.TestIDWith("count", "data-count", "1"))
	if got := bob.Attr(browsertest.TestID("count"), "data-count"); got != "1" {
		t.Errorf("bob's count is %q after one click, want 1", got)
	}
	bob.Click(browsertest.TestID("inc"))
	alice.WaitText(browsertest.TestID("count"), "2")

	bob.Type(browsertest.TestID("say-input"), "hi <b>there</b>")
	bob.Click(browsertest.TestID("say"))
	alice.WaitText(browsertest.TestID("said"), "hi <b>there</b>")
	if got := alice.Text(browsertest.TestID("said")); got != "hi <b>there</b>" {
		t.Errorf("alice sees %q, want the text as typed", got)
	}
	alice.WaitCount(browsertest.TestID("inc"), 1)
	if n := alice.Count(`button`); n != 2 {
		t.Errorf("Count(button) = %d, want 2", n)
	}
	for _, tab := range []*browsertest.Tab{alice, bob} {
		if errs := tab.Errors(); len(errs) > 0 {
			t.Errorf("%s: unexpected page errors: %q", tab.Name(), errs)
		}
	}
	t.Logf("whole test, browser start included: %s", time.Since(start).Round(time.Millisecond))
}

func TestPageErrorsAreCaught(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	b := browsertest.New(t)
	tab := b.NewTab(t)
	tab.Navigate(srv.URL + "/broken")
	tab.WaitJS("the page finished its script", `window.done === true`)
	wants := []string{"boom from console.error", "kaboom from a timer", "rejected on purpose", "404"}
	// The timer's exception may land after the fetch; wait for all of them.
	tab.WaitJS("the timer ran", `new Promise(r => setTimeout(() => r(true)))`)
	errs := strings.Join(tab.Errors(), "\n")
	for _, want := range wants {
		if !strings.Contains(errs, want) {
			t.Errorf("Errors() lacks %q; got:\n%s", want, errs)
		}
	}
	if strings.Contains(errs, "just a log line") {
		t.Errorf("Errors() holds a plain console.log line:\n%s", errs)
	}
	tab.AllowErrors(wants...)
}

// recordingT stands in for a test that fails, so the harness's failure path
// can be checked without failing this test. Fatal ends the goroutine, as the
// real one does; cleanups run when the test calls runCleanups.
type recordingT struct {
	testing.TB
	mu       sync.Mutex
	failed   bool
	msgs     []string
	cleanups []func()
}

func (r *recordingT) record(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

func (r *recordingT) Errorf(format string, args ...any) { r.record(format, args...) }
func (r *recordingT) Fatalf(format string, args ...any) {
	r.record(format, args...)
	runtime.Goexit()
}

func (r *recordingT) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *recordingT) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *recordingT) runCleanups() {
	r.mu.Lock()
	fs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (r *recordingT) messages() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.msgs, "\n")
}

// inGoroutine runs f as a test body would run: a Fatal in it ends it.
func inGoroutine(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

func TestFailedWaitSavesArtifactsAndPageErrorsFail(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	artifacts := t.TempDir()
	b := browsertest.New(t, browsertest.WithArtifactsDir(artifacts))

	rt := &recordingT{TB: t}
	start := time.Now()
	inGoroutine(func() {
		tab := b.NewTab(rt)
		tab.Navigate(srv.URL + "/broken")
		tab.WaitJS("the page finished its script", `window.done === true`)
		tab.SetTimeout(time.Second)
		start = time.Now()
		tab.WaitJS("pigs fly", `window.pigsFly === true`)
		t.Error("WaitJS returned although its condition never held")
	})
	if waited := time.Since(start); waited > 10*time.Second {
		t.Errorf("a 1 s step timeout took %s to fail", waited)
	}
	rt.runCleanups()

	msgs := rt.messages()
	for _, want := range []string{"wait until pigs fly", "window.pigsFly === true", "the page reported", "boom from console.error"} {
		if !strings.Contains(msgs, want) {
			t.Errorf("failure messages lack %q; got:\n%s", want, msgs)
		}
	}
	dir := filepath.Join(artifacts, t.Name())
	for _, f := range []string{"tab1-failure.png", "tab1-failure.html", "tab1-console.log"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Errorf("artifact: %v", err)
			continue
		}
		switch filepath.Ext(f) {
		case ".png":
			if !strings.HasPrefix(string(data), "\x89PNG") {
				t.Errorf("%s is not a PNG", f)
			}
		case ".html":
			if !strings.Contains(string(data), `data-testid="hello"`) {
				t.Errorf("%s lacks the page's DOM", f)
			}
		case ".log":
			if !strings.Contains(string(data), "just a log line") {
				t.Errorf("%s lacks the console", f)
			}
		}
	}
}

func TestMissingChromiumNamesTheInstallCommand(t *testing.T) {
	// Not parallel: it changes the environment.
	t.Setenv(browsertest.EnvChromium, filepath.Join(t.TempDir(), "no-chromium-here"))
	_, err := browsertest.FindChromium()
	if !errors.Is(err, browsertest.ErrNoChromium) || !strings.Contains(err.Error(), "apt-get install -y chromium") {
		t.Errorf("FindChromium() error = %v, want ErrNoChromium naming apt-get install -y chromium", err)
	}

	rt := &recordingT{TB: t}
	inGoroutine(func() {
		browsertest.New(rt)
		t.Error("New returned without a browser")
	})
	rt.runCleanups()
	if msgs := rt.messages(); !strings.Contains(msgs, "apt-get install -y chromium") {
		t.Errorf("New failed with %q, want it to name apt-get install -y chromium", msgs)
	}
}

// TestTabCtxRunsRawActions shows the escape hatch: chromedp actions on
// Tab.Ctx, from goroutines, one per tab.
func TestTabCtxRunsRawActions(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t)
	b := browsertest.New(t)
	tabs := []*browsertest.Tab{b.NewTab(t), b.NewTab(t), b.NewTab(t)}
	errs := make(chan error, len(tabs))
	for _, tab := range tabs {
		go func() {
			ctx, cancel := context.WithTimeout(tab.Ctx(), browsertest.DefaultTimeout)
			defer cancel()
			errs <- chromedp.Do(ctx, chromedp.Navigate(srv.URL), chromedp.WaitVisible(chromedp.CSS(browsertest.TestID("inc"))))
		}()
	}
	for range tabs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, tab := range tabs {
		tab.WaitText(browsertest.TestID("count"), "0")
	}
}
