package main

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatpoc/chat-poc/apps/internal/cache"
	"github.com/chatpoc/chat-poc/deploy/browsertest"
)

// openChat opens the app's UI in a new tab of b and shows chat.
func (e *appEnv) openChat(b *browsertest.Browser, chat string) *browsertest.Tab {
	e.t.Helper()
	tab := b.NewTab(e.t)
	tab.Navigate(e.url)
	tab.WaitVisible(tidAt("conn-status", "data-state", "open"))
	tab.WaitVisible(tidAt("chat-list", "data-loaded", "true"))
	tab.Click(tidAt("chat-item", "data-chat-id", chat))
	return tab
}

// messageList is the selector of the message list showing chat, loaded.
func messageList(chat string) string {
	return tidAt("message-list", "data-chat-id", chat) + `[data-loaded="true"]`
}

// TestUIPagesOlderMessagesOnScroll opens a chat of 300 stored messages in
// the app's UI (in this process: the UI of this tree) with pages of 50: it
// shows the newest 50, scrolled to the bottom; scrolled to the top, it asks
// for the older page and the message that was at the top stays where it
// was on the screen; scrolled up again and again it shows all 300, in order,
// once each, and no more are said to exist.
func TestUIPagesOlderMessagesOnScroll(t *testing.T) {
	t.Parallel()
	e := newAppEnv(t, func(c *Config) { c.PageSize = 50 })
	chat := e.prefix + "-c"
	msgs := e.insertMessages(chat, 300)

	tab := e.openChat(browsertest.New(t), chat)
	list := messageList(chat)
	tab.WaitVisible(list)
	tab.WaitCount(tid("message"), 50)
	if got := tab.Attr(list, "data-has-more"); got != "true" {
		t.Fatalf("data-has-more = %q after the load of a chat of 300, want true", got)
	}
	tab.WaitJS("the list scrolled to the newest message", `(() => {
		const ul = document.querySelector('[data-testid="message-list"]');
		return ul.scrollHeight > ul.clientHeight && ul.scrollTop + ul.clientHeight >= ul.scrollHeight - 5;
	})()`)
	for shown := 50; shown < 300; shown += 50 {
		// Scrolled to the top: the first message's place on screen is kept
		// when the older page comes in above it.
		top := tab.Eval("scroll to the top", `(() => {
			const ul = document.querySelector('[data-testid="message-list"]');
			ul.scrollTop = 0;
			const li = ul.querySelector('[data-testid="message"]');
			window.anchor = { id: li.dataset.messageId, y: li.getBoundingClientRect().top };
			return li.dataset.messageId;
		})()`)
		tab.WaitCount(tid("message"), shown+50)
		moved := tab.Eval("the first message's move", `(() => {
			const li = document.querySelector('[data-message-id="' + window.anchor.id + '"]');
			return String(Math.round(li.getBoundingClientRect().top - window.anchor.y));
		})()`)
		if moved != "0" {
			t.Errorf("after the page before %s, it moved %s px on screen; want 0 (the scroll position kept)", top, moved)
		}
	}
	if got := tab.Attr(list, "data-has-more"); got != "false" {
		t.Errorf("data-has-more = %q with every message shown, want false", got)
	}
	var want []string
	for _, m := range msgs {
		want = append(want, m.ID)
	}
	got := tab.Eval("the messages shown", `[...document.querySelectorAll('[data-testid="message"]')].map((li) => li.dataset.messageId).join(",")`)
	if got != strings.Join(want, ",") {
		t.Errorf("the messages shown are not the chat's 300 in order, once each:\n got %s\nwant %s", got, strings.Join(want, ","))
	}
}

// TestUIRetriesAFailedLoad shows a chat while the app cannot reach Postgres
// (a TCP proxy cut, as in a failover): the load fails, and the page shows
// that it is retrying — not the chat as loaded and empty; once Postgres is
// back, the retried load shows the messages.
func TestUIRetriesAFailedLoad(t *testing.T) {
	t.Parallel()
	e := configureEnv(t, nil)
	u, err := url.Parse(e.cfg.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	pg := newProxy(t, u.Host)
	u.Host = pg.addr
	e.cfg.PGDSN = u.String()
	e.startInProcess()
	chat := e.prefix + "-c"
	e.insertMessages(chat, 3)

	b := browsertest.New(t)
	tab := b.NewTab(t)
	tab.Navigate(e.url)
	tab.WaitVisible(tidAt("chat-list", "data-loaded", "true"))
	pg.down()
	tab.Click(tidAt("chat-item", "data-chat-id", chat))
	tab.WaitVisible(tidAt("load-status", "data-state", "retrying"))
	if got := tab.Attr(tid("message-list"), "data-loaded"); got != "false" {
		t.Fatalf("while its load fails the chat is shown with data-loaded=%s, want false", got)
	}
	if n := tab.Count(tid("message")); n != 0 {
		t.Fatalf("%d messages shown while the load fails", n)
	}
	pg.up()
	tab.WaitVisible(messageList(chat))
	tab.WaitCount(tid("message"), 3)
	if retries, _ := strconv.Atoi(tab.Eval("retries", `String(chatApp.stats.retries)`)); retries < 1 {
		t.Errorf("the load was shown without a retry (%d)", retries)
	}
}

// TestUIKeepsVersionsAcrossChatSwitches shows a message's v5 (an update),
// then makes the app's next load of it older: the cache loses v5 (as under
// eviction) and Postgres has v1. Switching to another chat and back — an
// unsub and a new sub, whose load carries v1 — the page still shows v5.
func TestUIKeepsVersionsAcrossChatSwitches(t *testing.T) {
	t.Parallel()
	e := newAppEnv(t, nil)
	e.waitConsuming()
	chat, other := e.prefix+"-c", e.prefix+"-d"
	m := e.insertMessages(chat, 1)[0]
	e.insertMessages(other, 1)

	tab := e.openChat(browsertest.New(t), chat)
	tab.WaitVisible(messageList(chat))
	shown := tidAt("message", "data-message-id", m.ID)
	tab.WaitVisible(shown + `[data-version="1"]`)
	v5 := m
	v5.Version, v5.Content, v5.UpdatedAt = 5, "v5", m.UpdatedAt.Add(time.Second)
	e.produceMessages(v5)
	tab.WaitVisible(shown + `[data-version="5"]`)

	rdb := redis.NewClient(&redis.Options{Addr: e.cfg.RedisAddr})
	t.Cleanup(func() { rdb.Close() })
	if _, err := cache.New(rdb, e.cfg.CacheTTL, e.cfg.Group).DeleteMessage(context.Background(), chat, m.ID, 5); err != nil {
		t.Fatal(err)
	}
	var p restPage
	e.get("/api/chats/"+chat+"/messages", &p)
	if len(p.Messages) != 1 || p.Messages[0].Version != 1 {
		t.Fatalf("the app's load is %+v; the test needs it at v1", p.Messages)
	}

	tab.Click(tidAt("chat-item", "data-chat-id", other))
	tab.WaitVisible(messageList(other))
	tab.Click(tidAt("chat-item", "data-chat-id", chat))
	tab.WaitVisible(messageList(chat))
	if got := tab.Attr(shown, "data-version"); got != "5" {
		t.Fatalf("back on the chat, its message is shown at v%s, want v5 (never older than shown before)", got)
	}
}
