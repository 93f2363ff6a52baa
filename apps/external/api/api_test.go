package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatpoc/chat-poc/apps/external/api"
	"github.com/chatpoc/chat-poc/apps/external/externaltest"
	"github.com/chatpoc/chat-poc/apps/external/store"
)

const adminToken = "test-admin-token"

func newServer(t *testing.T, cfg api.Config) *httptest.Server { return externaltest.NewServer(t, cfg) }

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string, body any, header ...string) response {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

func createChat(t *testing.T, base string) string {
	t.Helper()
	r := do(t, http.MethodPost, base+"/chats", nil)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /chats: %d %s", r.status, r.body)
	}
	return decode[store.Chat](t, r).ID
}

func createMessage(t *testing.T, base, chatID, content string) store.Message {
	t.Helper()
	r := do(t, http.MethodPost, base+"/chat/"+chatID, map[string]string{"content": content})
	if r.status != http.StatusCreated {
		t.Fatalf("POST /chat/%s: %d %s", chatID, r.status, r.body)
	}
	return decode[store.Message](t, r)
}

const unknownID = "6f1c2a44-0000-4000-8000-000000000000"

func TestRESTStatusCodes(t *testing.T) {
	srv := newServer(t, api.Config{})
	base := srv.URL
	if r := do(t, http.MethodGet, base+"/chats", nil); r.status != http.StatusOK || string(bytes.TrimSpace(r.body)) != "[]" {
		t.Fatalf("GET /chats on an empty service: %d %s, want 200 []", r.status, r.body)
	}
	chat := createChat(t, base)
	other := createChat(t, base)
	msg := createMessage(t, base, chat, "hello")
	if msg.ChatID != chat || msg.Content != "hello" || msg.ID == "" || msg.IsDeleted {
		t.Fatalf("created message %+v", msg)
	}
	doomed := createMessage(t, base, chat, "to be deleted")
	gone := createChat(t, base)
	if r := do(t, http.MethodDelete, base+"/chat/"+gone, nil); r.status != http.StatusNoContent {
		t.Fatalf("DELETE chat: %d %s", r.status, r.body)
	}

	big := `{"content":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}`
	long := map[string]string{"content": strings.Repeat("é", api.MaxContentRunes+1)}
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		want   int
	}{
		{"list chats", http.MethodGet, "/chats", nil, http.StatusOK},
		{"message to unknown chat", http.MethodPost, "/chat/" + unknownID, map[string]string{"content": "x"}, http.StatusNotFound},
		{"message to deleted chat", http.MethodPost, "/chat/" + gone, map[string]string{"content": "x"}, http.StatusNotFound},
		{"message with malformed chat id", http.MethodPost, "/chat/not-a-uuid", map[string]string{"content": "x"}, http.StatusBadRequest},
		{"message without content", http.MethodPost, "/chat/" + chat, map[string]string{}, http.StatusBadRequest},
		{"message with numeric content", http.MethodPost, "/chat/" + chat, `{"content": 5}`, http.StatusBadRequest},
		{"message with invalid JSON", http.MethodPost, "/chat/" + chat, `{"content":`, http.StatusBadRequest},
		{"message body too large", http.MethodPost, "/chat/" + chat, big, http.StatusRequestEntityTooLarge},
		{"message content too long", http.MethodPost, "/chat/" + chat, long, http.StatusBadRequest},
		{"message with a NUL character", http.MethodPost, "/chat/" + chat, `{"content":"a\u0000b"}`, http.StatusBadRequest},
		{"empty message is allowed", http.MethodPost, "/chat/" + chat, map[string]string{"content": ""}, http.StatusCreated},
		{"edit message", http.MethodPut, "/chat/" + chat + "/message/" + msg.ID, map[string]string{"content": "hello again"}, http.StatusOK},
		{"edit message of another chat", http.MethodPut, "/chat/" + other + "/message/" + msg.ID, map[string]string{"content": "x"}, http.StatusNotFound},
		{"edit unknown message", http.MethodPut, "/chat/" + chat + "/message/" + unknownID, map[string]string{"content": "x"}, http.StatusNotFound},
		{"edit with malformed message id", http.MethodPut, "/chat/" + chat + "/message/42", map[string]string{"content": "x"}, http.StatusBadRequest},
		{"edit with bad body", http.MethodPut, "/chat/" + chat + "/message/" + msg.ID, `[]`, http.StatusBadRequest},
		{"delete message", http.MethodDelete, "/chat/" + chat + "/message/" + doomed.ID, nil, http.StatusNoContent},
		{"delete message of another chat", http.MethodDelete, "/chat/" + other + "/message/" + msg.ID, nil, http.StatusNotFound},
		{"edit deleted message", http.MethodPut, "/chat/" + chat + "/message/" + doomed.ID, map[string]string{"content": "x"}, http.StatusNotFound},
		{"delete unknown chat", http.MethodDelete, "/chat/" + unknownID, nil, http.StatusNotFound},
		{"delete deleted chat", http.MethodDelete, "/chat/" + gone, nil, http.StatusNotFound},
		{"delete chat with malformed id", http.MethodDelete, "/chat/nope", nil, http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, base+tc.path, tc.body)
			if r.status != tc.want {
				t.Fatalf("%s %s: status %d, want %d; body %s", tc.method, tc.path, r.status, tc.want, r.body)
			}
			if r.status >= 400 {
				if e := decode[map[string]string](t, r); e["error"] == "" {
					t.Errorf("error body %s has no error message", r.body)
				}
			}
		})
	}

	edited := decode[store.Message](t, do(t, http.MethodPut, base+"/chat/"+chat+"/message/"+msg.ID, map[string]string{"content": "third"}))
	if edited.Content != "third" || edited.Version <= msg.Version || edited.UpdatedAt.Before(edited.CreatedAt) || !edited.CreatedAt.Equal(msg.CreatedAt) {
		t.Errorf("edit: got %+v after %+v", edited, msg)
	}
	ids := decode[[]string](t, do(t, http.MethodGet, base+"/chats", nil))
	if len(ids) != 2 || !contains(ids, chat) || !contains(ids, other) {
		t.Errorf("GET /chats = %v, want [%s %s] (deleted chat excluded)", ids, chat, other)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

type feedPage struct {
	Changes []store.Change `json:"changes"`
	Cursor  string         `json:"cursor"`
}

// feedUntil reads the feed from cursor in pages of limit until it has n
// changes, long-polling while it waits: other test packages share the
// Postgres cluster, and their transactions may hold the feed's horizon back
// for a moment. With n == 0 it reads one page.
func feedUntil(t *testing.T, base, cursor string, n, limit int) ([]store.Change, string) {
	t.Helper()
	var all []store.Change
	for deadline := time.Now().Add(time.Minute); ; {
		wait := "2s"
		if n == 0 {
			wait = "0s"
		}
		r := do(t, http.MethodGet, fmt.Sprintf("%s/api/changes?limit=%d&wait=%s&cursor=%s", base, limit, wait, cursor), nil)
		if r.status != http.StatusOK {
			t.Fatalf("feed: %d %s", r.status, r.body)
		}
		page := decode[feedPage](t, r)
		all, cursor = append(all, page.Changes...), page.Cursor
		if len(all) >= n {
			return all, cursor
		}
		if time.Now().After(deadline) {
			t.Fatalf("feed has %d changes after a minute, want %d: %+v", len(all), n, all)
		}
	}
}

func TestFeedServesChangesInOrderAndRejectsBadRequests(t *testing.T) {
	srv := newServer(t, api.Config{})
	base := srv.URL
	chat := createChat(t, base)
	m := createMessage(t, base, chat, "one")
	do(t, http.MethodPut, base+"/chat/"+chat+"/message/"+m.ID, map[string]string{"content": "two"})

	all, cursor := feedUntil(t, base, "", 3, 1)
	if extra, _ := feedUntil(t, base, cursor, 0, 1); len(extra) != 0 {
		t.Fatalf("changes beyond the three writes: %+v", extra)
	}
	kinds := make([]string, len(all))
	for i, c := range all {
		kinds[i] = string(c.Kind)
	}
	want := []string{string(store.KindChatCreated), string(store.KindMessageCreated), string(store.KindMessageUpdated)}
	if strings.Join(kinds, ",") != strings.Join(want, ",") {
		t.Fatalf("feed kinds %v, want %v", kinds, want)
	}
	if all[2].Message == nil || all[2].Message.Content != "two" || all[2].Version <= all[1].Version {
		t.Fatalf("update change %+v after %+v", all[2], all[1])
	}

	for _, tc := range []struct {
		query, code string
		status      int
	}{
		{"limit=0", "", http.StatusBadRequest},
		{"limit=1001", "", http.StatusBadRequest},
		{"limit=ten", "", http.StatusBadRequest},
		{"wait=31s", "", http.StatusBadRequest},
		{"wait=soon", "", http.StatusBadRequest},
		{"cursor=garbage", "bad_cursor", http.StatusBadRequest},
	} {
		r := do(t, http.MethodGet, base+"/api/changes?"+tc.query, nil)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d (%s)", tc.query, r.status, tc.status, r.body)
		}
		if tc.code != "" && decode[map[string]string](t, r)["code"] != tc.code {
			t.Errorf("%s: body %s, want code %s", tc.query, r.body, tc.code)
		}
	}
}

