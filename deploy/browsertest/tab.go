package browsertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// pollInterval is how often WaitJS evaluates its predicate. A timer rather
// than requestAnimationFrame, so a wait never depends on the tab being painted.
const pollInterval = 20 * time.Millisecond

// Tab is one browser tab (its own window, so several tabs stay live at once).
// Each helper runs one step within the browser's step timeout and fails the
// test with t.Fatal on error. At the end of the test, console errors and
// uncaught exceptions of the page not allowed with AllowErrors fail it, and
// if it failed, the tab's screenshot, DOM and console are saved and their
// directory is logged. Use a tab from the goroutine of the test that opened it.
type Tab struct {
	t       testing.TB
	b       *Browser
	ctx     context.Context
	name    string
	timeout time.Duration

	mu      sync.Mutex
	console []string // every console line, for the artifacts
	errs    []string // console errors, exceptions, error-level log entries
	allowed []string // substrings of errors that do not fail the test
}

// NewTab opens a new tab in its own window. It is closed in t.Cleanup, after
// its errors are checked and, if the test failed, its artifacts saved.
func (b *Browser) NewTab(t testing.TB) *Tab {
	t.Helper()
	b.mu.Lock()
	b.tabs++
	n := b.tabs
	b.mu.Unlock()
	tab := &Tab{t: t, b: b, name: "tab" + strconv.Itoa(n), timeout: b.cfg.timeout}
	// WithListener sees every event from the tab's first command on, in the
	// order Chromium sent it, before the reply to any later command: an error
	// the page logged before a step returned is in Errors when the step has.
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithListener(tab.onEvent))
	tab.ctx = ctx
	t.Cleanup(func() {
		tab.checkErrors()
		if t.Failed() {
			tab.saveArtifacts()
		}
		cancel()
	})
	// The first run attaches the tab, and the tab's event loop lives as long
	// as the context of that run: it must be the bare tab context, so the
	// deadline is kept from outside.
	if err := firstRun(ctx, tab.timeout); err != nil {
		t.Fatalf("browsertest: open %s: %v", tab.name, err)
	}
	return tab
}

// Ctx returns the chromedp context of the tab, for actions the helpers do not
// cover. Run them with a deadline derived from it, never on the bare context
// from more than one goroutine at a time.
func (tab *Tab) Ctx() context.Context { return tab.ctx }

// SetTimeout changes how long each later step of this tab may take, e.g. a
// short one for a wait that is expected to fail, or a long one for a slow
// page.
func (tab *Tab) SetTimeout(d time.Duration) { tab.timeout = d }

// Timeout returns how long each step of this tab may take.
func (tab *Tab) Timeout() time.Duration { return tab.timeout }

// Name returns the tab's name in logs and artifact files ("tab1", "tab2", …).
func (tab *Tab) Name() string { return tab.name }

// Do runs chromedp actions in order within one step timeout, failing the test
// with what (a short description) on error.
func (tab *Tab) Do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tab.fatalf("%s: %v", what, err)
	}
}

// Navigate loads url and waits for its load event.
func (tab *Tab) Navigate(url string) {
	tab.t.Helper()
	tab.Do("navigate to "+url, chromedp.Navigate(url))
}

// WaitVisible waits until an element matching the CSS selector is visible.
func (tab *Tab) WaitVisible(sel string) {
	tab.t.Helper()
	tab.Do("wait for "+sel+" to be visible", chromedp.WaitVisible(chromedp.CSS(sel)))
}

// WaitGone waits until no element matches the CSS selector.
func (tab *Tab) WaitGone(sel string) {
	tab.t.Helper()
	tab.Do("wait for "+sel+" to be gone", chromedp.WaitNotPresent(chromedp.CSS(sel)))
}

// Click waits for the first element matching the CSS selector to be visible
// and clicks it with the mouse.
func (tab *Tab) Click(sel string) {
	tab.t.Helper()
	tab.Do("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// Type focuses the first element matching the CSS selector and types text
// into it as key presses ("\n" presses Enter).
func (tab *Tab) Type(sel, text string) {
	tab.t.Helper()
	tab.Do(fmt.Sprintf("type %q into %s", text, sel), chromedp.SendKeys(chromedp.CSS(sel), text, chromedp.NodeVisible))
}

// SetValue replaces the value of the input matching the CSS selector and
// fires its input event, as a user's edit would.
func (tab *Tab) SetValue(sel, value string) {
	tab.t.Helper()
	tab.Do(fmt.Sprintf("set %s to %q", sel, value), chromedp.Steps(
		chromedp.WaitVisible(chromedp.CSS(sel)),
		Eval[chromedp.Void](fmt.Sprintf(`(() => { const e = document.querySelector(%s); e.value = %s;
			e.dispatchEvent(new Event("input", {bubbles: true})); })()`, jsString(sel), jsString(value))),
	))
}

// Text returns the visible text of the first element matching the CSS
// selector, once it exists.
func (tab *Tab) Text(sel string) string {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		tab.fatalf("text of %s: %v", sel, err)
	}
	return s
}

// Count returns how many elements match the CSS selector now (it does not
// wait).
func (tab *Tab) Count(sel string) int {
	tab.t.Helper()
	return EvalTab[int](tab, fmt.Sprintf(`document.querySelectorAll(%s).length`, jsString(sel)))
}

// Eval runs a JavaScript expression in the page once and returns its value
// as a string (JSON.stringify'd unless it is one already), failing the test
// with what (a short description) if it throws.
func (tab *Tab) Eval(what, expr string) string {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`(() => { const v = (`+expr+`); return typeof v === "string" ? v : String(JSON.stringify(v)); })()`))
	if err != nil {
		tab.fatalf("%s: %v", what, err)
	}
	return v
}

