package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatpoc/chat-poc/apps/external/api"
	"github.com/chatpoc/chat-poc/apps/external/store"
)

// frameTimeout bounds waiting for one expected frame.
const frameTimeout = 10 * time.Second

type frame struct {
	Type     string          `json:"type"`
	ChatID   string          `json:"chatId"`
	Messages []store.Message `json:"messages"`
	Error    string          `json:"error"`
}

type wsConn struct {
	t    *testing.T
	conn *websocket.Conn
}

func dial(t *testing.T, base string) *wsConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &wsConn{t: t, conn: conn}
}

func (c *wsConn) send(v string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(v)); err != nil {
		c.t.Fatalf("write %s: %v", v, err)
	}
}

func (c *wsConn) next() frame {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	typ, data, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	if typ != websocket.MessageText {
		c.t.Fatalf("got a binary frame")
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		c.t.Fatalf("decode %s: %v", data, err)
	}
	return f
}

// expect reads the next frame and checks its type and chat.
func (c *wsConn) expect(typ, chatID string) frame {
	c.t.Helper()
	f := c.next()
	if f.Type != typ || f.ChatID != chatID {
		c.t.Fatalf("got %s for chat %s (%+v), want %s for chat %s", f.Type, f.ChatID, f, typ, chatID)
	}
	return f
}

// closeStatus reads until the server closes the connection and returns its code.
func (c *wsConn) closeStatus() websocket.StatusCode {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
	defer cancel()
	for {
		if _, _, err := c.conn.Read(ctx); err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

func TestWebSocketSubscriptions(t *testing.T) {
	srv := newServer(t, api.Config{})
	base := srv.URL
	chat := createChat(t, base)
	first := createMessage(t, base, chat, "before subscribing")

	one := dial(t, base) // subscribes to one chat
	all := dial(t, base) // subscribes to all chats
	idle := dial(t, base)
	one.send(`{"type":"sub","id":"` + chat + `"}`)
	load := one.expect("load", chat)
	if len(load.Messages) != 1 || load.Messages[0].ID != first.ID {
		t.Fatalf("load %+v, want the one message", load)
	}
	all.send(`{"type":"sub"}`)

	second := createMessage(t, base, chat, "after subscribing")
	for _, c := range []*wsConn{one, all} {
		up := c.expect("update", chat)
		if len(up.Messages) != 1 || up.Messages[0].ID != second.ID || up.Messages[0].Content != "after subscribing" {
			t.Fatalf("update %+v", up)
		}
	}

	newChat := createChat(t, base)
	for _, c := range []*wsConn{one, all, idle} {
		c.expect("newChat", newChat)
	}
	// A chat created later reaches the all-chats subscriber too.
	createMessage(t, base, newChat, "in the new chat")
	all.expect("update", newChat)

	// After unsub, the chat's updates stop; a later chat's newChat is the next frame.
	// The unsub frame and the message's HTTP request race (a clean-clone CI run
	// saw the message pushed before the unsub was read); the server handles a
	// connection's frames in order, so the answer to a frame sent after the
	// unsub proves it applied.
	one.send(`{"type":"unsub","id":"` + chat + `"}`)
	one.send(`{"type":"sub","id":"not-a-uuid"}`)
	one.expect("error", "not-a-uuid")
	unsubscribed := createMessage(t, base, chat, "nobody listens")
	all.expect("update", chat)
	marker := createChat(t, base)
	if f := one.next(); f.Type != "newChat" || f.ChatID != marker {
		t.Fatalf("after unsub got %+v, want only the newChat of %s (message %s must not arrive)", f, marker, unsubscribed.ID)
	}
	all.expect("newChat", marker)

	// Deleting a chat tells every client.
	if r := do(t, http.MethodDelete, base+"/chat/"+chat, nil); r.status != http.StatusNoContent {
		t.Fatalf("delete chat: %d", r.status)
	}
	all.expect("delete", chat)
	one.expect("delete", chat)
	idle.expect("newChat", marker)
	idle.expect("delete", chat)

	// Subscribing to a chat that does not exist is answered, not fatal.
	one.send(`{"type":"sub","id":"` + unknownID + `"}`)
	if f := one.expect("error", unknownID); f.Error == "" {
		t.Fatalf("error frame without message: %+v", f)
	}
}

func TestWebSocketBadFramesCloseOnlyThatClient(t *testing.T) {
	srv := newServer(t, api.Config{})
	base := srv.URL
	tests := []struct {
		name  string
		write func(*wsConn)
		want  websocket.StatusCode
	}{
		{"binary frame", func(c *wsConn) {
			if err := c.conn.Write(context.Background(), websocket.MessageBinary, []byte{1, 2, 3}); err != nil {
				t.Fatal(err)
			}
		}, websocket.StatusUnsupportedData},
		{"invalid JSON", func(c *wsConn) { c.send(`{"type":`) }, websocket.StatusInvalidFramePayloadData},
		{"unknown type", func(c *wsConn) { c.send(`{"type":"shout"}`) }, websocket.StatusPolicyViolation},
		{"frame too large", func(c *wsConn) { c.send(`{"type":"sub","id":"` + strings.Repeat("x", 8<<10) + `"}`) }, websocket.StatusMessageTooBig},
	}
	bystander := dial(t, base)
	bystander.send(`{"type":"sub"}`)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := dial(t, base)
			tc.write(bad)
			if got := bad.closeStatus(); got != tc.want {
				t.Fatalf("close status %v, want %v", got, tc.want)
			}
			chat := createChat(t, base)
			bystander.expect("newChat", chat)
		})
	}
}

func TestWebSocketRejectsForeignOrigin(t *testing.T) {
	srv := newServer(t, api.Config{AllowedOrigins: []string{"localhost:*"}})
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	for origin, want := range map[string]int{
		"http://evil.example":   http.StatusForbidden,
		"http://localhost:1234": http.StatusSwitchingProtocols,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), frameTimeout)
		conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
		cancel()
		if conn != nil {
			conn.CloseNow()
		}
		if resp == nil || resp.StatusCode != want {
			t.Errorf("Origin %s: response %v (err %v), want %d", origin, resp, err, want)
		}
	}
}
