package wshub

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newHub() *Hub { return New(NewMetrics(prometheus.NewRegistry(), "test"), Limits{}) }

// queued drains and returns the frames queued for c.
func queued(c *Client) []string {
	var out []string
	for {
		select {
		case f := <-c.send:
			out = append(out, string(f))
		default:
			return out
		}
	}
}

// sendLoad sends c a load of chatID holding versions, its frame listing
// them in order, e.g. "load m1@5 m2@3".
func sendLoad(h *Hub, c *Client, chatID string, versions map[string]int64) {
	h.SendLoad(c, chatID, versions, func(omit map[string]bool) []byte {
		items := slices.Sorted(maps.Keys(versions))
		frame := "load"
		for _, item := range items {
			if !omit[item] {
				frame += fmt.Sprintf(" %s@%d", item, versions[item])
			}
		}
		return []byte(frame)
	})
}

// TestLoadLeavesOutWhatAnUpdateOvertook: an update queued between the
// subscription and the load, newer than the load's read of that message,
// is not contradicted by the load (the message is left out of it); other
// messages are in the load, and it still sets the floor.
func TestLoadLeavesOutWhatAnUpdateOvertook(t *testing.T) {
	h := newHub()
	a := h.register()
	if err := h.Subscribe(a, "chat1"); err != nil {
		t.Fatal(err)
	}
	h.PublishVersion([]byte("m1@7"), "chat1", "m1", 7)
	h.PublishVersion([]byte("m2@2"), "chat1", "m2", 2)
	sendLoad(h, a, "chat1", map[string]int64{"m1": 5, "m2": 3, "m3": 1})
	for _, v := range []int64{6, 7, 8} {
		h.PublishVersion(fmt.Appendf(nil, "m1@%d", v), "chat1", "m1", v)
	}
	h.PublishVersion([]byte("m2@3"), "chat1", "m2", 3)
	h.PublishVersion([]byte("m3@2"), "chat1", "m3", 2)
	if got, want := fmt.Sprint(queued(a)), "[m1@7 m2@2 load m2@3 m3@1 m1@8 m3@2]"; got != want {
		t.Errorf("client a was queued %s, want %s", got, want)
	}

	// An update that comes while the load is being encoded: encoded again.
	b := h.register()
	if err := h.Subscribe(b, "chat2"); err != nil {
		t.Fatal(err)
	}
	var encodes int
	h.SendLoad(b, "chat2", map[string]int64{"m1": 5, "m2": 1}, func(omit map[string]bool) []byte {
		encodes++
		if encodes == 1 {
			h.PublishVersion([]byte("m1@6"), "chat2", "m1", 6)
		}
		if omit["m1"] {
			return []byte("load m2@1")
		}
		return []byte("load m1@5 m2@1")
	})
	if got, want := fmt.Sprint(queued(b)), "[m1@6 load m2@1]"; got != want || encodes != 2 {
		t.Errorf("client b was queued %s after %d encodes, want %s after 2", got, encodes, want)
	}
}

