// Package loadgen drives the external service's REST API with a realistic mix
// of writes — many chats, message creates, edits and deletes, chat deletes,
// bursts — and records every acknowledged write with the server's timestamp
// and version. That log is the ground truth end-to-end checks and benchmarks
// compare the internal system against.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Op is the kind of one write.
type Op string

// The writes the generator makes; the names match the change feed's kinds.
const (
	OpChatCreated    Op = "chat.created"
	OpChatDeleted    Op = "chat.deleted"
	OpMessageCreated Op = "message.created"
	OpMessageUpdated Op = "message.updated"
	OpMessageDeleted Op = "message.deleted"
)

// Record is one acknowledged write: a line of the log.
type Record struct {
	Op        Op        `json:"op"`
	ChatID    string    `json:"chatId"`
	MessageID string    `json:"messageId,omitempty"`
	Content   string    `json:"content,omitempty"`
	Version   int64     `json:"version,omitempty"`  // the server's version of the message or chat, when the response carries it
	ServerAt  time.Time `json:"serverAt,omitempty"` // the server's timestamp of the change (updatedAt / createdAt), when the response carries it
	SentAt    time.Time `json:"sentAt"`             // when the request was sent
	AckedAt   time.Time `json:"ackedAt"`            // when the acknowledgement arrived
}

// Config says how hard and how long to drive the API.
type Config struct {
	BaseURL     string        // e.g. http://127.0.0.1:30001
	Rate        float64       // writes per second, steady (default 50)
	Duration    time.Duration // stop after this long (default 30s; 0 with MaxOps = until MaxOps)
	MaxOps      int           // stop after this many attempted writes (0 = no limit)
	Chats       int           // chats kept alive at once (default 20)
	Concurrency int           // requests in flight at most (default 8)
	BurstEvery  time.Duration // every this long, a burst of BurstSize writes at once (0 = none)
	BurstSize   int
	Seed        uint64 // random seed of the mix (0 = random)
}

func (c *Config) defaults() error {
	if c.BaseURL == "" {
		return errors.New("base URL is required")
	}
	if c.Rate == 0 {
		c.Rate = 50
	}
	if c.Duration == 0 && c.MaxOps == 0 {
		c.Duration = 30 * time.Second
	}
	if c.Chats == 0 {
		c.Chats = 20
	}
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	switch {
	case c.Rate < 0 || c.Rate > 100_000:
		return fmt.Errorf("rate %v out of range (0, 100000]", c.Rate)
	case c.Duration < 0 || c.Duration > 24*time.Hour:
		return fmt.Errorf("duration %s out of range (0, 24h]", c.Duration)
	case c.MaxOps < 0 || c.Chats < 1 || c.Concurrency < 1 || c.Concurrency > 1024 || c.BurstSize < 0:
		return errors.New("max ops, chats, concurrency and burst size must be positive (concurrency at most 1024)")
	}
	return nil
}

// Stats summarise a run.
type Stats struct {
	Attempted  int64         // writes sent
	Acked      int64         // writes acknowledged (and recorded)
	Failed     int64         // writes that got an error, a 5xx or no answer (not recorded: not acknowledged)
	Throttled  int64         // 429s (retried after Retry-After)
	NotFound   int64         // 404s: the target was deleted by a concurrent write (expected with deletes in the mix)
	Elapsed    time.Duration // wall time of the run
	AckLatency []time.Duration
}

// Recorder receives acknowledged writes; it must be safe for concurrent use.
type Recorder interface{ Record(Record) error }

// MemoryRecorder keeps records in memory (tests, benchmarks, chaos runs).
type MemoryRecorder struct {
	mu   sync.Mutex
	recs []Record
}

// Record keeps r.
func (m *MemoryRecorder) Record(r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
	return nil
}

// Records returns a copy of the records kept so far, in arrival order.
func (m *MemoryRecorder) Records() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Record(nil), m.recs...)
}

// Len returns how many records were kept so far.
func (m *MemoryRecorder) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.recs)
}

// FileRecorder writes records as JSON lines.
type FileRecorder struct {
	mu  sync.Mutex
	w   *bufio.Writer
	f   *os.File
	enc *json.Encoder
}

