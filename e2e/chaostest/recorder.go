package chaostest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatpoc/chat-poc/internal/converge"
)

// Timings of a recorder.
const (
	// recorderReady bounds StartRecorder's wait for the first connection
	// and listing: the internal app answers in milliseconds, or is down.
	recorderReady = 30 * time.Second
	// reconnectDelay is the pause before a lost connection is dialled
	// again; the UI's first backoff is 500 ms.
	reconnectDelay = 250 * time.Millisecond
	// requestTimeout bounds a dial, a listing and a frame write.
	requestTimeout = 5 * time.Second
	// loadRetryDelay and maxLoadTries: a sub answered with an error (the
	// load failed: Postgres failing over; the chat not stored yet) is sent
	// again after loadRetryDelay, at most maxLoadTries times per chat and
	// connection, as the UI retries a failed load.
	loadRetryDelay = 500 * time.Millisecond
	maxLoadTries   = 20
)

// Recorder is an internal UI client that records what it is pushed, for the
// convergence checker's stream checks. It subscribes to every chat created
// after it started: at each (re)connection it lists the chats (GET /chats)
// and subscribes to each, and it subscribes to every chat a newChat frame
// announces. The chats of the first listing are not the run's and are left
// alone (a connection may hold only wshub.MaxSubscriptions); a chat shown
// deleted (a delete frame, a load saying so) is unsubscribed. Its stream
// therefore owes every chat created after the first listing
// (converge.Stream.AllChatsFrom).
type Recorder struct {
	name string
	url  string // the internal app's base URL
	http *http.Client

	mu       sync.Mutex
	began    time.Time       // when the first listing was answered; zero before
	baseline map[string]bool // the chats of the first listing
	chats    map[string]bool // chats to watch: listed or announced since
	deleted  map[string]bool // chats shown deleted: never watched again
	told     map[string]bool // chats a newChat or load frame named
	frames   []converge.Received
	conns    int
	errs     []string // connection errors, for the log

	ready  chan struct{} // closed after the first listing
	cancel context.CancelFunc
	done   chan struct{}
}