// TestPublishVersionNeverSendsOlderAfterNewer: a client is sent each
// item's versions only in increasing order, counting its load; another
// chat's and another client's versions are apart; an unsubscribe forgets.
func TestPublishVersionNeverSendsOlderAfterNewer(t *testing.T) {
	h := newHub()
	a, b := h.register(), h.register()
	for _, c := range []*Client{a, b} {
		if err := h.Subscribe(c, "chat1"); err != nil {
			t.Fatal(err)
		}
	}
	sendLoad(h, a, "chat1", map[string]int64{"m1": 5})
	for _, v := range []int64{3, 5, 6, 4, 6, 7} {
		h.PublishVersion(fmt.Appendf(nil, "m1@%d", v), "chat1", "m1", v)
	}
	h.PublishVersion([]byte("m2@1"), "chat1", "m2", 1)
	h.PublishVersion([]byte("other chat m1@1"), "chat2", "m1", 1)

	if got, want := fmt.Sprint(queued(a)), "[load m1@5 m1@6 m1@7 m2@1]"; got != want {
		t.Errorf("client a (loaded v5) was queued %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(queued(b)), "[m1@3 m1@5 m1@6 m1@7 m2@1]"; got != want {
		t.Errorf("client b (no load) was queued %s, want %s", got, want)
	}

	h.Unsubscribe(a, "chat1")
	h.PublishVersion([]byte("m1@8"), "chat1", "m1", 8)
	if got := queued(a); len(got) != 0 {
		t.Errorf("unsubscribed client a was queued %v", got)
	}
	if err := h.Subscribe(a, "chat1"); err != nil {
		t.Fatal(err)
	}
	h.PublishVersion([]byte("m1@2"), "chat1", "m1", 2)
	if got, want := fmt.Sprint(queued(a)), "[m1@2]"; got != want {
		t.Errorf("re-subscribed client a was queued %s, want %s (a new subscription starts afresh; its load sets the floor)", got, want)
	}
}

// TestSubscriptionsAreBounded: the MaxSubscriptions+1st chat is refused;
// subscribing again to one already held is not; an unsubscribe frees one.
func TestSubscriptionsAreBounded(t *testing.T) {
	h := newHub()
	c := h.register()
	for i := range MaxSubscriptions {
		if err := h.Subscribe(c, fmt.Sprint("chat", i)); err != nil {
			t.Fatalf("subscription %d: %v", i+1, err)
		}
	}
	if err := h.Subscribe(c, "one more"); !errors.Is(err, ErrTooManySubscriptions) {
		t.Fatalf("subscription %d: %v, want ErrTooManySubscriptions", MaxSubscriptions+1, err)
	}
	if err := h.Subscribe(c, "chat0"); err != nil {
		t.Fatalf("subscribing again to a held chat: %v", err)
	}
	h.Unsubscribe(c, "chat0")
	if err := h.Subscribe(c, "one more"); err != nil {
		t.Fatalf("after an unsubscribe: %v", err)
	}
}

// slowClosed reports whether c was marked slow (to be closed).
func slowClosed(c *Client) bool {
	select {
	case <-c.slow:
		return true
	default:
		return false
	}
}

// TestQueueIsBoundedByBytes: frames that together pass SendBufferBytes mark
// the client slow (counted) although far fewer than SendBuffer frames are
// queued; a single frame larger than the bound is queued to an empty queue;
// a drained queue takes frames again.
func TestQueueIsBoundedByBytes(t *testing.T) {
	h := newHub()
	a := h.register()
	quarter := make([]byte, SendBufferBytes/4)
	for range 4 {
		h.SendTo(a, quarter)
	}
	if slowClosed(a) {
		t.Fatal("a client with exactly SendBufferBytes queued was marked slow")
	}
	h.SendTo(a, []byte("one byte more"))
	if !slowClosed(a) || testutil.ToFloat64(h.metrics.slowDropped) != 1 {
		t.Fatalf("a client past SendBufferBytes: slow %v, counted %v; want marked and counted once", slowClosed(a), testutil.ToFloat64(h.metrics.slowDropped))
	}

	b := h.register()
	h.SendTo(b, make([]byte, 2*SendBufferBytes))
	if slowClosed(b) || len(queued(b)) != 1 {
		t.Fatal("a frame larger than SendBufferBytes was refused to an empty queue")
	}
}

// TestAllowIsATokenBucketPerClient: Burst requests pass at once, the next is
// refused and counted; another client has its own bucket.
func TestAllowIsATokenBucketPerClient(t *testing.T) {
	h := New(NewMetrics(prometheus.NewRegistry(), "test"), Limits{Rate: 0.001, Burst: 3})
	a, b := h.register(), h.register()
	for i := range 3 {
		if !h.Allow(a) {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	if h.Allow(a) {
		t.Fatal("a 4th request at once allowed")
	}
	if !h.Allow(b) {
		t.Fatal("another client's first request refused")
	}
	if got := testutil.ToFloat64(h.metrics.rateLimited); got != 1 {
		t.Fatalf("rate-limited requests counted: %v, want 1", got)
	}
}

// TestAcceptCapsConnections: with MaxClients 2, a third handshake gets 503
// with Retry-After (counted) while two are open; once one ends, a new one
// is accepted.
func TestAcceptCapsConnections(t *testing.T) {
	h := New(NewMetrics(prometheus.NewRegistry(), "test"), Limits{MaxClients: 2})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.Accept(w, r, nil, func(context.Context, *Client, Frame) (websocket.StatusCode, string) { return 0, "" })
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	dial := func() (*websocket.Conn, *http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return websocket.Dial(ctx, url, nil)
	}
	var open []*websocket.Conn
	for range 2 {
		c, _, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		open = append(open, c)
	}
	_, resp, err := dial()
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third connection: %v, %+v; want 503 with Retry-After", err, resp)
	}
	if got := testutil.ToFloat64(h.metrics.refused); got != 1 {
		t.Fatalf("refused connections counted: %v, want 1", got)
	}
	open[0].Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(10 * time.Second)
	for h.conns.Load() > 1 {
		if time.Now().After(deadline) {
			t.Fatal("the closed connection is still counted after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, _, err := dial()
	if err != nil {
		t.Fatalf("a connection after one ended: %v", err)
	}
	c.CloseNow()
}

// TestNoAnnouncementAfterALoadShowedTheChatDeleted: a client whose load
// showed a chat deleted (the database ahead of a consumer that restarted)
// is not told of the chat's creation when the consumer reaches it, even
// after unsubscribing; other clients are.
func TestNoAnnouncementAfterALoadShowedTheChatDeleted(t *testing.T) {
	h := newHub()
	a, b := h.register(), h.register()
	if err := h.Subscribe(a, "chat1"); err != nil {
		t.Fatal(err)
	}
	h.Ended(a, "chat1")
	sendLoad(h, a, "chat1", map[string]int64{"m1": 4})
	h.Unsubscribe(a, "chat1")
	h.PublishNew([]byte("newChat chat1"), "chat1")
	h.PublishNew([]byte("newChat chat2"), "chat2")
	if got, want := queued(a), []string{"load m1@4", "newChat chat2"}; !slices.Equal(got, want) {
		t.Errorf("client a was queued %q, want %q", got, want)
	}
	if got, want := queued(b), []string{"newChat chat1", "newChat chat2"}; !slices.Equal(got, want) {
		t.Errorf("client b was queued %q, want %q", got, want)
	}
}