// CreateFileRecorder creates (truncates) path for the log.
func CreateFileRecorder(path string) (*FileRecorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create load log: %w", err)
	}
	w := bufio.NewWriter(f)
	return &FileRecorder{w: w, f: f, enc: json.NewEncoder(w)}, nil
}

// Record appends r as one JSON line.
func (fr *FileRecorder) Record(r Record) error {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return fr.enc.Encode(r)
}

// Close flushes and closes the file.
func (fr *FileRecorder) Close() error {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if err := fr.w.Flush(); err != nil {
		fr.f.Close()
		return fmt.Errorf("flush load log: %w", err)
	}
	return fr.f.Close()
}

// WriteLog writes records to a new log at path, as FileRecorder does.
func WriteLog(path string, records []Record) error {
	fr, err := CreateFileRecorder(path)
	if err != nil {
		return err
	}
	for _, r := range records {
		if err := fr.Record(r); err != nil {
			fr.Close()
			return fmt.Errorf("write load log %s: %w", path, err)
		}
	}
	return fr.Close()
}

// ReadLog reads a log written by FileRecorder.
func ReadLog(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Record
	dec := json.NewDecoder(f)
	for {
		var r Record
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("read load log %s record %d: %w", path, len(out)+1, err)
		}
		out = append(out, r)
	}
}

// Run drives the API until the duration or MaxOps is reached or ctx ends, and
// returns what happened. progress, if not nil, is called about once a second.
func Run(ctx context.Context, cfg Config, rec Recorder, progress func(Stats)) (Stats, error) {
	if err := cfg.defaults(); err != nil {
		return Stats{}, fmt.Errorf("load generator: %w", err)
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	g := &generator{
		cfg:    cfg,
		rec:    rec,
		client: &http.Client{Timeout: 30 * time.Second},
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		chats:  map[string][]string{},
	}
	began := time.Now()
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var burst <-chan time.Time
	if cfg.BurstEvery > 0 && cfg.BurstSize > 0 {
		bt := time.NewTicker(cfg.BurstEvery)
		defer bt.Stop()
		burst = bt.C
	}
	report := time.NewTicker(time.Second)
	defer report.Stop()

	launch := func() bool {
		if cfg.MaxOps > 0 && g.attempted.Load() >= int64(cfg.MaxOps) {
			return false
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		g.attempted.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			g.one(ctx)
		}()
		return true
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			if !launch() {
				break loop
			}
		case <-burst:
			for range cfg.BurstSize {
				if !launch() {
					break loop
				}
			}
		case <-report.C:
			if progress != nil {
				progress(g.stats(time.Since(began)))
			}
		}
	}
	wg.Wait()
	st := g.stats(time.Since(began))
	if g.recordErr != nil {
		return st, g.recordErr
	}
	return st, nil
}

// generator holds the run's state: the live chats and their messages.
type generator struct {
	cfg    Config
	rec    Recorder
	client *http.Client

	mu        sync.Mutex
	rng       *rand.Rand
	chats     map[string][]string // chat ID → live message IDs
	chatOrder []string
	latencies []time.Duration
	recordErr error

	attempted, acked, failed, throttled, notFound atomic.Int64
}

func (g *generator) stats(elapsed time.Duration) Stats {
	g.mu.Lock()
	lat := append([]time.Duration(nil), g.latencies...)
	g.mu.Unlock()
	return Stats{
		Attempted: g.attempted.Load(), Acked: g.acked.Load(), Failed: g.failed.Load(),
		Throttled: g.throttled.Load(), NotFound: g.notFound.Load(), Elapsed: elapsed, AckLatency: lat,
	}
}

// pick chooses the next write from the mix, given the live chats.
func (g *generator) pick() (op Op, chatID, msgID string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.chatOrder) < g.cfg.Chats && (len(g.chatOrder) == 0 || g.rng.IntN(4) == 0) {
		return OpChatCreated, "", ""
	}
	chatID = g.chatOrder[g.rng.IntN(len(g.chatOrder))]
	msgs := g.chats[chatID]
	switch r := g.rng.IntN(100); {
	case r < 2:
		return OpChatDeleted, chatID, ""
	case r < 10 && len(msgs) > 0:
		return OpMessageDeleted, chatID, msgs[g.rng.IntN(len(msgs))]
	case r < 35 && len(msgs) > 0:
		return OpMessageUpdated, chatID, msgs[g.rng.IntN(len(msgs))]
	default:
		return OpMessageCreated, chatID, ""
	}
}