// StartRecorder starts a recorder, named name in findings, of the internal
// app at baseURL, and waits until it is connected and has listed the chats
// (failing t after recorderReady). It is stopped when t ends, if not before.
func StartRecorder(t testing.TB, name, baseURL string) *Recorder {
	t.Helper()
	r, err := NewRecorder(name, baseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	return r
}

// NewRecorder starts a recorder as StartRecorder does, for a program that
// is not a test (the soak); the caller must Stop it.
func NewRecorder(name, baseURL string) (*Recorder, error) {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{name: name, url: baseURL, http: &http.Client{Timeout: requestTimeout},
		baseline: map[string]bool{}, chats: map[string]bool{}, deleted: map[string]bool{}, told: map[string]bool{},
		ready: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go r.loop(ctx)
	select {
	case <-r.ready:
		return r, nil
	case <-time.After(recorderReady):
		r.Stop()
		r.mu.Lock()
		defer r.mu.Unlock()
		return nil, fmt.Errorf("recorder %s: not connected and listed after %s: %v", name, recorderReady, r.errs)
	}
}

// SawChat reports whether the recorder was told of chat id: a newChat
// frame, or the load that answered its subscription after a listing.
func (r *Recorder) SawChat(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.told[id]
}

// Name is the recorder's name in findings.
func (r *Recorder) Name() string { return r.name }

// Stream returns the stream recorded so far.
func (r *Recorder) Stream() converge.Stream {
	r.mu.Lock()
	defer r.mu.Unlock()
	return converge.Stream{Name: r.name, Frames: slices.Clone(r.frames), AllChatsFrom: r.began}
}

// Stop ends the recorder and returns its stream. Stop twice is harmless.
func (r *Recorder) Stop() converge.Stream {
	r.cancel()
	<-r.done
	return r.Stream()
}

// Errors returns the connection errors so far, for a test's log.
func (r *Recorder) Errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

func (r *Recorder) loop(ctx context.Context) {
	defer close(r.done)
	for ctx.Err() == nil {
		err := r.session(ctx)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.errs = append(r.errs, err.Error())
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(reconnectDelay):
		}
	}
}

// list returns the IDs of the chats the internal app lists.
func (r *Recorder) list(ctx context.Context) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/chats", nil)
	if err != nil {
		return nil, fmt.Errorf("list chats: %w", err)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("list chats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("list chats: %s", resp.Status)
	}
	var chats []struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&chats); err != nil {
		return nil, fmt.Errorf("list chats: %w", err)
	}
	ids := make([]string, 0, len(chats))
	for _, c := range chats {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

// learn records the chats listed after a (re)connection: the first listing
// is the baseline, left alone; later ones add the chats to watch.
func (r *Recorder) learn(listed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.began.IsZero() {
		for _, id := range listed {
			r.baseline[id] = true
		}
		r.began = time.Now()
		close(r.ready)
		return
	}
	for _, id := range listed {
		if !r.baseline[id] && !r.deleted[id] {
			r.chats[id] = true
		}
	}
}

// session is one connection: dial, list the chats, subscribe to every chat
// to watch, read until the connection or ctx ends.
func (r *Recorder) session(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	ws := strings.Replace(r.url, "http", "ws", 1) + "/ws"
	conn, _, err := websocket.Dial(dctx, ws, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {r.url}}})
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(4 << 20)
	// Listed after the connection is up: a chat created later is announced
	// on it (newChat), one created before is listed.
	listed, err := r.list(dctx)
	if err != nil {
		return err
	}
	r.learn(listed)
	r.mu.Lock()
	r.conns++
	n := r.conns
	r.mu.Unlock()

	subscribed := map[string]bool{}
	tries := map[string]int{}         // subs answered with an error, per chat
	retryAt := map[string]time.Time{} // when to send such a sub again
	more := map[string]string{}       // per chat, the cursor of the next older page to ask for
	moreAt := map[string]time.Time{}  // when to ask again for a page refused (rate-limited)
	write := func(frame map[string]string) error {
		b, _ := json.Marshal(frame)
		wctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		return conn.Write(wctx, websocket.MessageText, b)
	}
	send := func(typ, chat string) error { return write(map[string]string{"type": typ, "id": chat}) }
	sendMore := func(chat string) error {
		return write(map[string]string{"type": "more", "chatId": chat, "before": more[chat]})
	}
	// watch subscribes to the chats to watch not yet subscribed, and again
	// to those whose load failed, once their retry is due.
	watch := func() error {
		r.mu.Lock()
		var subs []string
		for c := range r.chats {
			if !subscribed[c] && !r.deleted[c] {
				subs = append(subs, c)
			}
		}
		r.mu.Unlock()
		now := time.Now()
		for c, at := range retryAt {
			if now.After(at) {
				delete(retryAt, c)
				subs = append(subs, c)
			}
		}
		for c, at := range moreAt {
			if now.After(at) {
				delete(moreAt, c)
				if err := sendMore(c); err != nil {
					return err
				}
			}
		}
		for _, c := range subs {
			subscribed[c] = true
			if err := send("sub", c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := watch(); err != nil {
		return err
	}
	// Reads run in their own goroutine: a Read whose context ends closes
	// the connection, and the loop below must also notice new chats to
	// watch while nothing arrives.
	type read struct {
		data []byte
		err  error
	}
	reads := make(chan read)
	sctx, stopReads := context.WithCancel(ctx)
	defer stopReads()
	go func() {
		for {
			_, data, err := conn.Read(sctx)
			select {
			case reads <- read{data, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if err := watch(); err != nil {
				return err
			}
		case rd := <-reads:
			if rd.err != nil {
				return rd.err
			}
			line, err := converge.EncodeReceived(time.Now(), n, rd.data)
			if err != nil {
				return err
			}
			var got converge.Received
			if err := json.Unmarshal(line, &got); err != nil {
				return errors.Join(errors.New("a frame the checker cannot read"), err)
			}
			f := got.Frame
			gone := f.Type == converge.FrameDelete || f.Type == converge.FrameLoad && f.Deleted
			r.mu.Lock()
			r.frames = append(r.frames, got)
			switch {
			case f.ChatID == "":
			case gone:
				r.deleted[f.ChatID] = true
				delete(r.chats, f.ChatID)
			case f.Type == converge.FrameNewChat:
				r.told[f.ChatID] = true
				if !r.baseline[f.ChatID] && !r.deleted[f.ChatID] {
					r.chats[f.ChatID] = true
				}
			case f.Type == converge.FrameLoad:
				r.told[f.ChatID] = true
			}
			r.mu.Unlock()
			// A load is the chat's newest page: older pages are asked for
			// until there are none, since the check owes a loaded chat's
			// every message to the stream.
			switch {
			case (f.Type == converge.FrameLoad || f.Type == converge.FramePage) && f.HasMore && !gone:
				more[f.ChatID] = f.Before
				if err := sendMore(f.ChatID); err != nil {
					return err
				}
			case f.Type == converge.FramePage:
				delete(more, f.ChatID)
			}
			switch {
			case gone && subscribed[f.ChatID]:
				// A deleted chat changes no more; its slot is freed.
				delete(subscribed, f.ChatID)
				delete(retryAt, f.ChatID)
				delete(more, f.ChatID)
				delete(moreAt, f.ChatID)
				if err := send("unsub", f.ChatID); err != nil {
					return err
				}
			case f.Type == converge.FrameNewChat:
				if err := watch(); err != nil {
					return err
				}
			case f.Type == converge.FrameError && f.Request == "more" && more[f.ChatID] != "" && tries[f.ChatID] < maxLoadTries:
				tries[f.ChatID]++
				moreAt[f.ChatID] = time.Now().Add(loadRetryDelay)
			case f.Type == converge.FrameError && f.Request != "more" && subscribed[f.ChatID] && tries[f.ChatID] < maxLoadTries:
				tries[f.ChatID]++
				retryAt[f.ChatID] = time.Now().Add(loadRetryDelay)
			}
		}
	}
}
