package change

import "regexp"

// Kind is what a change topic holds.
type Kind int

// The kinds of change records.
const (
	KindMessage Kind = iota
	KindChat
)

func (k Kind) String() string {
	if k == KindChat {
		return "chat"
	}
	return "message"
}

// Topics names a deployment's two change topics (TopicMessages and
// TopicChats by default; tests use their own). A consumer of one region
// reads them and their MirrorMaker 2 copies from the other region,
// "<source cluster>.<topic>".
type Topics struct {
	Messages, Chats string
	pattern         *regexp.Regexp
}

// NewTopics returns the topics named messages and chats.
func NewTopics(messages, chats string) Topics {
	return Topics{Messages: messages, Chats: chats, pattern: regexp.MustCompile(
		`^([A-Za-z0-9_-]+\.)?(` + regexp.QuoteMeta(messages) + `|` + regexp.QuoteMeta(chats) + `)$`)}
}

// Subscription is the regular expression that matches the two topics and
// their MirrorMaker 2 copies, and nothing else (not their dead-letter
// topics, not MirrorMaker 2's own). A Kafka subscription to it (it starts
// with ^) follows topics as they appear.
func (t Topics) Subscription() string { return t.pattern.String() }

// Parse returns what topic holds and its name without a MirrorMaker 2
// prefix, or false if topic is not one of t's.
func (t Topics) Parse(topic string) (Kind, string, bool) {
	m := t.pattern.FindStringSubmatch(topic)
	switch {
	case m == nil:
		return KindMessage, topic, false
	case m[2] == t.Chats:
		return KindChat, m[2], true
	}
	return KindMessage, m[2], true
}