// WaitJS waits until the JavaScript expression is truthy in the page, and
// fails the test with what (a description of the condition) when the step
// timeout passes first. It polls on a timer, so it works in every tab at once.
func (tab *Tab) WaitJS(what, expr string) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(pollInterval), chromedp.WithPollingTimeout(tab.timeout)))
	if err != nil {
		if errors.Is(err, chromedp.ErrPollingTimeout) || errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("not true within %s: %s", tab.timeout, expr)
		}
		tab.fatalf("wait until %s: %v", what, err)
	}
}

// WaitCount waits until exactly n elements match the CSS selector.
func (tab *Tab) WaitCount(sel string, n int) {
	tab.t.Helper()
	tab.WaitJS(fmt.Sprintf("%d elements match %s", n, sel),
		fmt.Sprintf(`document.querySelectorAll(%s).length === %d`, jsString(sel), n))
}

// Attr waits until the first element matching the CSS selector has a
// non-empty attribute name, and returns its value.
func (tab *Tab) Attr(sel, name string) string {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[string](
		fmt.Sprintf(`(e => e ? e.getAttribute(%s) : null)(document.querySelector(%s))`, jsString(name), jsString(sel)),
		chromedp.WithPollingInterval(pollInterval), chromedp.WithPollingTimeout(tab.timeout)))
	if err != nil {
		if errors.Is(err, chromedp.ErrPollingTimeout) || errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no element with a non-empty %s within %s", name, tab.timeout)
		}
		tab.fatalf("attribute %s of %s: %v", name, sel, err)
	}
	return v
}

// WaitText waits until the text of an element matching the CSS selector
// contains want.
func (tab *Tab) WaitText(sel, want string) {
	tab.t.Helper()
	tab.WaitJS(fmt.Sprintf("%s shows %q", sel, want), fmt.Sprintf(
		`[...document.querySelectorAll(%s)].some(e => e.innerText.includes(%s))`, jsString(sel), jsString(want)))
}

// Screenshot saves a PNG of the tab's viewport as name.png in the test's
// artifacts directory and returns its path.
func (tab *Tab) Screenshot(name string) string {
	tab.t.Helper()
	path, err := tab.screenshot(name)
	if err != nil {
		tab.t.Fatalf("browsertest: %s: %v", tab.name, err)
	}
	tab.t.Logf("browsertest: %s: screenshot %s", tab.name, path)
	return path
}

// Errors returns the page's console errors, uncaught exceptions, unhandled
// promise rejections and error-level browser log entries (a failed request,
// a refused WebSocket) seen so far, allowed or not.
func (tab *Tab) Errors() []string {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return append([]string(nil), tab.errs...)
}

// AllowErrors lets errors containing any of the substrings pass the check at
// the end of the test, for a test that provokes them on purpose (a 404 from
// the API, a WebSocket dropped by a fault injector).
func (tab *Tab) AllowErrors(substrings ...string) {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	tab.allowed = append(tab.allowed, substrings...)
}

// ClearErrors forgets the errors seen so far.
func (tab *Tab) ClearErrors() {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	tab.errs = nil
}

// EvalTab evaluates a JavaScript expression in the tab and returns its value
// decoded into T (a promise is awaited), failing the test on error.
func EvalTab[T any](tab *Tab, expr string) T {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, Eval[T](expr))
	if err != nil {
		tab.fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// Eval is the chromedp action that evaluates a JavaScript expression,
// awaiting a promise, and decodes its value into T.
func Eval[T any](expr string) chromedp.Action[T] {
	return chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise)
}

// TestID returns the CSS selector of the elements whose data-testid is id.
func TestID(id string) string { return `[data-testid=` + strconv.Quote(id) + `]` }

// TestIDWith returns the CSS selector of the elements whose data-testid is id
// and whose attribute attr is value, e.g. TestIDWith("chat-item", "data-chat-id", id).
func TestIDWith(id, attr, value string) string {
	return TestID(id) + `[` + attr + `=` + strconv.Quote(value) + `]`
}