// one performs one write, retrying 429s after their Retry-After.
func (g *generator) one(ctx context.Context) {
	op, chatID, msgID := g.pick()
	content := ""
	if op == OpMessageCreated || op == OpMessageUpdated {
		content = fmt.Sprintf("%s %d", op, g.attempted.Load())
	}
	var method, path string
	var body []byte
	switch op {
	case OpChatCreated:
		method, path = http.MethodPost, "/chats"
	case OpChatDeleted:
		method, path = http.MethodDelete, "/chat/"+chatID
	case OpMessageCreated:
		method, path = http.MethodPost, "/chat/"+chatID
	case OpMessageUpdated:
		method, path = http.MethodPut, "/chat/"+chatID+"/message/"+msgID
	case OpMessageDeleted:
		method, path = http.MethodDelete, "/chat/"+chatID+"/message/"+msgID
	}
	if content != "" {
		body, _ = json.Marshal(map[string]string{"content": content})
	}
	for attempt := 0; ; attempt++ {
		sent := time.Now()
		status, resp, retryAfter, err := g.send(ctx, method, path, body)
		acked := time.Now()
		switch {
		case err != nil || status >= 500:
			g.failed.Add(1)
			return
		case status == http.StatusTooManyRequests && attempt < 10:
			g.throttled.Add(1)
			t := time.NewTimer(retryAfter)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				g.failed.Add(1)
				return
			}
		case status == http.StatusNotFound:
			g.notFound.Add(1)
			g.forget(chatID, msgID) // gone: deleted by a concurrent write
			return
		case status >= 300:
			g.failed.Add(1)
			return
		}
		g.acknowledged(Record{Op: op, ChatID: chatID, MessageID: msgID, Content: content, SentAt: sent, AckedAt: acked}, resp)
		return
	}
}

// acknowledged updates the live set and records the write.
func (g *generator) acknowledged(r Record, resp []byte) {
	var m struct {
		ID        string    `json:"id"`
		Version   int64     `json:"version"`
		CreatedAt time.Time `json:"createdAt"`
		UpdatedAt time.Time `json:"updatedAt"`
	}
	if len(resp) > 0 {
		_ = json.Unmarshal(resp, &m)
	}
	r.Version, r.ServerAt = m.Version, m.UpdatedAt
	if r.ServerAt.IsZero() {
		r.ServerAt = m.CreatedAt
	}
	g.mu.Lock()
	switch r.Op {
	case OpChatCreated:
		r.ChatID = m.ID
		g.chats[m.ID] = nil
		g.chatOrder = append(g.chatOrder, m.ID)
	case OpMessageCreated:
		r.MessageID = m.ID
		if _, live := g.chats[r.ChatID]; live {
			g.chats[r.ChatID] = append(g.chats[r.ChatID], m.ID)
		}
	}
	g.latencies = append(g.latencies, r.AckedAt.Sub(r.SentAt))
	g.mu.Unlock()
	switch r.Op {
	case OpChatDeleted:
		g.forget(r.ChatID, "")
	case OpMessageDeleted:
		g.forget(r.ChatID, r.MessageID)
	}
	g.acked.Add(1)
	if err := g.rec.Record(r); err != nil {
		g.mu.Lock()
		if g.recordErr == nil {
			g.recordErr = fmt.Errorf("record acknowledged write: %w", err)
		}
		g.mu.Unlock()
	}
}

// forget drops a deleted chat (msgID empty) or message from the live set.
func (g *generator) forget(chatID, msgID string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if msgID == "" {
		delete(g.chats, chatID)
		for i, id := range g.chatOrder {
			if id == chatID {
				g.chatOrder = append(g.chatOrder[:i], g.chatOrder[i+1:]...)
				break
			}
		}
		return
	}
	msgs := g.chats[chatID]
	for i, id := range msgs {
		if id == msgID {
			g.chats[chatID] = append(msgs[:i], msgs[i+1:]...)
			return
		}
	}
}

func (g *generator) send(ctx context.Context, method, path string, body []byte) (int, []byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, method, g.cfg.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, 0, err // a truncated answer is no acknowledgement
	}
	retry := time.Second
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 && s <= 60 {
		retry = time.Duration(s) * time.Second
	}
	return resp.StatusCode, data, retry, nil
}