func TestFeedLongPollReturnsOnWrite(t *testing.T) {
	srv := newServer(t, api.Config{})
	base := srv.URL
	chat := createChat(t, base)
	_, cursor := feedUntil(t, base, "", 1, 100) // past the chat's creation

	type result struct {
		page    feedPage
		elapsed time.Duration
	}
	done := make(chan result, 1)
	began := time.Now()
	go func() {
		resp, err := http.Get(base + "/api/changes?wait=20s&cursor=" + cursor)
		if err != nil {
			done <- result{}
			return
		}
		defer resp.Body.Close()
		var p feedPage
		_ = json.NewDecoder(resp.Body).Decode(&p)
		done <- result{p, time.Since(began)}
	}()
	// The long-poll must not answer before there is something to say.
	select {
	case r := <-done:
		t.Fatalf("long-poll returned early with %+v", r.page)
	case <-time.After(300 * time.Millisecond):
	}
	written := time.Now()
	createMessage(t, base, chat, "wake up")
	r := <-done
	if len(r.page.Changes) != 1 || r.page.Changes[0].Message == nil || r.page.Changes[0].Message.Content != "wake up" {
		t.Fatalf("long-poll got %+v", r.page)
	}
	if lag := time.Since(written); lag > 10*time.Second {
		t.Fatalf("long-poll answered %s after the write; it should wake on the write, not at its timeout", lag)
	}
	t.Logf("long-poll answered %s after the write", time.Since(written).Round(time.Millisecond))
}

