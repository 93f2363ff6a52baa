package chaostest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/chatpoc/chat-poc/internal/converge"
)

// Recorder is an internal UI client that records what it is pushed, for the
// convergence checker's stream checks: it subscribes to every chat it hears
// of (newChat), and when its connection drops it reconnects and subscribes
// again, as the UI does.
type Recorder struct {
	name string
	url  string // the internal app's base URL

	mu     sync.Mutex
	chats  map[string]bool
	frames []converge.Received
	conns  int
	errs   []string // connection errors, for the log

	cancel context.CancelFunc
	done   chan struct{}
}

// StartRecorder starts a recorder, named name in findings, of the internal
// app at baseURL; Stop ends it.
func StartRecorder(name, baseURL string) *Recorder {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{name: name, url: baseURL, chats: map[string]bool{}, cancel: cancel, done: make(chan struct{})}
	go r.loop(ctx)
	return r
}

// SawChat reports whether the recorder was told of chat id (a newChat
// frame).
func (r *Recorder) SawChat(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.chats[id]
}

// Name is the recorder's name in findings.
func (r *Recorder) Name() string { return r.name }

// Stop ends the recorder and returns its stream.
func (r *Recorder) Stop() converge.Stream {
	r.cancel()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return converge.Stream{Name: r.name, Frames: r.frames}
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
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// session is one connection: dial, subscribe to every known chat, read
// until the connection or ctx ends.
func (r *Recorder) session(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ws := strings.Replace(r.url, "http", "ws", 1) + "/ws"
	conn, _, err := websocket.Dial(dctx, ws, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {r.url}}})
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(4 << 20)
	r.mu.Lock()
	r.conns++
	n := r.conns
	subscribed := map[string]bool{}
	var subs []string
	for c := range r.chats {
		subs = append(subs, c)
	}
	r.mu.Unlock()
	sub := func(chat string) error {
		if subscribed[chat] {
			return nil
		}
		subscribed[chat] = true
		b, _ := json.Marshal(map[string]string{"type": "sub", "id": chat})
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return conn.Write(wctx, websocket.MessageText, b)
	}
	for _, c := range subs {
		if err := sub(c); err != nil {
			return err
		}
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
			r.mu.Lock()
			var watch []string
			for c := range r.chats {
				if !subscribed[c] {
					watch = append(watch, c)
				}
			}
			r.mu.Unlock()
			for _, c := range watch {
				if err := sub(c); err != nil {
					return err
				}
			}
		case rd := <-reads:
			if rd.err != nil {
				return rd.err
			}
			at := time.Now()
			line, err := converge.EncodeReceived(at, n, rd.data)
			if err != nil {
				return err
			}
			var got converge.Received
			if err := json.Unmarshal(line, &got); err != nil {
				return errors.Join(errors.New("a frame the checker cannot read"), err)
			}
			r.mu.Lock()
			r.frames = append(r.frames, got)
			if got.Frame.Type == converge.FrameNewChat && got.Frame.ChatID != "" {
				r.chats[got.Frame.ChatID] = true
			}
			r.mu.Unlock()
			if got.Frame.Type == converge.FrameNewChat && got.Frame.ChatID != "" {
				if err := sub(got.Frame.ChatID); err != nil {
					return err
				}
			}
		}
	}
}
