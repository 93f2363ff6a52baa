package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/deploy/browsertest"
	"github.com/chatpoc/chat-poc/deploy/devstack"
	"github.com/chatpoc/chat-poc/deploy/devstack/stacktest"
)

var (
	tid   = browsertest.TestID
	tidAt = browsertest.TestIDWith
)

// externalAPI calls the stack's external service and decodes the JSON
// answer's id, if any.
func externalAPI(t *testing.T, method, url, body string) string {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s %s", method, url, resp.Status, b)
	}
	var v struct{ ID string }
	_ = json.Unmarshal(b, &v)
	return v.ID
}

// TestUIShowsExternalChangesLive opens the stack's internal app (region a's
// instance, on the stack's whole pipeline: external → sync → Kafka →
// internal) in a real Chromium and makes changes in the external service:
// a new chat appears in the list, a message appears, its edit shows; the
// instance is killed and restarted and the page reconnects and shows what
// was written meanwhile; reloaded, the page is still right; the message's
// and the chat's deletes show.
func TestUIShowsExternalChangesLive(t *testing.T) {
	stack := stacktest.Connect(t)
	ext := stacktest.Env(t, stack, devstack.EnvExternalURL)
	internal := stacktest.Env(t, stack, devstack.EnvInternalURL)

	b := browsertest.New(t)
	tab := b.NewTab(t)
	tab.Navigate(internal)
	tab.WaitVisible(tidAt("conn-status", "data-state", "open"))
	tab.WaitVisible(tidAt("chat-list", "data-loaded", "true"))

	chat := externalAPI(t, http.MethodPost, ext+"/chats", "")
	item := tidAt("chat-item", "data-chat-id", chat)
	tab.WaitVisible(item) // newChat, live
	tab.Click(item)
	loaded := tidAt("message-list", "data-chat-id", chat) + `[data-loaded="true"]`
	tab.WaitVisible(loaded)

	mid := externalAPI(t, http.MethodPost, ext+"/chat/"+chat, `{"content":"hello from external"}`)
	msg := tidAt("message", "data-message-id", mid)
	tab.WaitText(msg+" "+tid("message-content"), "hello from external")

	externalAPI(t, http.MethodPut, ext+"/chat/"+chat+"/message/"+mid, `{"content":"hello, edited"}`)
	tab.WaitText(msg+" "+tid("message-content"), "hello, edited")
	tab.WaitVisible(msg + `[data-edited="true"]`)

	// The instance dies (the launcher restarts it): the page notices,
	// reconnects, re-subscribes and reloads, and shows what was written
	// while it was away.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := stack.Kill(ctx, devstack.InternalA1); err != nil {
		t.Fatal(err)
	}
	tab.WaitVisible(tidAt("conn-status", "data-state", "closed"))
	tab.AllowErrors("WebSocket connection", "ERR_CONNECTION_REFUSED") // the reconnects while it is down
	away := externalAPI(t, http.MethodPost, ext+"/chat/"+chat, `{"content":"while you were away"}`)
	if err := stack.StartComponent(ctx, devstack.InternalA1); err != nil {
		t.Fatal(err)
	}
	tab.WaitVisible(tidAt("conn-status", "data-state", "open"))
	tab.WaitText(tidAt("message", "data-message-id", away)+" "+tid("message-content"), "while you were away")

	// Reloaded, the page shows the same from its load.
	tab.Navigate(internal)
	tab.WaitVisible(tidAt("conn-status", "data-state", "open"))
	tab.WaitVisible(item)
	tab.Click(item)
	tab.WaitVisible(loaded)
	tab.WaitText(msg+" "+tid("message-content"), "hello, edited")

	externalAPI(t, http.MethodDelete, ext+"/chat/"+chat+"/message/"+mid, "")
	tab.WaitVisible(msg + `[data-deleted="true"]`)

	externalAPI(t, http.MethodDelete, ext+"/chat/"+chat, "")
	tab.WaitVisible(tid("chat-deleted"))
	tab.WaitGone(item)
	tab.WaitJS("the sync's status line", `document.querySelector('[data-testid="sync-status"]').textContent.includes("running")`)
}

