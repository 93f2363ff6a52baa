package main

import (
	"context"
	"fmt"
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

// TestUIInTwoTabs drives the real external binary of the shared stack in a
// real Chromium: one tab creates a chat, sends, edits and deletes a message
// and the other sees each change live; then the service is killed and
// restarted by the launcher, a message is written while the tabs are
// disconnected, and both tabs reconnect and show it; finally the chat is
// deleted from the second tab and disappears from the first.
func TestUIInTwoTabs(t *testing.T) {
	stack := stacktest.Connect(t)
	base := strings.Replace(stacktest.Env(t, stack, devstack.EnvExternalURL), "127.0.0.1", "localhost", 1)

	b := browsertest.New(t)
	a, c := b.NewTab(t), b.NewTab(t)
	open := tidAt("conn-status", "data-state", "open")
	for _, tab := range []*browsertest.Tab{a, c} {
		tab.Navigate(base)
		tab.WaitVisible(open)
		tab.WaitVisible(tidAt("chat-list", "data-loaded", "true"))
	}

	before := a.Count(tid("chat-item"))
	a.Click(tid("new-chat"))
	a.WaitJS("the new chat in the list", fmt.Sprintf(`document.querySelectorAll('[data-testid="chat-item"]').length === %d`, before+1))
	id := a.Attr(tidAt("message-list", "data-loaded", "true"), "data-chat-id")
	chat := tidAt("chat-item", "data-chat-id", id)
	c.WaitVisible(chat) // newChat arrived live
	c.Click(chat)
	c.WaitVisible(tidAt("message-list", "data-chat-id", id) + `[data-loaded="true"]`)

	a.Type(tid("compose"), "hello from tab a\n")
	c.WaitText(tid("message-content"), "hello from tab a")
	mid := c.Attr(tid("message"), "data-message-id")
	msg := tidAt("message", "data-message-id", mid)

	a.Click(msg + " " + tid("edit"))
	a.SetValue(tid("edit-input"), "hello, edited")
	a.Click(tid("save-edit"))
	c.WaitText(msg+" "+tid("message-content"), "hello, edited")
	c.WaitVisible(msg + `[data-edited="true"] ` + tid("edited"))

	c.Click(msg + " " + tid("delete-message"))
	a.WaitVisible(msg + `[data-deleted="true"] ` + tid("deleted"))

	// Kill the service; both tabs notice, and reconnect once the launcher
	// has started it again. A message written meanwhile must show up.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := stack.Kill(ctx, devstack.External); err != nil {
		t.Fatal(err)
	}
	a.WaitVisible(tidAt("conn-status", "data-state", "closed"))
	c.WaitVisible(tidAt("conn-status", "data-state", "closed"))
	if err := stack.StartComponent(ctx, devstack.External); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/chat/"+id, "application/json", strings.NewReader(`{"content":"while you were away"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("post while tabs reconnect: %s", resp.Status)
	}
	for _, tab := range []*browsertest.Tab{a, c} {
		tab.AllowErrors("WebSocket connection", "ERR_CONNECTION_REFUSED")
		tab.WaitVisible(open)
		tab.WaitText(tid("message-list"), "while you were away")
	}

	c.Click(chat + " " + tid("delete-chat"))
	a.WaitGone(chat)
	a.WaitText(tid("placeholder"), "deleted")
}