// fatalf fails the test now; the tab's cleanup then saves its artifacts.
func (tab *Tab) fatalf(format string, args ...any) {
	tab.t.Helper()
	tab.t.Fatalf("browsertest: %s: "+format, append([]any{tab.name}, args...)...)
}

// checkErrors fails the test for each error of the page that was not allowed.
func (tab *Tab) checkErrors() {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	var bad []string
	for _, e := range tab.errs {
		ok := false
		for _, a := range tab.allowed {
			if strings.Contains(e, a) {
				ok = true
				break
			}
		}
		if !ok {
			bad = append(bad, e)
		}
	}
	if len(bad) > 0 {
		tab.t.Errorf("browsertest: %s: the page reported %d error(s):\n  %s", tab.name, len(bad), strings.Join(bad, "\n  "))
	}
}

// saveArtifacts writes the tab's screenshot, DOM and console to the test's
// artifacts directory and logs where. It runs in t.Cleanup of a failed test,
// so it reports its own trouble with Logf only.
func (tab *Tab) saveArtifacts() {
	dir, err := tab.b.artifactsDir(tab.t)
	if err != nil {
		tab.t.Logf("browsertest: %s: %v", tab.name, err)
		return
	}
	var saved []string
	if p, err := tab.screenshot("failure"); err != nil {
		tab.t.Logf("browsertest: %s: %v", tab.name, err)
	} else {
		saved = append(saved, filepath.Base(p))
	}
	ctx, cancel := context.WithTimeout(tab.ctx, 5*time.Second)
	html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement ? document.documentElement.outerHTML : ""`))
	cancel()
	if err == nil {
		p := filepath.Join(dir, tab.name+"-failure.html")
		if os.WriteFile(p, []byte(html), 0o644) == nil {
			saved = append(saved, filepath.Base(p))
		}
	}
	tab.mu.Lock()
	lines := strings.Join(tab.console, "\n") + "\n"
	tab.mu.Unlock()
	p := filepath.Join(dir, tab.name+"-console.log")
	if os.WriteFile(p, []byte(lines), 0o644) == nil {
		saved = append(saved, filepath.Base(p))
	}
	tab.t.Logf("browsertest: %s: saved %s in %s", tab.name, strings.Join(saved, ", "), dir)
}

// screenshot writes a PNG of the viewport to the artifacts directory.
func (tab *Tab) screenshot(name string) (string, error) {
	dir, err := tab.b.artifactsDir(tab.t)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(tab.ctx, 5*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return "", fmt.Errorf("screenshot: %w", err)
	}
	p := filepath.Join(dir, tab.name+"-"+name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		return "", fmt.Errorf("screenshot: %w", err)
	}
	return p, nil
}

// onEvent records console output. It runs in the tab's event loop: it must
// return fast and send no command.
func (tab *Tab) onEvent(ev any) {
	var line string
	isErr := false
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		line = "console." + string(ev.Type) + ": " + argsText(ev.Args) + stackPlace(ev.StackTrace)
		isErr = ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert
	case *runtime.EventExceptionThrown:
		line, isErr = "uncaught: "+exceptionText(ev.ExceptionDetails), true
	case *log.EventEntryAdded:
		e := ev.Entry
		line = "log." + string(e.Level) + " (" + string(e.Source) + "): " + e.Text
		if e.URL != "" {
			line += " [" + e.URL + "]"
		}
		isErr = e.Level == log.EntryLevelError
	default:
		return
	}
	tab.mu.Lock()
	defer tab.mu.Unlock()
	tab.console = append(tab.console, line)
	if isErr {
		tab.errs = append(tab.errs, line)
	}
}

// argsText renders console arguments roughly as DevTools does.
func argsText(args []*runtime.RemoteObject) string {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		var s string
		switch {
		case a.Type == runtime.RemoteObjectTypeString:
			if json.Unmarshal(a.Value, &s) != nil {
				s = string(a.Value)
			}
		case len(a.Value) > 0:
			s = string(a.Value)
		case a.UnserializableValue != "":
			s = string(a.UnserializableValue)
		case a.Description != "":
			s = a.Description
		default:
			s = string(a.Type)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// exceptionText renders an uncaught exception with its place.
func exceptionText(d *runtime.ExceptionDetails) string {
	if d == nil {
		return "exception"
	}
	s := d.Text
	if d.Exception != nil && d.Exception.Description != "" {
		s += " " + d.Exception.Description
	} else if d.Exception != nil && len(d.Exception.Value) > 0 {
		s += " " + string(d.Exception.Value)
	}
	if d.URL != "" {
		s += fmt.Sprintf(" (%s:%d:%d)", d.URL, d.LineNumber+1, d.ColumnNumber+1)
	}
	return s
}

// stackPlace renders the top frame of a stack trace as " (url:line)".
func stackPlace(st *runtime.StackTrace) string {
	if st == nil || len(st.CallFrames) == 0 {
		return ""
	}
	f := st.CallFrames[0]
	return fmt.Sprintf(" (%s:%d)", f.URL, f.LineNumber+1)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}