func TestFaultInjection(t *testing.T) {
	srv := newServer(t, api.Config{AdminToken: adminToken})
	base := srv.URL
	auth := []string{"Authorization", "Bearer " + adminToken}
	set := func(t *testing.T, faults string) {
		t.Helper()
		if r := do(t, http.MethodPut, base+"/admin/faults", faults, auth...); r.status != http.StatusOK {
			t.Fatalf("set faults %s: %d %s", faults, r.status, r.body)
		}
	}
	if r := do(t, http.MethodPut, base+"/admin/faults", `{"errorRate":1}`); r.status != http.StatusUnauthorized {
		t.Fatalf("faults without token: %d", r.status)
	}
	if r := do(t, http.MethodPut, base+"/admin/faults", `{"errorRate":2}`, auth...); r.status != http.StatusBadRequest {
		t.Fatalf("invalid faults: %d %s", r.status, r.body)
	}
	if r := do(t, http.MethodPut, base+"/admin/faults", `{"errrorRate":1}`, auth...); r.status != http.StatusBadRequest {
		t.Fatalf("misspelt fault: %d %s", r.status, r.body)
	}

	set(t, `{"errorRate":1}`)
	if r := do(t, http.MethodPost, base+"/chats", nil); r.status != http.StatusInternalServerError {
		t.Fatalf("errorRate 1: %d", r.status)
	}
	if r := do(t, http.MethodGet, base+"/healthz", nil); r.status != http.StatusOK {
		t.Fatalf("faults must not touch /healthz: %d", r.status)
	}
	set(t, `{"throttleRate":1,"retryAfter":"2s"}`)
	if r := do(t, http.MethodGet, base+"/chats", nil); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "2" {
		t.Fatalf("throttleRate 1: %d Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	set(t, `{"latency":"300ms"}`)
	began := time.Now()
	if r := do(t, http.MethodGet, base+"/chats", nil); r.status != http.StatusOK || time.Since(began) < 300*time.Millisecond {
		t.Fatalf("latency: %d after %s", r.status, time.Since(began))
	}
	set(t, `{"dropRate":1}`)
	resp, err := http.Post(base+"/chats", "application/json", nil)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("dropRate 1: got err %v, want a truncated body", err)
	}
	set(t, `{}`)
	chat := createChat(t, base)
	set(t, `{"feedPaused":true}`)
	if p := decode[feedPage](t, do(t, http.MethodGet, base+"/api/changes", nil)); len(p.Changes) != 0 {
		t.Fatalf("paused feed served %d changes", len(p.Changes))
	}
	set(t, `{}`)
	changes, _ := feedUntil(t, base, "", 2, 100)
	var created []string
	for _, c := range changes {
		if c.Kind == store.KindChatCreated {
			created = append(created, c.ChatID)
		}
	}
	// The dropped POST /chats was handled: its chat exists, as after a real
	// dropped response. So does the one created after.
	if len(created) != 2 || created[1] != chat {
		t.Fatalf("chats in the feed after faults cleared: %v (want the dropped request's chat and %s)", created, chat)
	}
}

func TestFaultAdminIsOffWithoutToken(t *testing.T) {
	srv := newServer(t, api.Config{})
	if r := do(t, http.MethodPut, srv.URL+"/admin/faults", `{"errorRate":1}`, "Authorization", "Bearer "); r.status != http.StatusNotFound {
		t.Fatalf("admin without a configured token: %d %s", r.status, r.body)
	}
}

func TestHealthReadinessMetricsAndUI(t *testing.T) {
	srv := newServer(t, api.Config{})
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ok", "/": externaltest.UIPage} {
		if r := do(t, http.MethodGet, srv.URL+path, nil); r.status != http.StatusOK || !strings.Contains(string(r.body), want) {
			t.Errorf("GET %s: %d %s", path, r.status, r.body)
		}
	}
	do(t, http.MethodGet, srv.URL+"/chats", nil)
	r := do(t, http.MethodGet, srv.URL+"/metrics", nil)
	if !strings.Contains(string(r.body), `external_http_requests_total{method="GET",route="/chats",status="200"} 1`) {
		t.Errorf("metrics lack the /chats request:\n%s", r.body)
	}
}