// TestUIAppliesUpdatesByVersion feeds the page's frame handler directly, in
// the real browser: an update that arrives before its chat's load is
// buffered and shown after it (not overwritten by the load's older
// version), and an older update after a newer one is never shown.
func TestUIAppliesUpdatesByVersion(t *testing.T) {
	stack := stacktest.Connect(t)
	b := browsertest.New(t)
	tab := b.NewTab(t)
	tab.Navigate(stacktest.Env(t, stack, devstack.EnvInternalURL))
	tab.WaitVisible(tidAt("conn-status", "data-state", "open"))

	chat := stacktest.UniqueName("injected")
	m := func(v int, content string) string {
		return fmt.Sprintf(`{id:"m1",chatId:%q,content:%q,version:%d,createdAt:"2026-01-01T00:00:00Z",updatedAt:"2026-01-01T00:00:0%dZ",isDeleted:false}`, chat, content, v, v)
	}
	content := tidAt("message", "data-message-id", "m1") + " " + tid("message-content")
	// Subscribed, the load not there yet: v2 arrives first, then the load
	// with v1 (read before v2 was cached).
	tab.Eval("subscribe", fmt.Sprintf(`chatApp.current = %q, chatApp.loaded = false, chatApp.pending = [], chatApp.msgs = new Map(), true`, chat))
	tab.Eval("update before load", fmt.Sprintf(`chatApp.handle({type:"update",chatId:%q,messages:[%s]}), true`, chat, m(2, "v2")))
	if n := tab.Count(tidAt("message", "data-message-id", "m1")); n != 0 {
		t.Fatalf("the update before the load is shown already (%d)", n)
	}
	tab.Eval("load", fmt.Sprintf(`chatApp.handle({type:"load",chatId:%q,messages:[%s]}), true`, chat, m(1, "v1")))
	tab.WaitText(content, "v2")
	tab.Eval("newer update", fmt.Sprintf(`chatApp.handle({type:"update",chatId:%q,messages:[%s]}), true`, chat, m(4, "v4")))
	tab.WaitText(content, "v4")
	tab.Eval("older update", fmt.Sprintf(`chatApp.handle({type:"update",chatId:%q,messages:[%s]}), true`, chat, m(3, "v3")))
	if got := tab.Text(content); got != "v4" {
		t.Fatalf("after an older update the page shows %q, want v4", got)
	}
	if stale := tab.Eval("stats", `chatApp.stats.stale`); stale != "1" {
		t.Fatalf("stale updates counted: %s, want 1 (the late v3)", stale)
	}
}

// TestBothRegionsServeTheChat makes a chat and a message in the stack's
// external service and reads them from both internal instances, region a's
// and region b's (whose loads read the Postgres standby ∪ the shared Redis).
func TestBothRegionsServeTheChat(t *testing.T) {
	t.Parallel()
	stack := stacktest.Connect(t)
	ext := stacktest.Env(t, stack, devstack.EnvExternalURL)
	chat := externalAPI(t, http.MethodPost, ext+"/chats", "")
	externalAPI(t, http.MethodPost, ext+"/chat/"+chat, `{"content":"seen in both regions"}`)
	for _, key := range []string{devstack.EnvInternalURL, devstack.EnvInternalBURL} {
		base := stacktest.Env(t, stack, key)
		stacktest.WaitFor(t, time.Minute, "the message on "+key, func() error {
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(base + "/chats/" + chat + "/messages")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var msgs []struct{ Content string }
			if err := json.NewDecoder(resp.Body).Decode(&msgs); err != nil {
				return fmt.Errorf("%s: %w", resp.Status, err)
			}
			if len(msgs) != 1 || msgs[0].Content != "seen in both regions" {
				return fmt.Errorf("messages %+v", msgs)
			}
			return nil
		})
	}
}
